"""The signature verifiers (device/api/auth.py) on requests signed by the SDKs' own signing
code, then altered the ways an attacker or a broken client would; and the gRPC listener in
plaintext mode, in-process over a real server app."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lensbox.device.api.auth import NonceCache, SignatureError, Signatures, Verified

pytest.importorskip("alibabacloud_tea_openapi", reason="the clients extra")
pytest.importorskip("huaweicloudsdkcore", reason="the clients extra")

KEY_ID, SECRET = "LTAI-unit", "unit-secret"
NOW = 1_800_000_000.0


def signatures(**kw) -> Signatures:
    return Signatures({KEY_ID: SECRET}, required=True, clock=lambda: NOW, **kw)


def acs3_request(body: bytes = b"InstanceName=default&Num=2", query: dict | None = None):
    """Headers as alibabacloud-tea-openapi builds and signs them (its Utils.get_authorization)."""
    import time

    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.request import DaraRequest

    req = DaraRequest()
    req.method, req.pathname, req.query = "POST", "/", dict(query or {"ScoreThreshold": "0.5"})
    digest = hashlib.sha256(body).hexdigest()
    req.headers = {
        "host": "box:8080",
        "x-acs-action": "SearchImageByPic",
        "x-acs-version": "2020-12-14",
        "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)),
        "x-acs-signature-nonce": "n-1",
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-content-sha256": digest,
    }
    req.headers["authorization"] = Utils.get_authorization(
        req, "ACS3-HMAC-SHA256", digest, KEY_ID, SECRET
    )
    return dict(req.query), dict(req.headers), body


def test_acs3_accepts_the_sdk_signature_once() -> None:
    sig = signatures()
    query, headers, body = acs3_request()
    got = sig.acs3("POST", "/", query, headers, body)
    assert got == KEY_ID and isinstance(got, Verified)
    with pytest.raises(SignatureError) as err:
        sig.acs3("POST", "/", query, headers, body)
    assert err.value.reason == "nonce"


@pytest.mark.parametrize(
    "method, query, header, extra_body",
    [
        ("POST", {}, {}, b"&Num=100"),  # body changed, hash header kept
        ("POST", {"ScoreThreshold": "0.1"}, {}, b""),  # query changed
        ("POST", {}, {"x-acs-action": "DeleteImage"}, b""),  # a signed header changed
        ("GET", {}, {}, b""),  # method changed
    ],
)
def test_acs3_refuses_any_change(method, query, header, extra_body) -> None:
    q, h, b = acs3_request()
    with pytest.raises(SignatureError) as err:
        signatures().acs3(method, "/", {**q, **query}, {**h, **header}, b + extra_body)
    assert err.value.reason == "signature"


def test_acs3_malformed_headers_are_incomplete_not_crashes() -> None:
    query, headers, body = acs3_request()
    for auth in (
        "ACS3-HMAC-SHA256",
        "ACS3-HMAC-SHA256 garbage",
        "ACS3-HMAC-SHA256 Credential=,SignedHeaders=,Signature=",
        "ACS3-HMAC-SM3 Credential=x,SignedHeaders=host,Signature=00",
        "ACS3-HMAC-SHA256 Credential=LTAI-unit,SignedHeaders=host,Signature=00",
    ):
        with pytest.raises(SignatureError) as err:
            signatures().acs3("POST", "/", query, {**headers, "authorization": auth}, body)
        assert err.value.reason == "incomplete", auth


def test_acs3_stale_and_unknown_key() -> None:
    query, headers, body = acs3_request()
    later = Signatures({KEY_ID: SECRET}, required=True, clock=lambda: NOW + 3600)
    with pytest.raises(SignatureError) as err:
        later.acs3("POST", "/", query, headers, body)
    assert err.value.reason == "expired"
    other = Signatures({"LTAI-other": "x"}, required=False, clock=lambda: NOW)
    with pytest.raises(SignatureError) as err:
        other.acs3("POST", "/", query, headers, body)
    assert err.value.reason == "unknown_key"
    # no secrets and auth off (a loopback box): a signed request passes unverified
    loose = Signatures({}, required=False, clock=lambda: NOW)
    got = loose.acs3("POST", "/", query, headers, body)
    assert got == KEY_ID and not isinstance(got, Verified)


def test_rpc_signature_as_the_sdk_computes_it() -> None:
    from alibabacloud_tea_openapi.utils import Utils

    params = {
        "Action": "SearchImageByPic",
        "AccessKeyId": KEY_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": "rpc-1",
        "Timestamp": "2027-01-15T08:00:00Z",
        "InstanceName": "default",
        "PicContent": "a b+c/=",
    }
    params["Signature"] = Utils.get_rpcsignature(params, "POST", SECRET)
    sig = signatures()  # NOW is 2027-01-15T08:00:00Z
    assert sig.rpc("POST", params) == KEY_ID
    with pytest.raises(SignatureError):
        sig.rpc("POST", {**params, "SignatureNonce": "rpc-2", "PicContent": "other"})
    with pytest.raises(SignatureError) as err:
        sig.rpc("POST", params)
    assert err.value.reason == "nonce"


def test_huawei_signature_and_tampering() -> None:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    body = json.dumps({"image_base64": "abc", "limit": 3}).encode()
    req = SdkRequest(
        method="POST",
        schema="http",
        host="box:8080",
        resource_path="/v2/p/mms/default/search",
        uri="/v2/p/mms/default/search",
        query_params=[("x", "1")],
        header_params={"Content-Type": "application/json", "X-Sdk-Date": "20270115T080000Z"},
        body=body,
    )
    signed = Signer(BasicCredentials("HWAK", "HWSK")).sign(req)
    headers = {k.lower(): v for k, v in signed.header_params.items()}
    sig = Signatures({"HWAK": "HWSK"}, required=True, clock=lambda: NOW)
    path = "/v2/p/mms/default/search"
    assert sig.sdk_hmac("POST", path, [("x", "1")], headers, signed.body) == "HWAK"
    for method, p, q, b in (
        ("POST", path, [("x", "2")], signed.body),
        ("POST", "/v2/p/mms/other/search", [("x", "1")], signed.body),
        ("POST", path, [("x", "1")], signed.body.replace(b"3", b"9")),
    ):
        with pytest.raises(SignatureError) as err:
            sig.sdk_hmac(method, p, q, headers, b)
        assert err.value.reason == "signature"
    unsigned = {**headers, "x-sdk-content-sha256": "UNSIGNED-PAYLOAD"}
    with pytest.raises(SignatureError) as err:  # a JSON body must be covered
        sig.sdk_hmac("POST", path, [("x", "1")], unsigned, signed.body)
    assert err.value.reason == "signature"
    late = Signatures({"HWAK": "HWSK"}, required=True, clock=lambda: NOW + 7200)
    with pytest.raises(SignatureError) as err:
        late.sdk_hmac("POST", path, [("x", "1")], headers, signed.body)
    assert err.value.reason == "expired"


def test_nonce_cache_is_bounded_and_forgets_old_nonces() -> None:
    cache = NonceCache(ttl_s=10, capacity=3)
    assert all(cache.first_use("k", str(i), 100.0) for i in range(5))
    assert len(cache._seen) <= 3
    assert cache.first_use("k", "4", 100.0) is False
    assert cache.first_use("k", "4", 200.0) is True  # older than the window: forgotten


# -- the gRPC listener in plaintext, in-process -------------------------------------------
def test_plaintext_grpc_listener_and_clarifai_insecure_channel(bundle: Path) -> None:
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("clarifai_grpc")
    from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
    from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
    from clarifai_grpc.grpc.api.status import status_code_pb2

    from lensbox.device.config.server import ServerConfig
    from lensbox.device.grpc import GrpcListener
    from tests.api_support import running_server
    from tests.sdk_support import free_port, query_photo

    port = free_port()
    with running_server({"default": bundle}, require_auth=True, api_keys=["k1"]) as api:
        cfg = ServerConfig.model_validate(
            {"require_auth": True, "api_keys": ["k1"], "grpc_port": port, "rate_limit": 0}
        )
        listener = GrpcListener(cfg, api.app).start()
        try:
            stub = service_pb2_grpc.V2Stub(
                ClarifaiChannel.get_insecure_grpc_channel(base="127.0.0.1", port=port)
            )
            image = resources_pb2.Image(base64=query_photo())
            rank = resources_pb2.Rank(
                annotation=resources_pb2.Annotation(data=resources_pb2.Data(image=image))
            )
            request = service_pb2.PostAnnotationsSearchesRequest(
                searches=[resources_pb2.Search(query=resources_pb2.Query(ranks=[rank]))],
                pagination=service_pb2.Pagination(page=1, per_page=3),
            )
            resp = stub.PostAnnotationsSearches(request, metadata=(("authorization", "Key k1"),))
            assert resp.status.code == status_code_pb2.SUCCESS
            assert resp.hits[0].input.id == "coffee" and len(resp.hits) == 3
            # every other V2 RPC is refused as unimplemented, not crashed
            with pytest.raises(grpc.RpcError) as err:
                stub.ListInputs(
                    service_pb2.ListInputsRequest(), metadata=(("authorization", "Key k1"),)
                )
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            listener.stop()


def test_grpc_throttling_is_resource_exhausted(bundle: Path) -> None:
    grpc = pytest.importorskip("grpc")
    pytest.importorskip("yandex.cloud.searchapi.v2.img_search_service_pb2")
    from yandex.cloud.searchapi.v2 import img_search_service_pb2 as ya
    from yandex.cloud.searchapi.v2.img_search_service_pb2_grpc import ImageSearchServiceStub

    from lensbox.device.config.server import ServerConfig
    from lensbox.device.grpc import GrpcListener
    from tests.api_support import running_server
    from tests.sdk_support import free_port, query_photo

    port = free_port()
    limits = {"require_auth": True, "api_keys": ["k1"], "rate_limit": 0.2, "rate_burst": 1}
    with running_server({"default": bundle}, **limits) as api:
        cfg = ServerConfig.model_validate({**limits, "grpc_port": port})
        listener = GrpcListener(cfg, api.app).start()
        try:
            stub = ImageSearchServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
            request = ya.ImageSearchByImageRequest(data=query_photo())
            key = (("authorization", "Api-Key k1"),)
            assert stub.SearchByImage(request, metadata=key).images
            with pytest.raises(grpc.RpcError) as err:
                stub.SearchByImage(request, metadata=key)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            listener.stop()
