"""FallbackRouter against local fakes: retries, deadline, offline, breaker, cache, privacy."""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lensbox.device.config.fallback import FallbackConfig, YandexConfig
from lensbox.device.fallback import CloudError, CloudHit, CloudProvider, FallbackRouter
from lensbox.device.search.engine import Hit
from tests.fakes import PROVIDERS, SECRETS, WRONG, Setup, provider_setup

QUERIES = Path(__file__).resolve().parent.parent / "examples" / "sample-queries"


@pytest.fixture(scope="module")
def image() -> bytes:
    return (QUERIES / "coffee-photo.jpg").read_bytes()


@pytest.fixture(scope="module")
def other_image() -> bytes:
    return (QUERIES / "rocket-photo.jpg").read_bytes()


@pytest.fixture
def yandex() -> Iterator[Setup]:
    s = provider_setup("yandex", slow_s=3.0)
    yield s
    s.fake.stop()


class FakeClock:
    """Drives breaker cool-downs and cache TTLs without sleeping."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_router(*setups: Setup, clock: Any = time.monotonic, **kw: Any) -> FallbackRouter:
    sections = {s.fake.name: s.section for s in setups}
    settings: dict[str, Any] = {
        "enabled": True,
        "order": tuple(sections),
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        **sections,
    }
    settings.update(kw)
    environ: dict[str, str] = {}
    for s in setups:
        environ.update(s.environ)
    return FallbackRouter(FallbackConfig(**settings), environ=environ, clock=clock)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["500", "429", "drop"])
def test_retryable_failure_then_success(yandex: Setup, image: bytes, mode: str) -> None:
    yandex.fake.queue(mode)
    out = make_router(yandex).search(image, 5, local_best_score=0.1)
    assert out.error is None and out.provider == "yandex" and len(out.hits) == 5
    assert out.attempts == 2 and yandex.fake.count == 2


def test_auth_error_is_not_retried(image: bytes) -> None:
    s = provider_setup("huawei", wrong=True)
    try:
        out = make_router(s, max_attempts=5).search(image, 5, local_best_score=None)
        assert out.error is not None and out.error.kind == "auth"
        assert out.attempts == 1 and s.fake.count == 1 and out.hits == []
    finally:
        s.fake.stop()


def test_retries_stop_at_max_attempts(yandex: Setup, image: bytes) -> None:
    yandex.fake.default_mode = "500"
    out = make_router(yandex, max_attempts=3).search(image, 5)
    assert out.error is not None and out.error.kind == "unavailable"
    assert yandex.fake.count == 3 and out.attempts == 3


def test_retries_only_within_the_deadline(yandex: Setup, image: bytes) -> None:
    """Backoff 0.4 s doubling, 0.8 s budget: one retry fits, the next wait (0.8 s) cannot."""
    yandex.fake.default_mode = "500"
    router = make_router(yandex, max_attempts=10, backoff_base_s=0.4, backoff_max_s=5.0)
    start = time.monotonic()
    out = router.search(image, 5, deadline=start + 0.8)
    assert out.error is not None and out.error.kind == "unavailable"
    assert yandex.fake.count == 2 and out.attempts == 2
    assert time.monotonic() - start < 0.8 + 0.3


# -- deadline / offline -----------------------------------------------------------------


def test_slow_cloud_never_delays_past_the_deadline(yandex: Setup, image: bytes) -> None:
    yandex.fake.queue("slow")  # sleeps 3 s
    router = make_router(yandex)
    start = time.monotonic()
    out = router.search(image, 5, local_best_score=0.2, deadline=start + 0.5)
    assert out.error is not None and out.error.kind == "timeout"
    assert out.elapsed < 0.5 + 0.3 and time.monotonic() - start < 0.5 + 0.3
    assert yandex.fake.count == 1


class StuckProvider(CloudProvider):
    """Ignores its deadline, like a resolver stuck in getaddrinfo."""

    name = "yandex"

    def search(self, image: bytes, top_k: int, deadline: float) -> list[CloudHit]:
        time.sleep(1.5)
        return []


def test_deadline_holds_even_when_a_provider_ignores_it(image: bytes) -> None:
    cfg = FallbackConfig(
        enabled=True,
        order=("yandex",),
        yandex=YandexConfig(folder_id="f", api_key={"value": "k"}),
    )
    router = FallbackRouter(cfg, providers={"yandex": StuckProvider()})
    start = time.monotonic()
    out = router.search(image, 5, deadline=start + 0.3)
    assert out.error is not None and out.error.kind == "timeout"
    assert time.monotonic() - start < 0.3 + 0.3


class BuggyProvider(CloudProvider):
    name = "yandex"

    def search(self, image: bytes, top_k: int, deadline: float) -> list[CloudHit]:
        raise ValueError(f"boom {SECRETS['yandex_key']}")


def test_a_provider_bug_becomes_a_typed_error(image: bytes) -> None:
    cfg = FallbackConfig(
        enabled=True,
        order=("yandex",),
        yandex=YandexConfig(folder_id="f", api_key={"value": "k"}),
    )
    out = FallbackRouter(cfg, providers={"yandex": BuggyProvider()}).search(image, 5)
    assert out.error is not None and out.error.kind == "bad_response"
    assert SECRETS["yandex_key"] not in str(out.error)


def test_offline_fails_fast(image: bytes) -> None:
    s = provider_setup("clarifai")
    s.fake.stop()
    section = s.section.model_copy(update={"base_url": f"http://127.0.0.1:{free_port()}"})
    cfg = FallbackConfig(enabled=True, order=("clarifai",), clarifai=section, timeout_s=5.0)
    start = time.monotonic()
    out = FallbackRouter(cfg, environ=s.environ).search(image, 5)
    assert out.error is not None and out.error.kind == "offline"
    assert out.attempts == 1  # never retried
    assert time.monotonic() - start < 0.5


def test_unresolvable_host_fails_within_deadline(image: bytes) -> None:
    s = provider_setup("clarifai")
    s.fake.stop()
    section = s.section.model_copy(update={"base_url": "http://lensbox-test.invalid"})
    cfg = FallbackConfig(enabled=True, order=("clarifai",), clarifai=section, timeout_s=1.0)
    start = time.monotonic()
    out = FallbackRouter(cfg, environ=s.environ).search(image, 5)
    assert out.error is not None and out.error.kind in ("offline", "timeout")
    assert time.monotonic() - start < 1.0 + 0.3


def test_next_provider_answers_when_first_is_offline(image: bytes) -> None:
    down = provider_setup("yandex")
    down.fake.stop()
    down.section = down.section.model_copy(update={"base_url": f"http://127.0.0.1:{free_port()}"})
    up = provider_setup("clarifai")
    try:
        out = make_router(down, up).search(image, 3)
        assert out.error is None and out.provider == "clarifai" and len(out.hits) == 3
        assert [e.kind for e in out.errors] == ["offline"]
        assert all(h.source == "cloud:clarifai" for h in out.hits)
    finally:
        up.fake.stop()


# -- circuit breaker --------------------------------------------------------------------


def test_circuit_breaker_opens_then_half_opens(yandex: Setup, image: bytes) -> None:
    clock = FakeClock()
    router = make_router(
        yandex, clock=clock, max_attempts=1, breaker_failures=2, breaker_cooldown_s=30
    )
    yandex.fake.default_mode = "500"
    for _ in range(2):
        assert router.search(image, 5).error.kind == "unavailable"
    assert yandex.fake.count == 2 and router.status()["breakers"]["yandex"] == "open"

    out = router.search(image, 5)  # open: refused at once, nothing sent
    assert out.error.kind == "circuit_open" and yandex.fake.count == 2

    clock.t += 31  # cool-down over: one trial call goes out, and it fails again
    assert router.status()["breakers"]["yandex"] == "half_open"
    assert router.search(image, 5).error.kind == "unavailable"
    assert yandex.fake.count == 3 and router.status()["breakers"]["yandex"] == "open"
    assert router.search(image, 5).error.kind == "circuit_open" and yandex.fake.count == 3

    clock.t += 31  # next trial succeeds: closed again
    yandex.fake.default_mode = "ok"
    out = router.search(image, 5)
    assert out.error is None and len(out.hits) == 5 and yandex.fake.count == 4
    assert router.status()["breakers"]["yandex"] == "closed"


def test_rejected_queries_do_not_open_the_breaker(yandex: Setup) -> None:
    router = make_router(yandex, breaker_failures=1)
    for _ in range(3):
        out = router.search(b"\xff" * (3 * 1024 * 1024 + 1), 5)  # too big for Yandex
        assert out.error.kind == "rejected"
    assert router.status()["breakers"]["yandex"] == "closed" and yandex.fake.count == 0


# -- cache ------------------------------------------------------------------------------


def test_cache_hit_skips_the_network(yandex: Setup, image: bytes, other_image: bytes) -> None:
    clock = FakeClock()
    router = make_router(yandex, clock=clock, cache_ttl_s=60)
    first = router.search(image, 5)
    assert not first.from_cache and yandex.fake.count == 1
    second = router.search(image, 5)
    assert second.from_cache and yandex.fake.count == 1
    assert [h.id for h in second.hits] == [h.id for h in first.hits]
    router.search(image, 3)  # top_k is part of the key
    router.search(other_image, 5)  # so is the image
    assert yandex.fake.count == 3
    clock.t += 61  # TTL passed
    assert not router.search(image, 5).from_cache and yandex.fake.count == 4


def test_cache_is_bounded_lru(yandex: Setup, image: bytes, other_image: bytes) -> None:
    router = make_router(yandex, cache_size=1)
    router.search(image, 5)
    router.search(other_image, 5)  # evicts the first
    assert router.search(other_image, 5).from_cache
    assert not router.search(image, 5).from_cache
    assert yandex.fake.count == 3


def test_failures_are_not_cached(yandex: Setup, image: bytes) -> None:
    router = make_router(yandex, max_attempts=1)
    yandex.fake.queue("500")
    assert router.search(image, 5).error is not None
    out = router.search(image, 5)
    assert out.error is None and not out.from_cache and yandex.fake.count == 2


# -- privacy / switches -----------------------------------------------------------------


def test_disabled_fallback_sends_nothing(yandex: Setup, image: bytes) -> None:
    cfg = FallbackConfig(enabled=False, order=("yandex",), yandex=yandex.section)
    router = FallbackRouter(cfg, environ=yandex.environ)
    out = router.search(image, 5, local_best_score=None)
    assert out.skipped == "disabled" and out.hits == [] and out.error is None
    assert not router.should_ask(None)
    assert yandex.fake.count == 0


def test_provider_switch_off_sends_nothing(yandex: Setup, image: bytes) -> None:
    section = yandex.section.model_copy(update={"enabled": False})
    cfg = FallbackConfig(enabled=True, order=("yandex",), yandex=section)
    out = FallbackRouter(cfg, environ=yandex.environ).search(image, 5)
    assert out.skipped == "no_provider" and yandex.fake.count == 0


def test_strong_local_answer_sends_nothing(yandex: Setup, image: bytes) -> None:
    router = make_router(yandex, threshold=0.6)
    assert router.search(image, 5, local_best_score=0.61).skipped == "local_strong"
    assert yandex.fake.count == 0
    assert router.should_ask(0.59) and router.should_ask(None)
    assert router.search(image, 5, local_best_score=0.59).ok
    assert yandex.fake.count == 1


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "lensbox.fallback" and r.levelno == logging.INFO
    ]


def test_one_info_line_per_image_sent(
    yandex: Setup, image: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lensbox.fallback")
    router = make_router(yandex)
    yandex.fake.queue("500")  # one retry: still one image, one INFO line
    assert router.search(image, 5).ok
    lines = info_lines(caplog)
    assert len(lines) == 1 and yandex.fake.count == 2
    assert "yandex" in lines[0] and f"{len(image)} bytes" in lines[0]
    assert hashlib.sha256(image).hexdigest()[:12] in lines[0]
    router.search(image, 5)  # cache hit: nothing sent, nothing logged
    router.search(image, 5, local_best_score=0.99)  # strong local: nothing sent
    assert len(info_lines(caplog)) == 1


@pytest.mark.parametrize(
    "name,auth", [(p, None) for p in PROVIDERS] + [("yandex", "iam_token"), ("huawei", "token")]
)
def test_secrets_never_in_logs_or_errors(
    name: str, auth: str | None, image: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    for wrong in (True, False):
        s = provider_setup(name, wrong=wrong, auth=auth)
        s.fake.echo_secret = True  # the fake quotes the credential it refused
        try:
            router = make_router(s, max_attempts=2)
            for mode in ("ok", "401", "429", "500", "malformed", "drop"):
                s.fake.queue(mode, mode)
                out = router.search(image, 3, deadline=time.monotonic() + 2)
                router.cache.clear()
                for err in out.errors:
                    texts += [str(err), repr(err), str(err.to_dict()), err.message]
                texts.append(str(out.to_dict()))
        finally:
            s.fake.stop()
    texts.append(caplog.text)
    blob = "\n".join(texts)
    assert "auth" in blob  # the wrong-secret runs did produce auth errors
    for secret in [*SECRETS.values(), WRONG]:
        assert secret not in blob


def test_on_error_decides_whether_to_surface(yandex: Setup, image: bytes) -> None:
    yandex.fake.default_mode = "401"
    strict = make_router(yandex, on_error="error")
    lenient = make_router(yandex, on_error="local_only")
    out = strict.search(image, 5)
    assert out.error.kind == "auth" and strict.should_fail(out)
    assert not lenient.should_fail(lenient.search(image, 5))


def test_router_merge_applies_configured_policy(yandex: Setup, image: bytes) -> None:
    router = make_router(yandex, threshold=0.5, policy="local_then_cloud")
    local = [Hit(0, "local-1", 0.3, {"id": "local-1", "source": "a.jpg"})]
    out = router.search(image, 4, local_best_score=0.3)
    merged = router.merge(local, out, top_k=3)
    assert [h.source for h in merged] == ["local", "cloud:yandex", "cloud:yandex"]
    assert merged[1].id == out.hits[0].id and merged[1].row is None


def test_misconfigured_credential_sends_nothing(yandex: Setup, image: bytes) -> None:
    cfg = FallbackConfig(enabled=True, order=("yandex",), yandex=yandex.section)
    out = FallbackRouter(cfg, environ={}).search(image, 5)
    assert out.error.kind == "misconfigured" and yandex.fake.count == 0


def test_cloud_error_is_an_exception_with_kind() -> None:
    err = CloudError("throttled", "alibaba", "slow down", http_status=403, code="DeniedRequest")
    assert err.retryable and "DeniedRequest" in str(err) and err.to_dict()["http_status"] == 403
