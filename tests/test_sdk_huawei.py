"""Huawei's official Python SDK (huaweicloudsdkimagesearch, the v2 "mms" API, over
huaweicloudsdkcore) against a live `lensbox serve`: only the endpoint is changed. The SDK
signs with AK/SK (SDK-HMAC-SHA256), which the box verifies against its configured secret;
the v1 API takes the same signature (signed here with the core's own Signer)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from tests.sdk_support import (
    HUAWEI_AK,
    HUAWEI_SK,
    PROJECT,
    expect,
    query_photo,
    record,
    serve_box,
)

pytest.importorskip("huaweicloudsdkimagesearch", reason="the clients extra")
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkimagesearch.v2 import (
    AddDataParam,
    CheckParam,
    DeleteParam,
    ImageSearchClient,
    RangeParam,
    RunAddDataRequest,
    RunCheckDataRequest,
    RunDeleteDataRequest,
    RunSearchRequest,
    RunUpdateDataRequest,
    SearchOptionalParam,
    SearchParam,
    UpdateParam,
)

PKG = "huaweicloudsdkimagesearch"
expect(
    "Huawei",
    PKG,
    "v2 run_search (AK/SK SDK-HMAC-SHA256, keys required)",
    "v2 run_search paging (offset, limit), min_score",
    "v2 run_search custom_tags / custom_num_tags filters, optional_params.box",
    "v2 run_add_data, run_update_data, run_check_data, run_delete_data",
    "documented error code (bad request, 404 in Huawei's shape)",
    "forged / stale / unknown AK/SK signature refused",
    "v1 image/search signed with huaweicloudsdkcore's Signer",
)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, bundle: Path):
    with serve_box(tmp_path_factory.mktemp("sdk-huawei"), bundle) as b:
        yield b


def client(box, ak: str = HUAWEI_AK, sk: str = HUAWEI_SK) -> ImageSearchClient:
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    return (
        ImageSearchClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, PROJECT))
        .with_endpoints([box.url])
        .build()
    )


def photo_b64(name: str = "coffee-photo.jpg") -> str:
    return base64.b64encode(query_photo(name)).decode()


def search(cli: ImageSearchClient, **fields):
    body = SearchParam(search_type="IMAGE", image_base64=photo_b64(), **fields)
    resp = cli.run_search(RunSearchRequest(service_name="default", body=body))
    assert resp.status_code == 200 and resp.result == "success"
    return resp.data


def test_search_with_aksk_signing(box) -> None:
    data = search(client(box))
    assert data.items[0].id == "coffee"
    assert 0 < data.items[0].score <= 1
    assert data.items[0].source.custom_tags == {"kind": "drink", "color": "brown"}
    assert data.search_info.return_num == len(data.items) == 10
    assert data.search_info.last_item.id == data.items[-1].id
    record("Huawei", PKG, "v2 run_search (AK/SK SDK-HMAC-SHA256, keys required)")


def test_paging_and_min_score(box) -> None:
    cli = client(box)
    first = search(cli, limit=3, offset=0)
    second = search(cli, limit=3, offset=3)
    both = search(cli, limit=6, offset=0)
    assert [i.id for i in first.items + second.items] == [i.id for i in both.items]
    cut = (both.items[0].score + both.items[1].score) / 2
    top = search(cli, limit=6, min_score=cut)
    assert [i.id for i in top.items] == ["coffee"]
    record("Huawei", PKG, "v2 run_search paging (offset, limit), min_score")


def test_filters_and_box(box) -> None:
    cli = client(box)
    space = search(cli, limit=20, custom_tags={"kind": ["space", "drink"]})
    assert {i.id for i in space.items} == {"astronaut", "rocket", "hubble", "coffee"}
    boxed = search(
        cli, limit=2, optional_params=SearchOptionalParam(box="10,10,300,200", do_det=False)
    )
    assert boxed.image_info.box == "10,10,300,200"
    record(
        "Huawei", PKG, "v2 run_search custom_tags / custom_num_tags filters, optional_params.box"
    )


def test_add_update_check_delete(box) -> None:
    cli = client(box)
    add = AddDataParam(
        item_id="sdk-card",
        desc="added by the SDK",
        custom_tags={"kind": "sdk"},
        custom_num_tags={"price": 12.5},
        image_base64=photo_b64("card-04-photo.jpg"),
    )
    added = cli.run_add_data(RunAddDataRequest(service_name="default", body=add))
    assert added.result == "success" and added.data.image_info.objects
    found = search(
        cli,
        custom_tags={"kind": ["sdk"]},
        custom_num_tags={"price": RangeParam(_from=10, to=20)},
    )
    assert [i.id for i in found.items] == ["sdk-card"]
    assert found.items[0].source.desc == "added by the SDK"
    assert found.items[0].source.custom_num_tags == {"price": 12.5}
    outside = search(cli, custom_num_tags={"price": RangeParam(_from=20, to=30)})
    assert outside.items == []

    upd = UpdateParam(item_id="sdk-card", custom_tags={"kind": "sdk2"})
    assert cli.run_update_data(RunUpdateDataRequest("default", body=upd)).result == "success"
    check = cli.run_check_data(RunCheckDataRequest("default", body=CheckParam(item_id="sdk-card")))
    assert check.data.existed is True
    assert check.data.item_info.custom_tags == {"kind": "sdk2"}
    assert check.data.item_info.custom_num_tags == {"price": 12.5}

    gone = cli.run_delete_data(
        RunDeleteDataRequest("default", body=DeleteParam(item_id="sdk-card"))
    )
    assert [i.id for i in gone.data.items] == ["sdk-card"]
    check = cli.run_check_data(RunCheckDataRequest("default", body=CheckParam(item_id="sdk-card")))
    assert check.data.existed is False
    record("Huawei", PKG, "v2 run_add_data, run_update_data, run_check_data, run_delete_data")


def test_documented_errors(box) -> None:
    cli = client(box)
    with pytest.raises(ClientRequestException) as err:
        cli.run_search(RunSearchRequest("default", body=SearchParam(search_type="IMAGE", limit=5)))
    assert err.value.status_code == 400 and err.value.error_code == "IS.0003"
    with pytest.raises(ClientRequestException) as err:
        search(cli, limit=5000)
    assert err.value.status_code == 400 and err.value.error_code.startswith("IS.")
    resp = requests.post(f"{box.url}/v2/{PROJECT}/mms/default/no-such-call", json={}, timeout=30)
    assert resp.status_code == 404 and resp.json()["error_code"] == "APIGW.0101"
    record("Huawei", PKG, "documented error code (bad request, 404 in Huawei's shape)")


def test_bad_signatures_are_refused_and_change_nothing(box) -> None:
    with pytest.raises(ClientRequestException) as err:
        search(client(box, sk="not-the-secret"))
    assert err.value.status_code == 401 and err.value.error_code == "APIGW.0301"
    with pytest.raises(ClientRequestException) as err:
        search(client(box, ak="HWUNKNOWN"))
    assert err.value.status_code == 401 and err.value.error_code == "APIGW.0301"
    with pytest.raises(ClientRequestException):
        client(box, sk="forged").run_add_data(
            RunAddDataRequest(
                "default", body=AddDataParam(item_id="forged", image_base64=photo_b64())
            )
        )
    check = client(box).run_check_data(
        RunCheckDataRequest("default", body=CheckParam(item_id="forged"))
    )
    assert check.data.existed is False
    stale = _signed_v1(box, date="20200101T000000Z")
    assert stale.status_code == 401 and "X-Sdk-Date" in stale.json()["error_msg"]
    bare = requests.post(
        f"{box.url}/v1/{PROJECT}/default/image/search", json={"path": "coffee"}, timeout=30
    )
    assert bare.status_code == 400 and bare.json()["error_code"] == "IS.0005"
    record("Huawei", PKG, "forged / stale / unknown AK/SK signature refused")


def _signed_v1(box, date: str | None = None) -> requests.Response:
    """A v1 search signed by huaweicloudsdkcore's own Signer, sent with requests."""
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    path = f"/v1/{PROJECT}/default/image/search"
    body = json.dumps({"file": photo_b64(), "limit": 3}).encode()
    headers = {"Content-Type": "application/json;charset=UTF-8", "X-Project-Id": PROJECT}
    if date:
        headers["X-Sdk-Date"] = date
    req = SdkRequest(
        method="POST",
        schema="http",
        host=box.host,
        resource_path=path,
        uri=path,
        query_params=[],
        header_params=headers,
        body=body,
    )
    signed = Signer(BasicCredentials(HUAWEI_AK, HUAWEI_SK)).sign(req)
    return requests.post(
        f"{box.url}{path}", data=signed.body, headers=signed.header_params, timeout=30
    )


def test_v1_with_aksk(box) -> None:
    resp = _signed_v1(box)
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"][0]["path"] == "coffee"
    record("Huawei", PKG, "v1 image/search signed with huaweicloudsdkcore's Signer")
