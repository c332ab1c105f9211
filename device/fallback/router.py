"""The one entry point the HTTP layer calls: ask the cloud, within a deadline, never raise.

``FallbackRouter.search(image, top_k, local_best_score, deadline)`` decides whether to ask
(master switch, threshold, per-provider switches), tries the providers of
``fallback.order`` in turn (answer cache first, then the provider's circuit breaker), and
returns a :class:`FallbackOutcome` by the deadline whatever the network does.

Why a worker thread: socket timeouts bound every connect/send/recv, but not name resolution
(``getaddrinfo`` blocks for the resolver's own timeouts on a box whose uplink is gone).  The
call runs in a daemon thread and the caller waits at most until the deadline; a late
answer still lands in the cache and the breaker when it arrives, for the next query.

Privacy: nothing is sent unless ``fallback.enabled``; each image sent produces exactly one
INFO line (provider, byte count, sha256 prefix); retries of the same image log at DEBUG.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from lensbox.device.config.fallback import FallbackConfig
from lensbox.device.fallback.base import CloudHit, CloudProvider, make_provider
from lensbox.device.fallback.errors import CloudError
from lensbox.device.fallback.merge import cloud_hit_to_native, is_weak, merge_results
from lensbox.device.fallback.resilience import (
    AnswerCache,
    Backoff,
    CircuitBreaker,
    Clock,
    image_key,
)
from lensbox.device.search.engine import Hit

log = logging.getLogger("lensbox.fallback")

# Kinds that say nothing about the provider's health (our query, or nothing was sent).
NOT_PROVIDER_FAULT = frozenset({"rejected", "misconfigured", "circuit_open"})
# A retry is not worth starting with less time than this left.
MIN_ATTEMPT_S = 0.05


@dataclass
class FallbackOutcome:
    """What one fallback call produced.  ``error`` is set when no provider answered;
    ``skipped`` says why nothing was asked ("disabled", "local_strong", "no_provider")."""

    hits: list[CloudHit]
    provider: str | None
    error: CloudError | None
    from_cache: bool
    elapsed: float
    skipped: str | None = None
    attempts: int = 0
    errors: list[CloudError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None

    def native_hits(self) -> list[Hit]:
        return [cloud_hit_to_native(h) for h in self.hits]

    def to_dict(self) -> dict[str, Any]:
        """Summary for logs / API debug output (no hits)."""
        return {
            "provider": self.provider,
            "hits": len(self.hits),
            "from_cache": self.from_cache,
            "elapsed_ms": round(self.elapsed * 1000, 1),
            "skipped": self.skipped,
            "attempts": self.attempts,
            "error": self.error.to_dict() if self.error else None,
        }


@dataclass
class _Call:
    hits: list[CloudHit] | None = None
    error: CloudError | None = None
    attempts: int = 0


# Used when neither the config nor the bundle gives a threshold (a bundle built before
# calibration): the benchmark's precision-95% point (README, "Scores").
DEFAULT_THRESHOLD = 0.65


class FallbackRouter:
    """Cloud fallback with deadline, retries, circuit breakers and an answer cache.

    ``providers`` overrides the ones built from config (tests, or a custom provider);
    ``environ`` is where credential env vars are read (default ``os.environ``); ``clock``
    drives breaker cool-downs and cache TTLs (deadlines always use ``time.monotonic``).
    """

    def __init__(
        self,
        config: FallbackConfig,
        *,
        providers: Mapping[str, CloudProvider] | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.environ = environ
        self._providers: dict[str, CloudProvider] = dict(providers or {})
        self._lock = threading.Lock()
        self.breakers = {
            name: CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s, clock)
            for name in config.order
        }
        self.cache = AnswerCache(config.cache_size, config.cache_ttl_s, clock)
        self.backoff = Backoff(config.backoff_base_s, config.backoff_max_s)
        self._rng = rng or random.Random()
        self._sleep = sleep

    # -- decisions ---------------------------------------------------------------------

    def active_providers(self) -> list[str]:
        """Providers that may be asked now, in order (empty while fallback is disabled)."""
        if not self.config.enabled:
            return []
        return [n for n in self.config.order if self.config.provider(n).enabled]

    def threshold(self, calibrated: float | None = None) -> float:
        """The configured threshold, else the bundle's calibrated "match" threshold, else
        the benchmark's default (README, "Scores")."""
        if self.config.threshold is not None:
            return self.config.threshold
        return calibrated if calibrated is not None else DEFAULT_THRESHOLD

    def should_ask(self, local_best_score: float | None, calibrated: float | None = None) -> bool:
        """Pass ``None`` when the query names an instance the box does not hold."""
        return bool(self.active_providers()) and is_weak(
            local_best_score, self.threshold(calibrated)
        )

    def should_fail(self, outcome: FallbackOutcome) -> bool:
        """True when the caller must answer with an error (``on_error = "error"``) rather
        than the local hits."""
        return self.config.on_error == "error" and outcome.error is not None

    def merge(
        self,
        local_hits: Sequence[Any],
        outcome: FallbackOutcome,
        top_k: int,
        calibrated: float | None = None,
    ) -> list[Hit]:
        """Local + cloud hits, per ``fallback.policy``/``threshold``."""
        return merge_results(
            local_hits, outcome.hits, self.config.policy, self.threshold(calibrated), top_k
        )

    # -- the call ----------------------------------------------------------------------

    def search(
        self,
        image: bytes,
        top_k: int,
        local_best_score: float | None = None,
        deadline: float | None = None,
        calibrated: float | None = None,
    ) -> FallbackOutcome:
        """Ask the cloud if the local answer is weak.  Never raises for provider errors;
        returns by ``deadline`` (absolute ``time.monotonic()``; capped at now +
        ``fallback.timeout_s``)."""
        start = time.monotonic()
        end = start + self.config.timeout_s
        if deadline is not None:
            end = min(end, deadline)

        def done(**kw: Any) -> FallbackOutcome:
            kw.setdefault("hits", [])
            kw.setdefault("provider", None)
            kw.setdefault("error", None)
            kw.setdefault("from_cache", False)
            return FallbackOutcome(elapsed=time.monotonic() - start, **kw)

        if not self.config.enabled:
            return done(skipped="disabled")
        names = self.active_providers()
        if not names:
            return done(skipped="no_provider")
        if not is_weak(local_best_score, self.threshold(calibrated)):
            return done(skipped="local_strong")

        digest = image_key(image)
        errors: list[CloudError] = []
        attempts = 0
        for name in names:
            cached = self.cache.get(digest, name, top_k)
            if cached is not None:
                return done(hits=cached, provider=name, from_cache=True, errors=errors)
            if time.monotonic() >= end:
                errors.append(CloudError("timeout", name, "deadline passed before asking"))
                break
            call = self._ask(name, image, digest, top_k, end)
            attempts += call.attempts
            if call.hits is not None:
                return done(hits=call.hits, provider=name, attempts=attempts, errors=errors)
            assert call.error is not None
            errors.append(call.error)
            log.warning("cloud fallback: %s", call.error)
        last = errors[-1]
        return done(provider=last.provider, error=last, attempts=attempts, errors=errors)

    def _provider(self, name: str) -> CloudProvider:
        with self._lock:
            if name not in self._providers:
                self._providers[name] = make_provider(
                    name,
                    self.config.provider(name),
                    environ=self.environ,
                    max_response_bytes=self.config.max_response_bytes,
                    attempt_timeout=self.config.attempt_timeout_s,
                )
            return self._providers[name]

    def _ask(self, name: str, image: bytes, digest: str, top_k: int, end: float) -> _Call:
        """One provider, in a worker thread, waited for until ``end`` at the latest."""
        try:
            provider = self._provider(name)
            provider.check_image(image)
            provider.check_ready()
        except CloudError as err:
            return _Call(error=err)  # nothing was sent
        breaker = self.breakers[name]
        if not breaker.allow():
            wait = breaker.retry_in()
            return _Call(
                error=CloudError(
                    "circuit_open", name, f"skipped after repeated failures; retry in {wait:.0f} s"
                )
            )
        result = _Call()
        finished = threading.Event()

        def work() -> None:
            try:
                self._run(provider, name, image, digest, top_k, end, breaker, result)
            finally:
                finished.set()

        log.info(
            "cloud fallback: sending query image to %s (%d bytes, sha256 %s)",
            name,
            len(image),
            digest[:12],
        )
        threading.Thread(target=work, name=f"lensbox-fallback-{name}", daemon=True).start()
        if finished.wait(max(0.0, end - time.monotonic())):
            return result
        return _Call(
            error=CloudError("timeout", name, "no answer within the deadline"),
            attempts=max(1, result.attempts),
        )

    def _run(
        self,
        provider: CloudProvider,
        name: str,
        image: bytes,
        digest: str,
        top_k: int,
        end: float,
        breaker: CircuitBreaker,
        result: _Call,
    ) -> None:
        """Attempts with backoff (worker thread); records breaker and cache outcomes."""
        while True:
            result.attempts += 1
            try:
                hits = provider.search(image, top_k, end)
            except CloudError as err:
                failure = err
            except Exception as exc:  # a provider bug must not crash the caller
                failure = CloudError(
                    "bad_response", name, f"unexpected client error ({type(exc).__name__})"
                )
            else:
                breaker.record_success()
                self.cache.put(digest, name, top_k, hits)
                result.hits = hits
                return
            result.error = failure
            if self._should_retry(failure, result.attempts, end):
                delay = self.backoff.delay(result.attempts, self._rng, failure.retry_after)
                log.debug(
                    "cloud fallback: %s attempt %d failed (%s); retrying in %.2f s",
                    name,
                    result.attempts,
                    failure.kind,
                    delay,
                )
                self._sleep(delay)
                continue
            if failure.kind in NOT_PROVIDER_FAULT:
                if failure.kind == "rejected":
                    breaker.record_success()  # it answered; the query was the problem
                else:
                    breaker.release()
            else:
                breaker.record_failure()
            return

    def _should_retry(self, err: CloudError, attempts: int, end: float) -> bool:
        if not err.retryable or attempts >= self.config.max_attempts:
            return False
        # Only within the deadline: the jittered delay is at most the nominal one.
        nominal = min(self.backoff.max_delay, self.backoff.base * (2 ** max(0, attempts - 1)))
        wait = max(nominal, err.retry_after or 0.0)
        return time.monotonic() + wait + MIN_ATTEMPT_S < end

    # -- introspection -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For /health: switches, breaker states, cache size (never credentials)."""
        return {
            "enabled": self.config.enabled,
            "order": list(self.config.order),
            "active": self.active_providers(),
            "breakers": {n: b.state for n, b in self.breakers.items()},
            "cache_entries": len(self.cache),
        }
