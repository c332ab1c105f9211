"""Per-client rate limiting (token bucket) and the base64 size pre-check.

The bucket is keyed by the client's credential when it sends one, else by its address, so
one noisy camera cannot starve the others. Buckets are kept in a bounded LRU.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
import time
from collections import OrderedDict

from lensbox.device.api.errors import ApiError

MAX_CLIENTS = 10_000


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """``rate`` requests per second sustained, ``burst`` at once, per client key."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str) -> None:
        """Raise ``throttled`` (with the wait in the message) when ``key`` is over its rate."""
        if not self.enabled:
            return
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
                while len(self._buckets) > MAX_CLIENTS:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(key)
            wait = bucket.take(now)
        if wait > 0:
            err = ApiError(
                "throttled",
                f"too many requests: at most {self.rate:g}/s (burst {self.burst}); "
                f"retry in {wait:.1f} s",
            )
            err.retry_after = max(1, math.ceil(wait))
            raise err


_DATA_URI = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Strict base64 (a ``data:`` URI prefix and line breaks allowed), size-checked from
    the text length *before* decoding so an oversized upload costs no memory."""
    if not isinstance(text, str):
        raise ApiError("bad_base64", "the image must be a base64 string")
    text = _WHITESPACE.sub("", _DATA_URI.sub("", text.strip()))
    if not text:
        raise ApiError("empty_image", "the image is empty")
    if len(text) > 4 * math.ceil(max_bytes / 3) + 4:
        raise ApiError(
            "too_many_bytes",
            f"the image is about {len(text) * 3 // 4} bytes, over the limit of {max_bytes}",
        )
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        try:
            data = base64.b64decode(text, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("bad_base64", f"the image is not valid base64 ({exc})") from exc
    if len(data) > max_bytes:
        raise ApiError(
            "too_many_bytes", f"the image is {len(data)} bytes, over the limit of {max_bytes}"
        )
    return data
