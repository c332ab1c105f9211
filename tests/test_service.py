"""A large photo is decoded at reduced scale, yet the daemon answers as for the full photo.

SearchService decodes query photos with decode_reduced: every size, region, subject box and
verified corner in the answer must still be in the photo's own (full-resolution) pixels.
"""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

from tests.api_support import photo, running_server

SCALE = 5  # 640x480 -> 3200x2400: decoded at 1/2 (1600x1200)


def _upscaled(name: str) -> bytes:
    img = Image.open(io.BytesIO(photo(name))).convert("RGB")
    big = img.resize((img.width * SCALE, img.height * SCALE), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def api(bundle):
    with running_server({"default": bundle}) as srv:
        yield srv


def _search(api, data: bytes, **params) -> dict:
    resp = requests.post(
        f"{api.url}/v1/search",
        data=data,
        params={"top_k": 5, **params},
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def _box(b: dict) -> tuple[int, int, int, int]:
    return b["x"], b["y"], b["width"], b["height"]


def _near(big: tuple, small: tuple, tol: float) -> bool:
    return all(abs(a - SCALE * b) <= tol for a, b in zip(big, small))


@pytest.mark.parametrize("name", ["coffee-photo.jpg", "card-04-photo.jpg"])
def test_a_large_photo_finds_the_same_item_in_full_resolution_pixels(api, name) -> None:
    small = _search(api, photo(name))
    big = _search(api, _upscaled(name))
    assert big["hits"][0]["id"] == small["hits"][0]["id"]
    assert big["query"]["image"] == {"width": 640 * SCALE, "height": 480 * SCALE}
    # Subject boxes come from a 1/2-scale decode, reported in the photo's own pixels.
    s_sub, b_sub = small["query"]["subjects"][0], big["query"]["subjects"][0]
    assert _near(_box(b_sub), _box(s_sub), tol=0.04 * 640 * SCALE), (b_sub, s_sub)
    s_hit, b_hit = small["hits"][0], big["hits"][0]
    if s_hit["region"] and b_hit["region"]:  # verified: corners in query pixels
        for b_pt, s_pt in zip(b_hit["region"], s_hit["region"]):
            assert _near(tuple(b_pt), tuple(s_pt), tol=0.04 * 640 * SCALE), (b_pt, s_pt)


def test_a_region_in_full_resolution_pixels_crops_the_same_place(api) -> None:
    region = (100, 80, 440, 320)
    small = _search(api, photo("coffee-photo.jpg"), region=",".join(map(str, region)))
    big_region = ",".join(str(v * SCALE) for v in region)
    big = _search(api, _upscaled("coffee-photo.jpg"), region=big_region)
    assert _box(big["query"]["region"]) == tuple(v * SCALE for v in region)
    assert big["hits"][0]["id"] == small["hits"][0]["id"] == "coffee"
    assert abs(big["hits"][0]["score"] - small["hits"][0]["score"]) < 0.05
    for b_sub, s_sub in zip(big["query"]["subjects"][:1], small["query"]["subjects"][:1]):
        assert _near(_box(b_sub), _box(s_sub), tol=0.04 * 640 * SCALE), (b_sub, s_sub)


def test_a_subject_crop_on_a_large_photo(api) -> None:
    big = _search(api, _upscaled("coffee-photo.jpg"), crop="true")
    assert big["query"]["region"] == big["query"]["subjects"][0]
    assert big["hits"][0]["id"] == "coffee"
