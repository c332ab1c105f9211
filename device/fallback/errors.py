"""One typed error for everything a cloud call can go wrong with.

The HTTP layer maps ``kind`` onto the caller's contract (or answers local-only, per
``fallback.on_error``); the router uses ``retryable`` to decide whether a retry can help.
Messages are built from our own words plus the provider's error code and a trimmed,
redacted provider message: never from request headers, so a credential cannot leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

ErrorKind = Literal[
    "auth",  # 401/403 or the provider's credential/signature error: fix the credential
    "throttled",  # 429 or the provider's flow-control error: back off
    "unavailable",  # 5xx, dropped connection, TLS failure: try later
    "bad_response",  # the reply is not what the documentation shows (malformed JSON...)
    "timeout",  # the deadline passed before an answer came back
    "offline",  # connection refused, DNS failure, no route: the box has no network
    "rejected",  # the provider refused this query (bad image, bad parameter): do not retry
    "circuit_open",  # too many recent failures: nothing was sent
    "misconfigured",  # missing credential or setting: nothing was sent
]

RETRYABLE: frozenset[str] = frozenset({"throttled", "unavailable", "timeout"})

MAX_PROVIDER_TEXT = 200


class CloudError(Exception):
    """A failed cloud call, typed by what the caller should do about it."""

    def __init__(
        self,
        kind: ErrorKind,
        provider: str,
        message: str,
        http_status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.provider = provider
        self.message = message
        self.http_status = http_status
        self.code = code
        self.retry_after = retry_after
        self.retryable = kind in RETRYABLE if retryable is None else retryable

    def __str__(self) -> str:
        status = f" (HTTP {self.http_status})" if self.http_status else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{self.provider}: {self.kind}{status}{code}: {self.message}"

    def __repr__(self) -> str:
        return f"CloudError({self.kind!r}, {self.provider!r}, http_status={self.http_status})"

    def to_dict(self) -> dict:
        """JSON-friendly form for logs, /health and API error bodies."""
        return {
            "kind": self.kind,
            "provider": self.provider,
            "http_status": self.http_status,
            "code": self.code,
            "message": self.message,
        }


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret from text a provider sent back (some echo the key they refused),
    and trim it: a provider message is a hint, not a payload."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    out = " ".join(out.split())
    return out[:MAX_PROVIDER_TEXT] + ("…" if len(out) > MAX_PROVIDER_TEXT else "")


def kind_for_status(status: int) -> ErrorKind:
    """Generic HTTP status -> kind; providers override with their own error codes."""
    if status in (401, 403, 407):
        return "auth"
    if status == 429:
        return "throttled"
    if status in (408, 504):
        return "timeout"
    if status >= 500:
        return "unavailable"
    return "rejected"
