"""The cloud fallback wired into the daemon: a real waitress server over the sample bundle
asks a fake Yandex (a local HTTP server answering as the documentation shows) when the
local answer is weak, in every API shape, and never otherwise."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from PIL import Image

from tests.api_support import Api, b64, metric, photo, running_server
from tests.fakes import SECRETS, Setup, provider_setup

OPENAPI = Path(__file__).resolve().parent.parent / "device" / "api" / "openapi.yaml"
SPEC = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
THRESHOLD = 0.5
YANDEX_KEYS = {"url", "format", "width", "height", "passage", "host", "pageTitle", "pageUrl"}


def check_schema(name: str, body: object) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    Draft202012Validator(schema).validate(body)


def gradient_png(width: int = 320, height: int = 240) -> bytes:
    """A smooth colour ramp: nothing like any photo of the sample catalog."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, np.full_like(x, 90)], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


WEAK = gradient_png()
STRONG = photo("coffee-photo.jpg")


@pytest.fixture(scope="module")
def yandex() -> Iterator[Setup]:
    setup = provider_setup("yandex", slow_s=3.0)
    saved = {k: os.environ.get(k) for k in setup.environ}
    os.environ.update(setup.environ)  # the daemon reads credentials from its environment
    yield setup
    setup.fake.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def reset_fake(yandex: Setup) -> Iterator[None]:
    yandex.fake.default_mode = "ok"
    yield
    yandex.fake.default_mode = "ok"


@contextmanager
def serve(bundle: Path, yandex: Setup, enabled: bool = True, **fallback: Any) -> Iterator[Api]:
    settings = {
        "enabled": enabled,
        "order": ["yandex"],
        "yandex": yandex.section,
        "threshold": THRESHOLD,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "breaker_failures": 100,
        **fallback,
    }
    with running_server({"default": bundle}, sections={"fallback": settings}) as api:
        yield api


def native(api: Api, data: bytes, **params: Any) -> requests.Response:
    return requests.post(
        f"{api.url}/v1/search",
        data=data,
        params=params,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )


def ok_native(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    check_schema("SearchResponse", body)
    assert resp.headers["X-Lensbox-Source"].split(",") == [h["source"] for h in body["hits"]]
    return body


def yandex_shape(api: Api, data: bytes) -> requests.Response:
    return requests.post(
        f"{api.url}/v2/image/search_by_image",
        json={"data": b64(data), "folderId": "any"},
        timeout=30,
    )


def huawei_shape(api: Api, data: bytes, instance: str = "default") -> requests.Response:
    return requests.post(
        f"{api.url}/v1/proj1/{instance}/image/search", json={"file": b64(data)}, timeout=30
    )


def alibaba_shape(api: Api, data: bytes, instance: str = "default") -> requests.Response:
    return requests.post(
        f"{api.url}/",
        data={"Action": "SearchImageByPic", "InstanceName": instance, "PicContent": b64(data)},
        timeout=30,
    )


def clarifai_shape(api: Api, data: bytes) -> requests.Response:
    body = {
        "searches": [
            {"query": {"ranks": [{"annotation": {"data": {"image": {"base64": b64(data)}}}}]}}
        ],
        "pagination": {"page": 1, "per_page": 10},
    }
    return requests.post(f"{api.url}/v2/annotations/searches", json=body, timeout=30)


def no_secret(resp: requests.Response) -> None:
    text = resp.text + " ".join(resp.headers.values())
    assert not any(secret in text for secret in SECRETS.values())


# -- weak local answer: the cloud answers, in every shape -----------------------------------
def test_weak_query_is_answered_by_the_cloud_in_every_shape(bundle: Path, yandex: Setup) -> None:
    fake = yandex.fake
    cloud_urls = [c["url"] for c in fake.catalog]
    with serve(bundle, yandex) as api:
        before = fake.count
        resp = native(api, WEAK)
        body = ok_native(resp)
        assert fake.count == before + 1
        assert body["hits"] and {h["source"] for h in body["hits"]} == {"cloud:yandex"}
        assert [h["id"] for h in body["hits"]] == cloud_urls[: len(body["hits"])]
        first = body["hits"][0]
        assert first["score_kind"] == "rank" and 0 < first["score"] < 1
        assert first["metadata"]["page_url"] == fake.catalog[0]["page_url"]
        assert first["metadata"]["host"] == fake.catalog[0]["host"]
        assert body["fallback"]["state"] == "answered"
        assert body["fallback"]["provider"] == "yandex"
        assert body["fallback"]["hits"] == len(body["hits"])
        assert resp.headers["X-Lensbox-Fallback"].startswith("answered; provider=yandex")
        assert "cloud_ms" in body["timings"]
        # The image sent was exactly the query image.
        sent = fake.requests[-1]
        assert b64(WEAK) in sent.body.decode()

        huawei = huawei_shape(api, WEAK)
        assert huawei.status_code == 200, huawei.text
        rows = huawei.json()["result"]
        assert rows and {r["lensbox_source"] for r in rows} == {"cloud:yandex"}
        assert [r["path"] for r in rows] == cloud_urls[: len(rows)]
        assert set(rows[0]) == {"path", "sim", "tags", "lensbox_source"}

        alibaba = alibaba_shape(api, WEAK)
        assert alibaba.status_code == 200, alibaba.text
        auctions = alibaba.json()["Auctions"]
        assert auctions and {a["LensboxSource"] for a in auctions} == {"cloud:yandex"}
        assert auctions[0]["PicName"] == cloud_urls[0].rsplit("/", 1)[-1]

        clarifai = clarifai_shape(api, WEAK)
        assert clarifai.status_code == 200, clarifai.text
        hits = clarifai.json()["hits"]
        assert hits and {h["input"]["data"]["metadata"]["lensbox_source"] for h in hits} == {
            "cloud:yandex"
        }
        assert hits[0]["input"]["data"]["image"]["url"] == cloud_urls[0]

        ya = yandex_shape(api, WEAK)
        assert ya.status_code == 200, ya.text
        images = ya.json()["images"]
        assert set(images[0]) == YANDEX_KEYS  # documented fields only: the source is a header
        assert ya.headers["X-Lensbox-Source"].split(",") == ["cloud:yandex"] * len(images)
        assert [i["url"] for i in images] == cloud_urls[: len(images)]

        # Same image, same top_k: every later shape was answered from the fallback cache.
        assert fake.count == before + 1
        again = ok_native(native(api, WEAK))
        assert again["fallback"]["state"] == "cached" and fake.count == before + 1
        assert metric(api.url, "lensbox_fallback_asked_total") == 6
        assert metric(api.url, "lensbox_fallback_answered_total", provider="yandex") == 6
        assert metric(api.url, "lensbox_fallback_cache_hits_total", provider="yandex") == 5
        health = requests.get(f"{api.url}/healthz", timeout=10).json()
        check_schema("Health", health)
        assert health["fallback"]["active"] == ["yandex"]
        assert health["fallback"]["breakers"] == {"yandex": "closed"}


def test_local_then_cloud_appends_cloud_hits_after_local_ones(bundle: Path, yandex: Setup) -> None:
    """The catalog has 18 items: the page 15-19 holds its last 3, then 2 cloud hits."""
    with serve(bundle, yandex, policy="local_then_cloud") as api:
        first = ok_native(native(api, WEAK, top_k=5))
        assert {h["source"] for h in first["hits"]} == {"local"}  # local hits come first
        tail = ok_native(native(api, WEAK, top_k=5, offset=15))
        assert [h["source"] for h in tail["hits"]] == ["local"] * 3 + ["cloud:yandex"] * 2
        assert tail["hits"][3]["id"] == yandex.fake.catalog[0]["url"]
        assert tail["total"] == 18 + 2 and tail["fallback"]["hits"] == 2


# -- nothing is sent when it need not be -------------------------------------------------
def test_strong_local_answer_sends_nothing(bundle: Path, yandex: Setup) -> None:
    with serve(bundle, yandex) as api:
        before = yandex.fake.count
        resp = native(api, STRONG)
        body = ok_native(resp)
        assert body["hits"][0]["id"] == "coffee" and body["hits"][0]["score"] >= THRESHOLD
        assert {h["source"] for h in body["hits"]} == {"local"}
        assert body["fallback"] == {
            "state": "not_asked",
            "reason": "local_strong",
            "provider": None,
            "hits": 0,
            "elapsed_ms": 0.0,
        }
        assert resp.headers["X-Lensbox-Fallback"] == "not_asked; reason=local_strong"
        huawei = huawei_shape(api, STRONG).json()
        assert set(huawei["result"][0]) == {"path", "sim", "tags"}  # documented body, unchanged
        assert yandex.fake.count == before
        assert metric(api.url, "lensbox_fallback_not_asked_total", reason="local_strong") == 2


def test_disabled_fallback_sends_nothing(bundle: Path, yandex: Setup) -> None:
    with serve(bundle, yandex, enabled=False) as api:
        before = yandex.fake.count
        resp = native(api, WEAK)
        body = ok_native(resp)
        assert body["hits"][0]["score"] < THRESHOLD  # it would have been asked
        assert {h["source"] for h in body["hits"]} == {"local"}
        assert "fallback" not in body and "X-Lensbox-Fallback" not in resp.headers
        alibaba = alibaba_shape(api, WEAK).json()
        assert all("LensboxSource" not in a for a in alibaba["Auctions"])
        unknown = native(api, WEAK, instance="elsewhere")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_instance"
        assert requests.get(f"{api.url}/healthz", timeout=10).json()["fallback"] == {
            "enabled": False
        }
        assert yandex.fake.count == before


def test_search_by_id_has_no_image_to_send(bundle: Path, yandex: Setup) -> None:
    with serve(bundle, yandex, timeout_s=1.0) as api:
        yandex.fake.default_mode = "500"  # so the first search fails and caches nothing
        first = ok_native(native(api, WEAK))
        assert first["fallback"]["state"] == "failed"
        before = yandex.fake.count
        resp = requests.post(f"{api.url}/v1/search", json={"id": first["query_id"]}, timeout=30)
        body = ok_native(resp)
        assert body["fallback"]["state"] == "not_asked"
        assert body["fallback"]["reason"] == "no_image"
        assert resp.headers["X-Lensbox-Fallback"] == "not_asked; reason=no_image"
        assert yandex.fake.count == before


# -- provider failures ------------------------------------------------------------------
def test_throttled_provider_with_on_error_error(bundle: Path, yandex: Setup) -> None:
    yandex.fake.default_mode = "429"
    with serve(bundle, yandex, on_error="error", max_attempts=1) as api:
        resp = native(api, WEAK)
        assert resp.status_code == 429 and resp.json()["error"]["code"] == "throttled"
        assert "Retry-After" in resp.headers
        assert "yandex" in resp.json()["error"]["message"]
        check_schema("Error", resp.json())
        ya = yandex_shape(api, WEAK)
        assert ya.status_code == 429 and ya.json()["code"] == 8  # RESOURCE_EXHAUSTED
        hw = huawei_shape(api, WEAK)
        assert hw.status_code == 429 and hw.json()["error_code"] == "APIGW.0308"
        ali = alibaba_shape(api, WEAK)
        assert ali.status_code == 403 and ali.json()["Code"] == "DeniedRequest"
        for r in (resp, ya, hw, ali):
            no_secret(r)
        assert (
            metric(api.url, "lensbox_fallback_errors_total", provider="yandex", kind="throttled")
            == 4
        )


def test_slow_provider_times_out_with_on_error_error(bundle: Path, yandex: Setup) -> None:
    yandex.fake.default_mode = "slow"  # 3 s, past the 0.5 s budget
    with serve(bundle, yandex, on_error="error", timeout_s=0.5) as api:
        resp = native(api, WEAK)
        assert resp.status_code == 504 and resp.json()["error"]["code"] == "cloud_timeout"
        assert "yandex" in resp.json()["error"]["message"]
        ali = alibaba_shape(api, WEAK)
        assert ali.status_code == 500 and ali.json()["Code"] == "NetworkException"
        clar = clarifai_shape(api, WEAK)
        assert clar.status_code == 503 and clar.json()["status"]["code"] == 40031
        assert "yandex" in clar.json()["status"]["details"]
        ya = yandex_shape(api, WEAK)
        assert ya.status_code == 504 and ya.json()["code"] == 4  # DEADLINE_EXCEEDED


def test_failing_provider_with_local_only_answers_locally(bundle: Path, yandex: Setup) -> None:
    yandex.fake.default_mode = "429"
    with serve(bundle, yandex, on_error="local_only", max_attempts=1) as api:
        before = yandex.fake.count
        resp = native(api, WEAK)
        body = ok_native(resp)
        assert body["hits"] and {h["source"] for h in body["hits"]} == {"local"}
        assert body["fallback"]["state"] == "failed" and body["fallback"]["reason"] == "throttled"
        assert resp.headers["X-Lensbox-Fallback"] == "failed; provider=yandex; reason=throttled"
        assert yandex.fake.count == before + 1  # it was asked
        hw = huawei_shape(api, WEAK)
        assert hw.status_code == 200 and set(hw.json()["result"][0]) == {"path", "sim", "tags"}


# -- an instance this box does not hold ------------------------------------------------------
def test_unknown_instance_is_answered_by_the_cloud(bundle: Path, yandex: Setup) -> None:
    cloud_urls = [c["url"] for c in yandex.fake.catalog]
    with serve(bundle, yandex) as api:
        before = yandex.fake.count
        # Even a photo the local catalog knows: the instance asked for is not here.
        resp = native(api, STRONG, instance="elsewhere")
        body = ok_native(resp)
        assert body["instance"] == "elsewhere" and body["query_id"] is None
        assert {h["source"] for h in body["hits"]} == {"cloud:yandex"}
        assert [h["id"] for h in body["hits"]] == cloud_urls[: len(body["hits"])]
        assert body["query"]["image"] == {"width": 640, "height": 480}
        assert yandex.fake.count == before + 1
        hw = huawei_shape(api, STRONG, instance="elsewhere")
        assert hw.status_code == 200, hw.text
        assert {r["lensbox_source"] for r in hw.json()["result"]} == {"cloud:yandex"}
        ali = alibaba_shape(api, STRONG, instance="elsewhere")
        assert ali.status_code == 200, ali.text
        assert {a["LensboxSource"] for a in ali.json()["Auctions"]} == {"cloud:yandex"}
        # A search by id names an embedding: nothing to send, the contract's error stands.
        by_id = requests.post(
            f"{api.url}/v1/search", json={"id": "coffee", "instance": "elsewhere"}, timeout=30
        )
        assert by_id.status_code == 404 and by_id.json()["error"]["code"] == "unknown_instance"
