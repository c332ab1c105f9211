"""Alibaba Image Search `SearchImageByPic` (RPC style on `/`), shaped as documented, through
a real server over a real bundle."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.api_support import (
    b64,
    jpeg_bytes,
    photo,
    png_bytes,
    running_server,
)

ACTION = {"Action": "SearchImageByPic", "InstanceName": "default"}
AUCTION_KEYS = {"CategoryId", "PicName", "ProductId", "Score", "SortExprValues"}


@pytest.fixture(scope="module")
def api(bundle: Path):
    with running_server({"default": bundle}) as srv:
        yield srv


def call(api, params: dict, how: str = "json") -> requests.Response:
    url = f"{api.url}/"
    if how == "json":
        return requests.post(url, json=params, timeout=30)
    if how == "form":
        return requests.post(url, data=params, timeout=30)
    return requests.get(url, params=params, timeout=30)


def ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["Success"] is True and body["Code"] == 0 and body["Msg"] == "success"
    assert set(body) == {"Auctions", "Head", "PicInfo", "RequestId", "Code", "Msg", "Success"}
    assert set(body["Head"]) == {"DocsFound", "DocsReturn", "SearchTime"}
    assert body["Head"]["DocsFound"] == len(body["Auctions"])
    for auction in body["Auctions"]:
        assert set(auction) >= AUCTION_KEYS
        assert 0.0 <= auction["Score"] <= 1.0
    info = body["PicInfo"]
    assert {"CategoryId", "Region", "MultiRegion", "AllCategories"} <= set(info)
    assert {"Name": "Other", "Id": 88888888} in info["AllCategories"]
    return body


def failed(resp: requests.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["Code"] == code and body["Success"] is False, body
    assert body["RequestId"] and body["Message"]
    assert "Traceback" not in resp.text
    return body


def names(body: dict) -> list[str]:
    return [a["PicName"] for a in body["Auctions"]]


def region(text: str) -> tuple[int, int, int, int]:
    x1, x2, y1, y2 = (int(v) for v in text.split(","))
    assert 0 <= x1 < x2 and 0 <= y1 < y2
    return x1, x2, y1, y2


def small_jpeg(name: str, width: int = 320) -> bytes:
    img = Image.open(io.BytesIO(photo(name)))
    img.thumbnail((width, width))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_json_search_finds_the_item_with_its_attributes(api) -> None:
    body = ok(call(api, {**ACTION, "PicContent": b64(photo("coffee-photo.jpg"))}))
    first = body["Auctions"][0]
    assert first["PicName"] == "coffee.jpg" and first["ProductId"] == "P-coffee"
    assert first["CategoryId"] == 3 and first["CustomContent"] == "a cup of coffee"
    assert first["IntAttr"] == 150 and first["StrAttr"] == "hot"
    assert body["Head"]["DocsReturn"] == 18 and len(body["Auctions"]) == 10
    # Crop defaults to true: the device's subject is reported, and is the first MultiRegion
    info = body["PicInfo"]
    assert info["CategoryId"] == 3, "predicted from the best hit"
    x1, x2, y1, y2 = region(info["Region"])
    assert x2 <= 640 and y2 <= 480 and (x2 - x1) * (y2 - y1) < 640 * 480
    assert info["MultiRegion"][0] == {"Region": info["Region"]}
    assert sorted(c["Id"] for c in info["AllCategories"]) == [3, 5, 7, 9, 88888888]


def test_form_get_and_multipart_upload(api) -> None:
    data = small_jpeg("rocket-photo.jpg")
    form = ok(call(api, {**ACTION, "PicContent": b64(data), "Num": "3"}, how="form"))
    assert names(form)[0] == "rocket.jpg" and len(form["Auctions"]) == 3
    get = ok(call(api, {**ACTION, "PicContent": b64(data), "Num": "3"}, how="get"))
    assert names(get) == names(form)
    files = {"PicContent": ("q.jpg", data, "image/jpeg")}
    upload = requests.post(f"{api.url}/", data={**ACTION, "Num": "3"}, files=files, timeout=30)
    assert names(ok(upload)) == names(form)


def test_crop_false_region_and_crop(api) -> None:
    data = b64(photo("card-04-photo.jpg"))
    whole = ok(call(api, {**ACTION, "PicContent": data, "Crop": "false"}))
    assert names(whole)[0] == "card-04.jpg"
    given = ok(call(api, {**ACTION, "PicContent": data, "Region": "100,560,80,400"}))
    assert given["PicInfo"]["Region"] == "100,560,80,400", "the given region prevails"
    assert names(given)[0] == "card-04.jpg"
    failed(call(api, {**ACTION, "PicContent": data, "Region": "560,100,80,400"}), 400, "BadRequest")
    failed(call(api, {**ACTION, "PicContent": data, "Region": "a,b,c,d"}), 400, "BadRequest")
    failed(call(api, {**ACTION, "PicContent": data, "Crop": "maybe"}), 400, "BadRequest")


def test_filter_category_and_distinct(api) -> None:
    data = b64(photo("card-02-photo.jpg"))
    cards = ok(call(api, {**ACTION, "PicContent": data, "Num": 20}))
    assert [a["ProductId"] for a in cards["Auctions"]].count("P-cards") == 6
    distinct = ok(call(api, {**ACTION, "PicContent": data, "Num": 20, "DistinctProductId": "true"}))
    products = [a["ProductId"] for a in distinct["Auctions"]]
    assert products.count("P-cards") == 1 and len(products) == len(set(products)) == 13
    assert names(distinct)[0] == "card-02.jpg"
    category = ok(call(api, {**ACTION, "PicContent": data, "CategoryId": 5}))
    assert sorted(names(category)) == ["astronaut.jpg", "hubble.jpg", "rocket.jpg"]
    assert category["PicInfo"]["CategoryId"] == 5, "a given category prevails"
    generic = ok(call(api, {**ACTION, "PicContent": data, "CategoryId": 88888888}))
    assert generic["Head"]["DocsReturn"] == 18, "88888888 is the generic search"
    flt = ok(
        call(
            api,
            {
                **ACTION,
                "PicContent": data,
                "Num": 20,
                "Filter": 'int_attr>=100 AND str_attr!="hot"',
            },
        )
    )
    assert names(flt) == ["rocket.jpg"]
    flt = ok(
        call(
            api,
            {
                **ACTION,
                "PicContent": data,
                "Num": 20,
                "Filter": '(int_attr = 50 OR str_attr = "hot") AND int_attr < 100',
            },
        )
    )
    assert sorted(names(flt)) == ["astronaut.jpg", "hubble.jpg"]


@pytest.mark.parametrize(
    "clause",
    [
        "int_attr >>= 3",
        'str_attr > "a"',
        "price = 1",
        "(int_attr = 1",
        "str_attr = unquoted",
        "int_attr = 1 OR",
    ],
)
def test_invalid_filter_clause(api, clause: str) -> None:
    body = failed(
        call(api, {**ACTION, "PicContent": b64(png_bytes(120, 120)), "Filter": clause}),
        400,
        "InvalidFilterClause",
    )
    assert body["Message"].startswith("The specified filtering condition is invalid.")


def test_paging_and_its_limits(api) -> None:
    data = b64(photo("astronaut-photo.jpg"))
    first = ok(call(api, {**ACTION, "PicContent": data, "Num": 4, "Start": 0, "Crop": False}))
    second = ok(call(api, {**ACTION, "PicContent": data, "Num": 4, "Start": 4, "Crop": False}))
    both = ok(call(api, {**ACTION, "PicContent": data, "Num": 8, "Crop": False}))
    assert names(first) + names(second) == names(both)
    failed(call(api, {**ACTION, "PicContent": data, "Num": 101}), 400, "OverflowMaxReturnNum")
    failed(call(api, {**ACTION, "PicContent": data, "Num": 0}), 400, "InvalidNumParameter")
    failed(call(api, {**ACTION, "PicContent": data, "Num": "ten"}), 400, "InvalidNumParameter")
    failed(
        call(api, {**ACTION, "PicContent": data, "Start": 495, "Num": 10}),
        400,
        "OverflowMaxResultNum",
    )
    failed(call(api, {**ACTION, "PicContent": data, "CategoryId": "shoes"}), 400, "InvalidCategory")


def test_picture_errors(api) -> None:
    def pic(data: bytes) -> requests.Response:
        return call(api, {**ACTION, "PicContent": b64(data)})

    failed(pic(png_bytes(99, 300)), 400, "UnsupportedPicPixels")
    failed(pic(png_bytes(4097, 120)), 400, "UnsupportedPicPixels")
    failed(pic(b"GIF89a but not really"), 400, "UnsupportedPicFormat")
    failed(pic(b"just some text"), 400, "UnsupportedPicFormat")
    failed(pic(jpeg_bytes(200, 150, orientation=6)), 400, "IncorrectOrientation")
    assert ok(pic(jpeg_bytes(200, 150, orientation=1)))["Auctions"]
    failed(pic(b"\xff" * (4 * 1024 * 1024 + 1)), 400, "BadRequest")
    failed(call(api, {**ACTION}), 400, "BadRequest")
    failed(call(api, {**ACTION, "PicContent": "!!!"}), 400, "BadRequest")


def test_action_and_instance(api) -> None:
    data = b64(png_bytes(120, 120))
    failed(call(api, {"InstanceName": "default", "PicContent": data}), 400, "BadRequest")
    # AddImage / DeleteImage are served now (tests/test_api_live.py); SearchImageByName
    # is a real Image Search action lensbox does not implement.
    failed(
        call(api, {**ACTION, "Action": "SearchImageByName", "PicContent": data}),
        500,
        "UnsupportedOperationType",
    )
    failed(
        call(api, {**ACTION, "InstanceName": "someone-else", "PicContent": data}),
        400,
        "InvalidInstance",
    )
    failed(call(api, {"Action": ACTION["Action"], "PicContent": data}), 400, "InvalidInstance")
    resp = requests.post(
        f"{api.url}/", data=b"{not json", timeout=10, headers={"Content-Type": "application/json"}
    )
    failed(resp, 400, "BadRequest")
    failed(requests.delete(f"{api.url}/", timeout=10), 400, "BadRequest")


def test_internal_errors_keep_the_shape(api) -> None:
    service = api.app.extensions["lensbox"]["service"]

    def boom(query):
        raise KeyError("internals")

    original, service.run = service.run, boom
    try:
        body = failed(
            call(api, {**ACTION, "PicContent": b64(png_bytes(120, 120))}), 500, "UnknownException"
        )
        assert "internals" not in body["Message"]
    finally:
        service.run = original


def test_a_signature_is_verified_even_for_an_api_key(bundle: Path) -> None:
    with running_server({"default": bundle}, require_auth=True, api_keys=["LTAI-key"]) as a:
        params = {**ACTION, "PicContent": b64(small_jpeg("coffee-photo.jpg", 200))}
        forged = {
            **params,
            "AccessKeyId": "LTAI-key",
            "Signature": "forged",
            "SignatureMethod": "HMAC-SHA1",
        }  # this key has no secret in server.access_keys: nothing to verify against
        failed(call(a, forged, how="form"), 404, "InvalidAccessKeyId.NotFound")
        failed(call(a, forged), 404, "InvalidAccessKeyId.NotFound")


def test_access_key_and_flow_control(bundle: Path) -> None:
    with running_server(
        {"default": bundle}, require_auth=True, api_keys=["LTAI-key"], rate_limit=0.5, rate_burst=2
    ) as a:
        params = {**ACTION, "PicContent": b64(small_jpeg("coffee-photo.jpg", 200))}
        failed(call(a, params), 403, "NoPermission")
        failed(call(a, {**params, "AccessKeyId": "LTAI-wrong"}), 403, "NoPermission")
        signed = {**params, "AccessKeyId": "LTAI-key"}  # unsigned: an API key as the id
        assert names(ok(call(a, signed, how="form")))[0] == "coffee.jpg"
        assert names(ok(call(a, signed)))[0] == "coffee.jpg"
        denied = failed(call(a, signed), 403, "DeniedRequest")
        assert "flow control" in denied["Message"]
