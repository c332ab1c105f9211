"""Each cloud client against a local fake that answers as the provider documents and
verifies the provider's real authentication (token, or the recomputed request signature)."""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from lensbox.device.bundle.format import ITEM_COLUMNS
from lensbox.device.fallback import CloudError, cloud_hit_to_native, make_provider
from lensbox.device.fallback.alibaba import rpc_signature
from lensbox.device.fallback.huawei import sign_request
from tests.fakes import PROVIDERS, Setup, provider_setup

QUERY = Path(__file__).resolve().parent.parent / "examples" / "sample-queries" / "coffee-photo.jpg"


@pytest.fixture(scope="module")
def image() -> bytes:
    return QUERY.read_bytes()


@pytest.fixture(params=PROVIDERS)
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    s = provider_setup(request.param)
    yield s
    s.fake.stop()


def search(s: Setup, image: bytes, top_k: int = 5, budget: float = 3.0):
    provider = make_provider(s.fake.name, s.section, environ=s.environ)
    return provider.search(image, top_k, time.monotonic() + budget)


def test_success_returns_translated_hits(setup: Setup, image: bytes) -> None:
    top_k = 4
    hits = search(setup, image, top_k)
    catalog = setup.fake.catalog[:top_k]
    assert len(hits) == top_k
    name = setup.fake.name
    for rank, (hit, c) in enumerate(zip(hits, catalog)):
        assert hit.source == f"cloud:{name}"
        assert hit.rank == rank
        assert 0.0 <= hit.score <= 1.0
        native = cloud_hit_to_native(hit)
        assert native.source == f"cloud:{name}"
        assert set(native.item) == set(ITEM_COLUMNS)
        assert native.id == native.item["id"] == hit.id
        if name == "yandex":
            assert (hit.id, hit.url, hit.title, hit.page_url, hit.host) == (
                c["url"],
                c["url"],
                c["title"],
                c["page_url"],
                c["host"],
            )
            assert (hit.width, hit.height) == (c["width"], c["height"])  # int64 strings parsed
            assert hit.score_kind == "rank"
            assert native.item["format"] == "jpeg"
        elif name == "alibaba":
            assert hit.id == f"{c['id']}/{c['id']}.jpg"
            assert hit.score == pytest.approx(c["score"]) and hit.score_kind == "similarity"
            assert native.item["product_id"] == c["id"]
            assert native.item["int_attrs"] == {"int_attr": c["width"]}
            assert native.item["str_attrs"] == {"str_attr": c["tags"]["color"]}
            assert native.item["custom_content"] == c["title"]
        elif name == "huawei":
            assert (hit.id, hit.url) == (c["url"], c["url"])
            assert hit.score == pytest.approx(c["score"])
            assert hit.tags == c["tags"]
            assert native.item["source"] == c["url"]
        else:
            assert (hit.id, hit.url, hit.title, hit.page_url) == (
                c["id"],
                c["url"],
                c["title"],
                c["page_url"],
            )
            assert hit.host == c["host"] and hit.score == pytest.approx(c["score"])
            assert (hit.width, hit.height) == (c["width"], c["height"])
    if name == "yandex":  # rank-derived: strictly decreasing, never a perfect 1.0
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
        assert scores[0] < 1.0


def sent_image(s: Setup) -> bytes:
    """The image bytes as the fake received them, decoded from each provider's format."""
    rec = s.fake.requests[-1]
    name = s.fake.name
    if name == "alibaba":
        return base64.b64decode(dict(parse_qsl(rec.body.decode()))["PicContent"])
    body = json.loads(rec.body)
    if name == "yandex":
        return base64.b64decode(body["data"])
    if name == "huawei":
        return base64.b64decode(body["file"])
    return base64.b64decode(
        body["searches"][0]["query"]["ranks"][0]["annotation"]["data"]["image"]["base64"]
    )


def test_the_query_image_is_what_is_sent(setup: Setup, image: bytes) -> None:
    search(setup, image)
    assert sent_image(setup) == image
    if setup.fake.name == "alibaba":  # the image travels in the body, never in the URL
        assert "PicContent" not in setup.fake.requests[-1].path


@pytest.mark.parametrize(
    "name,auth", [(p, None) for p in PROVIDERS] + [("yandex", "iam_token"), ("huawei", "token")]
)
def test_wrong_secret_is_an_auth_error(name: str, auth: str | None, image: bytes) -> None:
    s = provider_setup(name, wrong=True, auth=auth)
    try:
        with pytest.raises(CloudError) as info:
            search(s, image)
        assert info.value.kind == "auth" and info.value.provider == name
        assert info.value.http_status in (400, 401, 403, 404)
        assert s.fake.count == 1
    finally:
        s.fake.stop()


@pytest.mark.parametrize("name,auth", [("yandex", "iam_token"), ("huawei", "token")])
def test_alternative_auth_succeeds(name: str, auth: str, image: bytes) -> None:
    s = provider_setup(name, auth=auth)
    try:
        assert len(search(s, image, 3)) == 3
        headers = s.fake.requests[-1].headers
        if name == "yandex":
            assert headers["Authorization"].startswith("Bearer ")
        else:
            assert "X-Auth-Token" in headers and "Authorization" not in headers
    finally:
        s.fake.stop()


@pytest.mark.parametrize(
    "mode,kind",
    [
        ("401", "auth"),
        ("429", "throttled"),
        ("500", "unavailable"),
        ("malformed", "bad_response"),
        ("drop", "unavailable"),
        ("hangup", "unavailable"),
    ],
)
def test_provider_errors_are_typed(setup: Setup, image: bytes, mode: str, kind: str) -> None:
    setup.fake.queue(mode)
    with pytest.raises(CloudError) as info:
        search(setup, image)
    err = info.value
    assert err.kind == kind and err.provider == setup.fake.name
    assert err.retryable == (kind in ("throttled", "unavailable"))
    # And the next request (mode queue empty) succeeds: the client kept no broken state.
    assert len(search(setup, image, 2)) == 2


def test_slow_server_times_out_within_deadline(setup: Setup, image: bytes) -> None:
    setup.fake.queue("slow")
    start = time.monotonic()
    with pytest.raises(CloudError) as info:
        search(setup, image, budget=0.4)
    assert info.value.kind == "timeout"
    assert time.monotonic() - start < 0.4 + 0.3


def test_oversized_image_is_rejected_before_sending(image: bytes) -> None:
    s = provider_setup("yandex")
    try:
        with pytest.raises(CloudError) as info:
            search(s, b"\xff" * (3 * 1024 * 1024 + 1))
        assert info.value.kind == "rejected" and not info.value.retryable
        assert s.fake.count == 0
    finally:
        s.fake.stop()


def test_alibaba_signature_matches_documented_example() -> None:
    """Alibaba's published worked example (DescribeRegions, secret "testsecret")."""
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert rpc_signature(params, "testsecret", "GET") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def raw_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_alibaba_fake_rejects_a_tampered_request(image: bytes) -> None:
    """The fake really verifies: a correctly signed request with one parameter changed
    afterwards is refused with the documented error."""
    s = provider_setup("alibaba")
    try:
        provider = make_provider("alibaba", s.section, environ=s.environ)
        from tests.fakes import SECRETS

        url, body = provider.signed_request(image, 5, "LTAI5tFakeKeyId", SECRETS["alibaba_secret"])
        parts = urlsplit(url)
        tampered = parts.query.replace("Num=5", "Num=6")
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, doc = raw_post(s.fake.port, f"/?{tampered}", body, headers)
        assert (status, doc["Code"]) == (400, "SignatureDoesNotMatch")
        url, body = provider.signed_request(image, 5, "LTAI5tFakeKeyId", SECRETS["alibaba_secret"])
        status, doc = raw_post(s.fake.port, f"/?{urlsplit(url).query}", body, headers)
        assert status == 200 and doc["Success"] is True
        # Replaying the same signed request: the nonce was used.
        status, doc = raw_post(s.fake.port, f"/?{urlsplit(url).query}", body, headers)
        assert (status, doc["Code"]) == (400, "SignatureNonceUsed")
    finally:
        s.fake.stop()


def test_huawei_fake_rejects_a_tampered_body() -> None:
    s = provider_setup("huawei")
    try:
        from tests.fakes import SECRETS

        url = f"{s.fake.base_url}{s.fake.path}"
        body = json.dumps({"file": base64.b64encode(b"img").decode(), "limit": 2}).encode()
        headers = sign_request(
            "POST",
            url,
            {"Content-Type": "application/json"},
            body,
            "HPUAFAKEAK",
            SECRETS["huawei_sk"],
        )
        assert headers["Authorization"].startswith("SDK-HMAC-SHA256 Access=HPUAFAKEAK, ")
        status, doc = raw_post(
            s.fake.port, s.fake.path, body.replace(b'"limit": 2', b'"limit": 3'), headers
        )
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
        status, doc = raw_post(s.fake.port, s.fake.path, body, headers)
        assert status == 200 and len(doc["result"]) == 2
        stale = sign_request(
            "POST",
            url,
            {"Content-Type": "application/json"},
            body,
            "HPUAFAKEAK",
            SECRETS["huawei_sk"],
            now=time.time() - 3600,
        )
        status, doc = raw_post(s.fake.port, s.fake.path, body, stale)
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
    finally:
        s.fake.stop()


def test_missing_credential_is_misconfigured_and_sends_nothing(image: bytes) -> None:
    s = provider_setup("clarifai")
    try:
        provider = make_provider("clarifai", s.section, environ={})
        with pytest.raises(CloudError) as info:
            provider.search(image, 3, time.monotonic() + 2)
        assert info.value.kind == "misconfigured"
        assert "T_CLARIFAI_PAT" in str(info.value)  # where it looked, so the fix is obvious
        assert s.fake.count == 0
    finally:
        s.fake.stop()
