"""Alibaba's official Python SDK (alibabacloud-imagesearch20201214 over alibabacloud-tea-openapi)
against a live `lensbox serve`: only the endpoint is changed. The SDK signs with its default
(ACS3-HMAC-SHA256) and, in one test, with the RPC signature (``signature_algorithm='v2'``);
the box verifies both against its configured AccessKey secret."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import requests

from tests.sdk_support import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    expect,
    query_photo,
    record,
    serve_box,
)

imagesearch = pytest.importorskip("alibabacloud_imagesearch20201214", reason="the clients extra")
from alibabacloud_imagesearch20201214 import models as m  # noqa: E402
from alibabacloud_imagesearch20201214.client import Client  # noqa: E402
from alibabacloud_tea_openapi import models as open_api  # noqa: E402
from alibabacloud_tea_openapi.exceptions import ClientException  # noqa: E402

PKG = "alibabacloud-imagesearch20201214"
expect(
    "Alibaba",
    PKG,
    "SearchImageByPic (ACS3-HMAC-SHA256, keys required)",
    "SearchImageByPic paging (Start, Num)",
    "SearchImageByPic Filter, CategoryId, ScoreThreshold",
    "SearchImageByPic with signature_algorithm='v2' (RPC HMAC-SHA1)",
    "AddImage + DeleteImage",
    "documented error code (OverflowMaxReturnNum, InvalidFilterClause)",
    "forged / stale / replayed / unknown-key signature refused",
)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, bundle: Path):
    with serve_box(tmp_path_factory.mktemp("sdk-alibaba"), bundle) as b:
        yield b


def client(box, secret: str = ACCESS_KEY_SECRET, key_id: str = ACCESS_KEY_ID, **extra) -> Client:
    config = open_api.Config(
        access_key_id=key_id,
        access_key_secret=secret,
        endpoint=box.host,
        protocol="http",
        region_id="cn-shanghai",
        **extra,
    )
    return Client(config)


def search(cli: Client, **fields) -> m.SearchImageByPicResponseBody:
    request = m.SearchImageByPicRequest(
        instance_name="default", pic_content=base64.b64encode(query_photo()).decode(), **fields
    )
    resp = cli.search_image_by_pic(request)
    assert resp.status_code == 200
    assert resp.body.success is True and resp.body.code == 0
    return resp.body


def test_search_with_default_signing(box) -> None:
    body = search(client(box))
    assert body.auctions[0].product_id == "P-coffee"
    assert body.auctions[0].pic_name == "coffee.jpg"
    assert 0.0 < body.auctions[0].score <= 1.0
    assert body.head.docs_found == len(body.auctions) == 10
    assert body.pic_info.region and body.request_id
    record("Alibaba", PKG, "SearchImageByPic (ACS3-HMAC-SHA256, keys required)")


def test_paging(box) -> None:
    cli = client(box)
    first = search(cli, start=0, num=4)
    second = search(cli, start=4, num=4)
    assert len(first.auctions) == len(second.auctions) == 4
    names = [a.pic_name for a in first.auctions + second.auctions]
    assert len(set(names)) == 8
    everything = search(cli, start=0, num=8)
    assert [a.pic_name for a in everything.auctions] == names
    record("Alibaba", PKG, "SearchImageByPic paging (Start, Num)")


def test_filter_category_and_threshold(box) -> None:
    cli = client(box)
    hot = search(cli, filter='str_attr="hot"')
    assert [a.pic_name for a in hot.auctions] == ["coffee.jpg"]
    space = search(cli, category_id=5, num=20)
    assert {a.pic_name for a in space.auctions} == {"astronaut.jpg", "rocket.jpg", "hubble.jpg"}
    everything = search(cli, num=20, crop=False)
    scores = [a.score for a in everything.auctions]
    cut = (scores[0] + scores[1]) / 2  # between the best and the second
    kept = search(cli, num=20, crop=False, score_threshold=cut)
    assert [a.pic_name for a in kept.auctions] == [everything.auctions[0].pic_name]
    assert kept.head.docs_found == 1
    record("Alibaba", PKG, "SearchImageByPic Filter, CategoryId, ScoreThreshold")


def test_rpc_signature_v2(box) -> None:
    body = search(client(box, signature_algorithm="v2"), num=3)
    assert body.auctions[0].product_id == "P-coffee" and len(body.auctions) == 3
    record("Alibaba", PKG, "SearchImageByPic with signature_algorithm='v2' (RPC HMAC-SHA1)")


def test_add_then_delete(box) -> None:
    cli = client(box)
    photo = query_photo("card-04-photo.jpg")
    added = cli.add_image(
        m.AddImageRequest(
            instance_name="default",
            product_id="P-new",
            pic_name="card-photo.jpg",
            pic_content=base64.b64encode(photo).decode(),
            category_id=11,
            str_attr="added",
            int_attr=7,
            custom_content="added by the SDK",
        )
    )
    assert added.body.success is True and added.body.pic_info.category_id == 11
    found = search(cli, filter='str_attr="added"')
    assert [(a.product_id, a.pic_name) for a in found.auctions] == [("P-new", "card-photo.jpg")]
    assert found.auctions[0].custom_content == "added by the SDK"
    gone = cli.delete_image(m.DeleteImageRequest(instance_name="default", product_id="P-new"))
    assert gone.body.success is True and gone.body.data.pic_names == ["card-photo.jpg"]
    assert search(cli, filter='str_attr="added"').auctions == []
    record("Alibaba", PKG, "AddImage + DeleteImage")


def test_documented_error_codes(box) -> None:
    cli = client(box)
    with pytest.raises(ClientException) as err:
        search(cli, num=101)
    assert err.value.code == "OverflowMaxReturnNum" and err.value.status_code == 400
    with pytest.raises(ClientException) as err:
        search(cli, filter="int_attr >>= 3")
    assert err.value.code == "InvalidFilterClause"
    record("Alibaba", PKG, "documented error code (OverflowMaxReturnNum, InvalidFilterClause)")


def test_bad_signatures_are_refused_and_change_nothing(box) -> None:
    with pytest.raises(ClientException) as err:
        search(client(box, secret="not-the-secret"))
    assert err.value.code == "SignatureDoesNotMatch" and err.value.status_code == 400
    with pytest.raises(ClientException) as err:
        search(client(box, key_id="LTAI-unknown"))
    assert err.value.code == "InvalidAccessKeyId.NotFound" and err.value.status_code == 404
    with pytest.raises(ClientException) as err:
        search(client(box, secret="not-the-secret", signature_algorithm="v2"))
    assert err.value.code == "SignatureDoesNotMatch"

    # a forged AddImage (wrong secret) stores nothing
    with pytest.raises(ClientException):
        client(box, secret="forged").add_image(
            m.AddImageRequest(
                instance_name="default",
                product_id="P-forged",
                pic_name="x.jpg",
                pic_content=base64.b64encode(query_photo()).decode(),
                str_attr="forged",
            )
        )
    assert search(client(box), filter='str_attr="forged"').auctions == []

    # stale and replayed: a correctly signed request sent late, and sent twice
    from alibabacloud_tea_openapi.utils import Utils

    stale = _signed_raw(box, "2020-01-01T00:00:00Z", "nonce-stale")
    assert stale.status_code == 400 and stale.json()["Code"] == "InvalidTimeStamp.Expired"
    now = Utils.get_timestamp()
    first = _signed_raw(box, now, "nonce-once")
    assert first.status_code == 200, first.text
    again = _signed_raw(box, now, "nonce-once")
    assert again.status_code == 400 and again.json()["Code"] == "SignatureNonceUsed"
    # unsigned: no credential at all
    bare = requests.post(f"{box.url}/", data={"Action": "SearchImageByPic"}, timeout=30)
    assert bare.status_code == 403 and bare.json()["Code"] == "NoPermission"
    record("Alibaba", PKG, "forged / stale / replayed / unknown-key signature refused")


def _signed_raw(box, date: str, nonce: str) -> requests.Response:
    """A SearchImageByPic signed exactly as the SDK signs (its own Utils.get_authorization),
    with a chosen date and nonce, sent with requests."""
    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.request import DaraRequest

    form = {
        "InstanceName": "default",
        "Num": "2",
        "PicContent": base64.b64encode(query_photo()).decode(),
    }
    body = Utils.to_form(form).encode()
    digest = hashlib.sha256(body).hexdigest()
    req = DaraRequest()
    req.method = "POST"
    req.pathname = "/"
    req.query = {}
    req.headers = {
        "host": box.host,
        "x-acs-version": "2020-12-14",
        "x-acs-action": "SearchImageByPic",
        "x-acs-date": date,
        "x-acs-signature-nonce": nonce,
        "accept": "application/json",
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-content-sha256": digest,
    }
    req.headers["Authorization"] = Utils.get_authorization(
        req, "ACS3-HMAC-SHA256", digest, ACCESS_KEY_ID, ACCESS_KEY_SECRET
    )
    return requests.post(f"{box.url}/", data=body, headers=req.headers, timeout=30)
