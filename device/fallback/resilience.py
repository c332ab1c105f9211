"""Circuit breaker, answer cache and backoff: what keeps an often-offline box responsive.

All three take an injectable ``clock`` (seconds, monotonic) so their behaviour is tested
without sleeping; all are thread-safe (the router calls providers from worker threads).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Literal

from lensbox.device.fallback.base import CloudHit

Clock = Callable[[], float]
BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Per provider: after ``failures`` consecutive failures stop calling for ``cooldown``
    seconds (state open: calls are refused at once, nothing is sent); then let exactly one
    trial call through (half-open); its success closes the breaker, its failure re-opens
    it for another cool-down."""

    def __init__(self, failures: int, cooldown: float, clock: Clock = time.monotonic) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now?  In half-open, only the first caller gets a yes."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self.threshold:
                self._opened_at = self.clock()
            self._trial_running = False

    def release(self) -> None:
        """An allowed call that sent nothing (e.g. missing credential): free the half-open
        trial slot without judging the provider."""
        with self._lock:
            self._trial_running = False

    def retry_in(self) -> float:
        """Seconds until half-open (0 when not open)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown - (self.clock() - self._opened_at))


def image_key(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


@dataclass
class _Entry:
    hits: list[CloudHit]
    stored_at: float


class AnswerCache:
    """Bounded LRU of cloud answers keyed by (sha256 of the image, provider, top_k), each
    kept ``ttl`` seconds: the same photo asked twice costs one cloud call."""

    def __init__(self, size: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[tuple[str, str, int], _Entry] = OrderedDict()

    def get(self, digest: str, provider: str, top_k: int) -> list[CloudHit] | None:
        key = (digest, provider, top_k)
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if self.clock() - entry.stored_at > self.ttl:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return list(entry.hits)

    def put(self, digest: str, provider: str, top_k: int, hits: list[CloudHit]) -> None:
        if self.size <= 0 or self.ttl <= 0:
            return
        key = (digest, provider, top_k)
        with self._lock:
            self._data[key] = _Entry(list(hits), self.clock())
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n (1-based) waits a uniform draw in
    [d/2, d], d = min(max_delay, base * 2**(n-1)); a provider's Retry-After raises it."""

    base: float = 0.2
    max_delay: float = 2.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        d = min(self.max_delay, self.base * (2 ** max(0, attempt - 1)))
        wait = rng.uniform(d / 2, d) if d > 0 else 0.0
        return max(wait, retry_after or 0.0)
