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
    "SearchImageByPicAdvance + AddImageAdvance (AuthorizeFileUpload, OSS upload to the box)",
    "bad uploads refused with OSS's codes (content-type, signature, size)",
    "Config.open_platform_endpoint for the *Advance calls",
)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, bundle: Path):
    with serve_box(tmp_path_factory.mktemp("sdk-alibaba"), bundle, https=True) as b:
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


def advance_client(box) -> Client:
    """The box as both endpoints the SDK calls (and its certificate for the HTTPS upload).

    alibabacloud-tea-openapi never copies ``Config.open_platform_endpoint`` into the client
    (its ``Client.__init__`` has no such line), so the attribute is set on the client too;
    test_open_platform_endpoint_is_ignored_by_the_sdk proves the need."""
    cli = client(box, open_platform_endpoint=box.host, ca=str(box.cert))
    cli._open_platform_endpoint = box.host
    return cli


def test_advance_calls_upload_to_the_box(box) -> None:
    import io

    from darabonba.runtime import RuntimeOptions

    cli = advance_client(box)
    found = cli.search_image_by_pic_advance(
        m.SearchImageByPicAdvanceRequest(
            instance_name="default", pic_content_object=io.BytesIO(query_photo()), num=3
        ),
        RuntimeOptions(),
    )
    assert found.body.success is True
    assert found.body.auctions[0].pic_name == "coffee.jpg"
    added = cli.add_image_advance(
        m.AddImageAdvanceRequest(
            instance_name="default",
            product_id="P-adv",
            pic_name="adv.jpg",
            pic_content_object=io.BytesIO(query_photo("card-04-photo.jpg")),
            str_attr="advance",
        ),
        RuntimeOptions(),
    )
    assert added.body.success is True
    hits = search(cli, filter='str_attr="advance"')
    assert [(a.product_id, a.pic_name) for a in hits.auctions] == [("P-adv", "adv.jpg")]
    cli.delete_image(m.DeleteImageRequest(instance_name="default", product_id="P-adv"))
    record(
        "Alibaba",
        PKG,
        "SearchImageByPicAdvance + AddImageAdvance (AuthorizeFileUpload, OSS upload to the box)",
        "works, with the box's certificate as `Config.ca` and `client._open_platform_endpoint` "
        "set (the SDK drops the Config field: see the row below)",
    )


def test_bad_uploads_get_oss_errors(box) -> None:
    from alibabacloud_tea_openapi import utils_models
    from darabonba.runtime import RuntimeOptions

    cli = advance_client(box)
    grant = cli.call_api(
        utils_models.Params(
            action="AuthorizeFileUpload",
            version="2019-12-19",
            protocol="HTTP",
            pathname="/",
            method="GET",
            auth_type="AK",
            style="RPC",
            req_body_type="formData",
            body_type="json",
        ),
        utils_models.OpenApiRequest(query={"Product": "ImageSearch", "RegionId": "cn-shanghai"}),
        RuntimeOptions(),
    )["body"]
    assert grant["Bucket"] + "." + grant["Endpoint"] == box.https
    url = f"https://{box.https}/"
    form = {
        "OSSAccessKeyId": grant["AccessKeyId"],
        "policy": grant["EncodedPolicy"],
        "Signature": grant["Signature"],
        "key": grant["ObjectKey"],
        "success_action_status": "201",
    }
    verify = str(box.cert)

    def code(resp: requests.Response) -> str:
        return resp.text.split("<Code>")[1].split("</Code>")[0]

    wrong_type = requests.post(url, data=form, verify=verify, timeout=30)  # url-encoded
    assert wrong_type.status_code == 400 and code(wrong_type) == "InvalidArgument"
    forged = requests.post(
        url,
        data={**form, "Signature": "Zm9yZ2Vk"},
        files={"file": ("x.jpg", query_photo())},
        verify=verify,
        timeout=30,
    )
    assert forged.status_code == 403 and code(forged) == "SignatureDoesNotMatch"
    big = requests.post(
        url,
        data=form,
        files={"file": ("x.jpg", b"\0" * (4 * 1024 * 1024 + 1))},
        verify=verify,
        timeout=30,
    )
    assert big.status_code == 400 and code(big) == "EntityTooLarge"
    other_key = requests.post(
        url,
        data={**form, "key": "lensbox-upload/other"},
        files={"file": ("x.jpg", query_photo())},
        verify=verify,
        timeout=30,
    )
    assert other_key.status_code == 403 and code(other_key) == "AccessDenied"
    # nothing was stored under the granted key: naming it as PicContent finds no upload
    never = f"http://{grant['Bucket']}.{grant['Endpoint']}/{grant['ObjectKey']}"
    with pytest.raises(ClientException) as err:
        cli.search_image_by_pic(
            m.SearchImageByPicRequest(instance_name="default", pic_content=never)
        )
    assert err.value.code == "BadRequest"
    ok = requests.post(
        url, data=form, files={"file": ("x.jpg", query_photo())}, verify=verify, timeout=30
    )
    assert ok.status_code == 201 and "<PostResponse>" in ok.text
    record("Alibaba", PKG, "bad uploads refused with OSS's codes (content-type, signature, size)")


def test_open_platform_endpoint_is_ignored_by_the_sdk(box) -> None:
    """The SDK reads ``self._open_platform_endpoint`` (None unless set on the client) and
    falls back to openplatform.aliyuncs.com: the Config field is dropped."""
    cli = client(box, open_platform_endpoint=box.host)
    assert cli._open_platform_endpoint is None
    record(
        "Alibaba",
        PKG,
        "Config.open_platform_endpoint for the *Advance calls",
        "cannot unchanged: alibabacloud-tea-openapi's `Client.__init__` never copies "
        "`config.open_platform_endpoint` to `self._open_platform_endpoint`, so "
        "AuthorizeFileUpload goes to openplatform.aliyuncs.com; set "
        "`client._open_platform_endpoint` (or resolve that name to the box), then the "
        "*Advance calls work (rows above)",
    )
