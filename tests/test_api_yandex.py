"""Yandex Search API v2 `POST /v2/image/search_by_image`, shaped as the REST docs show,
through a real server over a real bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.api_support import (
    ImageHost,
    b64,
    metric,
    photo,
    png_bytes,
    running_server,
)

IMAGE_KEYS = {"url", "format", "width", "height", "passage", "host", "pageTitle", "pageUrl"}
FORMATS = {"IMAGE_FORMAT_JPEG", "IMAGE_FORMAT_GIF", "IMAGE_FORMAT_PNG", "IMAGE_FORMAT_UNSPECIFIED"}
PAGE_SIZE = 4


@pytest.fixture(scope="module")
def api(bundle: Path, images: ImageHost):
    with running_server(
        {"default": bundle, "shop": bundle},
        yandex_page_size=PAGE_SIZE,
        url_allow_hosts=[f"127.0.0.1:{images.port}"],
    ) as srv:
        yield srv


def post(api, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(
        f"{api.url}/v2/image/search_by_image", json=body, headers=headers, timeout=30
    )


def ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"images", "page", "maxPage", "id"}
    for image in body["images"]:
        assert set(image) == IMAGE_KEYS
        assert image["format"] in FORMATS
        assert image["width"].isdigit() and image["height"].isdigit(), "int64 as JSON strings"
    assert body["page"].isdigit() and body["maxPage"].isdigit()
    return body


def grpc_error(resp: requests.Response, status: int, code: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "message", "details"} and body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def urls(body: dict) -> list[str]:
    return [i["pageUrl"] for i in body["images"]]


def test_data_search_finds_the_item(api) -> None:
    body = ok(post(api, {"data": b64(photo("coffee-photo.jpg")), "folderId": "b1gt6g8ht345"}))
    first = body["images"][0]
    assert first["pageUrl"] == "https://shop.example.com/coffee"
    assert first["host"] == "shop.example.com" and first["pageTitle"] == "Coffee"
    assert first["format"] == "IMAGE_FORMAT_JPEG"
    assert (first["width"], first["height"]) == ("600", "400")
    assert first["url"].endswith("/v1/items/coffee/image")
    assert first["passage"] == "a cup of coffee"
    assert body["page"] == "0" and len(body["images"]) == PAGE_SIZE
    # moderate family mode (the default) hides the one adult item: 17 of 18 remain
    assert body["maxPage"] == str((17 + PAGE_SIZE - 1) // PAGE_SIZE - 1)
    assert body["id"]


def test_cbir_id_pages_without_embedding_again(api) -> None:
    first = ok(
        post(api, {"data": b64(photo("rocket-photo.jpg")), "familyMode": "FAMILY_MODE_NONE"})
    )
    assert urls(first)[0] == "https://space.example.org/rocket"
    embeddings = metric(api.url, "lensbox_embeddings_total")
    pages = [first]
    for page in range(1, int(first["maxPage"]) + 1):
        body = ok(post(api, {"id": first["id"], "page": str(page), "family_mode": "NONE"}))
        assert body["page"] == str(page) and body["id"] == first["id"]
        pages.append(body)
    seen = [u for p in pages for u in urls(p)]
    assert len(seen) == len(set(seen)) == 18
    beyond = ok(post(api, {"id": first["id"], "page": int(first["maxPage"]) + 1}))
    assert beyond["images"] == []
    assert metric(api.url, "lensbox_embeddings_total") == embeddings


def test_url_search(api, images: ImageHost) -> None:
    body = ok(post(api, {"url": images.url("/img/card-04-photo.jpg")}))
    assert urls(body)[0] == "https://misc.example.net/card-04"
    grpc_error(post(api, {"url": images.url("/img/card-04-photo.jpg", host="localhost")}), 403, 7)
    grpc_error(post(api, {"url": images.url("/missing")}), 400, 9)


def test_site_and_family_mode(api) -> None:
    qid = ok(post(api, {"data": b64(photo("chelsea-cat-photo.jpg"))}))["id"]
    everything = []
    for page in range(5):
        everything += urls(
            ok(post(api, {"id": qid, "page": page, "familyMode": "FAMILY_MODE_NONE"}))
        )
    assert "https://misc.example.net/chelsea-cat" in everything
    for mode in (None, "FAMILY_MODE_MODERATE", "FAMILY_MODE_STRICT", "strict", 3):
        body = {"id": qid} if mode is None else {"id": qid, "familyMode": mode}
        safe = []
        for page in range(5):
            safe += urls(ok(post(api, {**body, "page": page})))
        assert "https://misc.example.net/chelsea-cat" not in safe
        assert len(safe) == 17
    site = ok(post(api, {"id": qid, "site": "space.example.org"}))
    assert sorted(urls(site)) == sorted(
        f"https://space.example.org/{n}" for n in ("astronaut", "hubble", "rocket")
    )
    assert site["maxPage"] == "0"
    grpc_error(post(api, {"id": qid, "familyMode": "FAMILY_MODE_SOMETIMES"}), 400, 3)


def test_folder_id_picks_a_bundle_and_falls_back_to_default(api) -> None:
    body = ok(post(api, {"id": "coffee", "folderId": "shop"}))
    assert urls(body)[0] == "https://shop.example.com/coffee"
    body = ok(post(api, {"id": "coffee", "folderId": "b1g-someone-elses-folder"}))
    assert urls(body)[0] == "https://shop.example.com/coffee"


def test_request_errors_are_grpc_statuses(api) -> None:
    grpc_error(post(api, {}), 400, 3)
    grpc_error(post(api, {"data": b64(photo("coffee-photo.jpg")), "id": "x"}), 400, 3)
    grpc_error(post(api, {"data": "@@not base64@@"}), 400, 3)
    grpc_error(post(api, {"data": b64(b"plain text, not an image")}), 400, 3)
    grpc_error(post(api, {"data": b64(png_bytes(4, 4))}), 400, 3)
    too_big = b64(b"\xff" * (3 * 1024 * 1024 + 1))
    assert "3145728" in grpc_error(post(api, {"data": too_big}), 400, 3)["message"]
    grpc_error(post(api, {"id": "no-such-cbir-id"}), 404, 5)
    grpc_error(post(api, {"id": "coffee", "page": -1}), 400, 3)
    grpc_error(post(api, {"id": "coffee", "page": "two"}), 400, 3)
    resp = requests.post(
        f"{api.url}/v2/image/search_by_image",
        data=b"{",
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    grpc_error(resp, 400, 3)
    grpc_error(requests.get(f"{api.url}/v2/image/search_by_image", timeout=10), 501, 12)
    grpc_error(requests.post(f"{api.url}/v2/image/nothing", json={}, timeout=10), 404, 5)


def test_auth_styles_and_throttling(bundle: Path) -> None:
    with running_server(
        {"default": bundle}, require_auth=True, api_keys=["secret"], rate_limit=0.5, rate_burst=3
    ) as a:
        body = {"id": "coffee"}
        grpc_error(post(a, body), 401, 16)
        grpc_error(post(a, body, {"Authorization": "Api-Key wrong"}), 403, 7)
        assert post(a, body, {"Authorization": "Api-Key secret"}).status_code == 200
        assert post(a, body, {"Authorization": "Bearer secret"}).status_code == 200
        assert post(a, body, {"Authorization": "Bearer secret"}).status_code == 200
        throttled = post(a, body, {"Authorization": "Bearer secret"})
        grpc_error(throttled, 429, 8)
        assert int(throttled.headers["Retry-After"]) >= 1
