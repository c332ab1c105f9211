"""Huawei Cloud ImageSearch `POST /v1/{project_id}/{instance_name}/image/search`, shaped as
documented, through a real server over a real bundle."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.api_support import b64, metric, photo, png_bytes, running_server

PROJECT = "0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def api(bundle: Path):
    with running_server({"default": bundle, "products": bundle}) as srv:
        yield srv


def post(api, body, instance: str = "products", headers: dict | None = None) -> requests.Response:
    url = f"{api.url}/v1/{PROJECT}/{instance}/image/search"
    return requests.post(url, json=body, headers=headers, timeout=30)


def ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"count", "result"}
    for item in body["result"]:
        assert set(item) == {"path", "sim", "tags"} and 0 <= item["sim"] <= 1
    return body


def failed(resp: requests.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error_code", "error_msg"} and body["error_code"] == code, body
    return body


def paths(body: dict) -> list[str]:
    return [r["path"] for r in body["result"]]


def encoded(data: bytes, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def test_file_search_finds_the_item_with_tags(api) -> None:
    resp = post(api, {"file": b64(photo("coffee-photo.jpg")), "limit": 5})
    body = ok(resp)
    assert body["result"][0] == {
        "path": "coffee",
        "sim": body["result"][0]["sim"],
        "tags": {"kind": "drink", "color": "brown"},
    }
    assert body["count"] == 18 and len(body["result"]) == 5
    assert resp.headers["X-Lensbox-Query-Id"]


def test_bmp_and_png_are_accepted_gif_is_not(api) -> None:
    cat = photo("chelsea-cat-photo.jpg")
    assert paths(ok(post(api, {"file": b64(encoded(cat, "BMP"))})))[0] == "chelsea-cat"
    assert paths(ok(post(api, {"file": b64(encoded(cat, "PNG"))})))[0] == "chelsea-cat"
    failed(post(api, {"file": b64(encoded(cat, "GIF"))}), 400, "IS.0002")


def test_path_is_a_library_id_or_a_query_id(api) -> None:
    first = post(api, {"file": b64(photo("rocket-photo.jpg"))})
    query_id = first.headers["X-Lensbox-Query-Id"]
    embeddings = metric(api.url, "lensbox_embeddings_total")
    again = ok(post(api, {"path": query_id}))
    assert again == ok(first)
    assert metric(api.url, "lensbox_embeddings_total") == embeddings
    item = ok(post(api, {"path": "rocket", "limit": 1}))
    assert item["result"][0]["path"] == "rocket" and item["result"][0]["sim"] > 0.99
    both = ok(post(api, {"file": b64(photo("coffee-photo.jpg")), "path": "rocket"}))
    assert paths(both)[0] == "coffee", "file wins when both are given"
    failed(post(api, {"path": "not-in-the-library"}), 400, "IS.0001")


def test_tags_limit_offset(api) -> None:
    spaced = ok(post(api, {"path": "coffee", "tags": {"kind": "space"}}))
    assert sorted(paths(spaced)) == ["astronaut", "hubble", "rocket"] and spaced["count"] == 3
    assert all(r["tags"] == {"kind": "space"} for r in spaced["result"])
    assert (
        ok(post(api, {"path": "coffee", "tags": {"kind": "drink", "color": "red"}}))["count"] == 0
    )
    whole = paths(ok(post(api, {"path": "coffee", "limit": 6})))
    head = paths(ok(post(api, {"path": "coffee", "limit": 3, "offset": 0})))
    tail = paths(ok(post(api, {"path": "coffee", "limit": 3, "offset": 3})))
    assert head + tail == whole
    too_many = {f"k{i}": "v" for i in range(11)}
    failed(post(api, {"path": "coffee", "tags": too_many}), 400, "IS.0002")
    failed(post(api, {"path": "coffee", "tags": ["kind"]}), 400, "IS.0002")
    failed(post(api, {"path": "coffee", "limit": 0}), 400, "IS.0002")
    failed(post(api, {"path": "coffee", "limit": 101}), 400, "IS.0002")
    failed(post(api, {"path": "coffee", "offset": -1}), 400, "IS.0002")
    failed(post(api, {"path": "coffee", "limit": "ten"}), 400, "IS.0002")


def test_crop_box_and_subject(api) -> None:
    data = b64(photo("card-02-photo.jpg"))
    boxed = ok(
        post(
            api,
            {"file": data, "is_crop": True, "box": {"x": 80, "y": 50, "width": 520, "height": 370}},
        )
    )
    assert paths(boxed)[0] == "card-02"
    subject = ok(post(api, {"file": data, "is_crop": True}))
    assert paths(subject)[0] == "card-02"
    ignored = ok(post(api, {"file": data, "box": {"x": 0, "y": 0, "width": 5, "height": 5}}))
    assert paths(ignored)[0] == "card-02", "without is_crop the box is not used"
    failed(
        post(
            api,
            {"file": data, "is_crop": True, "box": {"x": 9000, "y": 0, "width": 50, "height": 50}},
        ),
        400,
        "IS.0002",
    )
    failed(post(api, {"file": data, "is_crop": True, "box": {"x": 1}}), 400, "IS.0002")


def test_documented_errors(api) -> None:
    body = failed(post(api, {"limit": 10, "offset": 0}), 400, "IS.0003")
    assert body["error_msg"] == "Arguments of path can not be null."
    failed(post(api, {"file": b64(png_bytes(120, 99))}), 400, "IS.0002")
    failed(post(api, {"file": b64(png_bytes(2049, 120))}), 400, "IS.0002")
    failed(post(api, {"file": b64(b"definitely not an image")}), 400, "IS.0002")
    failed(post(api, {"file": "not base64 at all!"}), 400, "IS.0002")
    failed(post(api, {"file": b64(png_bytes(120, 120))}, instance="nope"), 400, "IS.0007")
    failed(
        requests.post(
            f"{api.url}/v1/{PROJECT}/products/image/search",
            data=b"{oops",
            headers={"Content-Type": "application/json"},
            timeout=10,
        ),
        400,
        "IS.0008",
    )
    failed(post(api, ["file"]), 400, "IS.0008")
    failed(
        requests.get(f"{api.url}/v1/{PROJECT}/products/image/search", timeout=10), 400, "IS.0010"
    )
    failed(post(api, {"file": b64(b"\0" * (10 * 1024 * 1024 + 1))}), 400, "IS.0006")
    huge = failed(post(api, {"file": "A" * (15 * 1024 * 1024)}), 400, "IS.0006")
    assert "request body is over the limit" in huge["error_msg"], "refused before parsing"


def test_token_and_throttling(bundle: Path) -> None:
    with running_server(
        {"default": bundle}, require_auth=True, api_keys=["tok"], rate_limit=0.5, rate_burst=2
    ) as a:
        body = {"path": "coffee", "limit": 1}
        failed(post(a, body, "default"), 400, "IS.0005")
        failed(post(a, body, "default", {"X-Auth-Token": "expired"}), 400, "IS.0004")
        assert (
            ok(post(a, body, "default", {"X-Auth-Token": "tok"}))["result"][0]["path"] == "coffee"
        )
        assert ok(post(a, body, "default", {"X-Auth-Token": "tok"}))
        failed(post(a, body, "default", {"X-Auth-Token": "tok"}), 429, "APIGW.0308")
