"""Issue 16, item 8: client mistakes that used to answer 500 answer the contract's error.

(The surrogate, range and full-disk cases are in test_hardening_writes.py, the URL with
``\\r\\n`` in test_hardening_urlfetch.py, the oversized body in test_hardening_slow.py.)
A real waitress server on loopback.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.api_support import b64, png_bytes, running_server

HUAWEI = "/v1/p-1/default/image"


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, "JPEG")
    data = buf.getvalue()
    return data[: len(data) * 2 // 3]  # the header parses, the pixels do not


@pytest.fixture(scope="module")
def api(bundle: Path):
    with running_server({"default": bundle}) as srv:
        yield srv


@pytest.mark.parametrize("filters", [5, True, 1.5, "x", {"a": 1}])
def test_clarifai_filters_of_the_wrong_type(api, filters: object) -> None:
    body = {
        "searches": [
            {
                "query": {
                    "ranks": [
                        {"annotation": {"data": {"image": {"base64": b64(png_bytes(64, 64))}}}}
                    ],
                    "filters": filters,
                }
            }
        ]
    }
    resp = requests.post(f"{api.url}/v2/annotations/searches", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert isinstance(resp.json()["status"]["code"], int)


@pytest.mark.parametrize("action", ["AddImage", "SearchImageByPic"])
def test_alibaba_region_on_a_truncated_jpeg(api, action: str) -> None:
    resp = requests.post(
        f"{api.url}/",
        data={
            "Action": action,
            "InstanceName": "default",
            "ProductId": "P",
            "PicName": "t.jpg",
            "PicContent": b64(_truncated_jpeg()),
            "Region": "0,200,0,200",
        },
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["Code"] == "UnsupportedPicFormat"


def test_regions_on_a_3x4_image(api) -> None:
    tiny = b64(png_bytes(3, 4))
    region = {"x": 0, "y": 0, "width": 2, "height": 2}
    native = requests.post(
        f"{api.url}/v1/search", json={"base64": tiny, "region": region}, timeout=30
    )
    assert native.status_code in (400, 422) and native.json()["error"]["code"], native.text
    outside = requests.post(
        f"{api.url}/v1/search",
        json={"base64": b64(png_bytes(64, 64)), "region": {**region, "x": 900, "y": 900}},
        timeout=30,
    )
    assert outside.status_code == 400 and outside.json()["error"]["code"] == "bad_region"
    huawei = requests.post(
        f"{api.url}{HUAWEI}/search", json={"file": tiny, "box": "0,0,2,2"}, timeout=30
    )
    assert huawei.status_code == 400 and huawei.json()["error_code"].startswith("IS.")
    alibaba = requests.post(
        f"{api.url}/",
        data={
            "Action": "SearchImageByPic",
            "InstanceName": "default",
            "PicContent": tiny,
            "Region": "0,2,0,2",
        },
        timeout=30,
    )
    assert alibaba.status_code == 400 and alibaba.json()["Success"] is False
