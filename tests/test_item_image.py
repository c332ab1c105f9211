"""Item pictures: thumbnails built into the bundle, ``GET /v1/items/<id>/image``, and
``GET /v1/items`` (the catalog listing the web page browses)."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from pathlib import Path

import imagehash
import numpy as np
import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from PIL import Image

from lensbox.device.api.native import OPENAPI_PATH
from lensbox.device.bundle.format import THUMBNAILS
from lensbox.device.bundle.thumbnails import MAX_BYTES, MAX_SIDE, make_thumbnail
from tests.api_support import (
    CATALOG,
    QUERIES,
    b64,
    jpeg_bytes,
    photo,
    png_bytes,
    running_server,
)
from tests.test_api_live import _deployed, live_server


def thumb_rows(bundle: Path) -> dict[str, tuple[str, bytes]]:
    conn = sqlite3.connect(bundle / THUMBNAILS)
    try:
        return {i: (s, bytes(j)) for i, s, j in conn.execute("SELECT id, sha256, jpeg FROM thumbs")}
    finally:
        conn.close()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# -- making thumbnails ------------------------------------------------------------------------
def test_thumbnail_is_small_upright_and_plain_jpeg() -> None:
    # EXIF orientation 6 (rotate 90°): a 300x200 photo is shown 200x300
    thumb = decode(make_thumbnail(jpeg_bytes(300, 200, orientation=6)))
    assert thumb.format == "JPEG" and thumb.size == (107, 160)
    assert "exif" not in thumb.info
    # alpha is flattened onto white, not black
    rgba = Image.new("RGBA", (400, 400), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    flat = decode(make_thumbnail(buf.getvalue())).convert("RGB")
    assert min(flat.getpixel((80, 80))) > 240
    # a small photo is not enlarged
    assert decode(make_thumbnail(png_bytes(40, 30))).size == (40, 30)


def test_even_pure_noise_fits_the_byte_budget() -> None:
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 255, (1500, 2000, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "PNG")
    data = make_thumbnail(buf.getvalue())
    assert len(data) <= MAX_BYTES and max(decode(data).size) <= MAX_SIDE


def test_unreadable_photo_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot read"):
        make_thumbnail(b"\xff\xd8\xff not really a jpeg")


def test_build_stores_one_thumbnail_per_item(bundle: Path) -> None:
    rows = thumb_rows(bundle)
    assert len(rows) == 18
    for item_id, (sha, jpeg) in rows.items():
        source = (CATALOG / f"{item_id}.jpg").read_bytes()
        assert sha == hashlib.sha256(source).hexdigest()
        assert len(jpeg) <= MAX_BYTES and max(decode(jpeg).size) == MAX_SIDE


def test_build_without_thumbnails(tmp_path: Path) -> None:
    from lensbox.index_builder.build import BuildSettings, build_bundle

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee.jpg", "rocket.jpg"):
        (folder / name).write_bytes((CATALOG / name).read_bytes())
    settings = BuildSettings(cache_dir=None, workers=1, thumbnails=False)
    build_bundle(folder, tmp_path / "bare.lbx", settings, progress=False)
    assert not (tmp_path / "bare.lbx" / THUMBNAILS).exists()
    with running_server({"default": tmp_path / "bare.lbx"}) as api:
        resp = requests.get(f"{api.url}/v1/items/coffee/image", timeout=10)
    assert resp.status_code == 404
    assert "has no thumbnails" in resp.json()["error"]["message"]


# -- serving them ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(bundle: Path):
    with running_server({"default": bundle}) as server:
        yield server


def test_image_route_serves_the_items_own_picture(api) -> None:
    resp = requests.get(f"{api.url}/v1/items/coffee/image", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/jpeg"
    got = imagehash.phash(decode(resp.content).convert("RGB"))
    distances = {
        p.stem: got - imagehash.phash(Image.open(p).convert("RGB")) for p in CATALOG.glob("*.jpg")
    }
    assert min(distances, key=distances.get) == "coffee" and distances["coffee"] <= 6
    again = requests.get(
        f"{api.url}/v1/items/coffee/image",
        headers={"If-None-Match": resp.headers["ETag"]},
        timeout=10,
    )
    assert again.status_code == 304 and again.content == b""


def test_image_route_errors_are_native_json(api) -> None:
    missing = requests.get(f"{api.url}/v1/items/nope/image", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found" and "nope" in missing.text
    other = requests.get(f"{api.url}/v1/items/coffee/image?instance=elsewhere", timeout=10)
    assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_instance"
    # the item JSON is unchanged next to it
    assert requests.get(f"{api.url}/v1/items/coffee", timeout=10).json()["id"] == "coffee"


def test_image_route_needs_the_key_like_the_rest(bundle: Path) -> None:
    # interpreters=2: engines of their own, as the module's `api` server is still up
    with running_server(
        {"default": bundle}, interpreters=2, require_auth=True, api_keys=["k1"]
    ) as server:
        url = f"{server.url}/v1/items/coffee/image"
        assert requests.get(url, timeout=10).status_code == 401
        ok = requests.get(url, headers={"Authorization": "Bearer k1"}, timeout=10)
        assert ok.status_code == 200 and ok.content[:2] == b"\xff\xd8"


def test_provider_answers_link_to_the_picture(api) -> None:
    """Yandex's ``url`` (and Clarifai's image url) point at the picture, not at JSON."""
    body = requests.post(
        f"{api.url}/v2/image/search_by_image",
        json={"data": b64(photo("coffee-photo.jpg"))},
        timeout=30,
    ).json()
    first = body["images"][0]
    assert first["url"].endswith("/v1/items/coffee/image")
    assert requests.get(first["url"], timeout=10).headers["Content-Type"] == "image/jpeg"


# -- listing the catalog -----------------------------------------------------------------------
def test_list_items_pages_and_filters(api) -> None:
    spec = yaml.safe_load(OPENAPI_PATH.read_text())
    assert {"/v1/items", "/v1/items/{id}/image"} <= set(spec["paths"])
    schema = {"$ref": "#/components/schemas/ItemList", "components": spec["components"]}

    def page(**params) -> dict:
        resp = requests.get(f"{api.url}/v1/items", params=params, timeout=10)
        assert resp.status_code == 200, resp.text
        Draft202012Validator(schema).validate(resp.json())
        return resp.json()

    first = page(limit=5)
    assert first["total"] == 18 and len(first["items"]) == 5 and first["offset"] == 0
    seen = [i["id"] for i in first["items"]]
    for offset in (5, 10, 15):
        seen += [i["id"] for i in page(limit=5, offset=offset)["items"]]
    assert sorted(seen) == sorted(p.stem for p in CATALOG.glob("*.jpg"))
    assert page(offset=100)["items"] == []
    cards = page(q="CARD")
    assert cards["total"] == 6 and {i["id"] for i in cards["items"]} == {
        f"card-0{i}" for i in range(6)
    }
    by_title = page(q="chelsea cat")  # the metadata bundle's titles: "Chelsea Cat"
    assert [i["id"] for i in by_title["items"]] == ["chelsea-cat"]
    assert by_title["items"][0]["metadata"]["tags"] == {"kind": "animal"}
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        resp = requests.get(f"{api.url}/v1/items", params=bad, timeout=10)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_param", bad


# -- live changes ------------------------------------------------------------------------------
def test_live_changes_never_show_a_stale_picture(tmp_path: Path, sample_bundle: Path) -> None:
    with live_server(_deployed(tmp_path, sample_bundle)) as live:
        url = live.url
        image = f"{url}/v1/items/coffee/image"
        before = requests.get(image, timeout=10)
        assert before.status_code == 200
        # a field change keeps the photo, so the picture stays
        patched = requests.patch(
            f"{url}/v1/items/coffee", json={"fields": {"title": "Espresso"}}, timeout=30
        )
        assert patched.status_code == 200, patched.text
        assert requests.get(image, timeout=10).content == before.content
        # a new photo for the item: the bundle's thumbnail shows the old one, so none
        put = requests.put(
            f"{url}/v1/items/coffee",
            data=(QUERIES / "rocket-photo.jpg").read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        )
        assert put.status_code == 200, put.text
        stale = requests.get(image, timeout=10)
        assert stale.status_code == 404 and "new photo" in stale.json()["error"]["message"]
        # an id ending in /image still reaches its item JSON
        added = requests.put(
            f"{url}/v1/items/shelf/image",
            data=(CATALOG / "clock.jpg").read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        )
        assert added.status_code == 201, added.text
        assert requests.get(f"{url}/v1/items/shelf/image", timeout=10).json()["id"] == (
            "shelf/image"
        )
        # compaction writes a new bundle generation: the pictures come along
        assert live.manager["default"].compact() is not None
        assert requests.get(f"{url}/v1/items/rocket/image", timeout=10).status_code == 200
        assert requests.get(image, timeout=10).status_code == 404  # still stale, still refused
        assert (Path(live.manager["default"].base_path) / THUMBNAILS).is_file()
