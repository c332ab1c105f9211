"""What one lookup produced: the serial answer line and the JSON the webhook / API sends."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from lensbox.device.capture.protocol import answer, quote_id

STATUSES = ("ok", "nomatch", "retake", "busy", "error")


@dataclass(frozen=True)
class LookupResult:
    """One answer. ``status``: ok | nomatch | retake | busy | error.

    ``score`` is the top hit's score for ok and the best score seen for nomatch; ``reason``
    is the RETAKE reason or the ERR code. ``coalesced`` marks a trigger that arrived within
    the debounce window of another and shares its lookup (same ``lookup_id``).
    """

    status: str
    source: str
    tag: str | None = None
    lookup_id: int = 0
    item_id: str | None = None
    score: float | None = None
    verdict: str | None = None  # the top hit's: match | weak | none (see the bundle's calibration)
    reason: str | None = None
    message: str = ""
    retry_ms: int | None = None
    hits: list[dict[str, Any]] = field(default_factory=list)
    item: dict[str, Any] | None = None
    quality: dict[str, float] | None = None
    frame: dict[str, Any] | None = None
    frames_used: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    coalesced: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")

    def line(self) -> str:
        """The answer on the serial line, without the newline (see PROTOCOL.md)."""
        tag = self.tag
        if self.status == "ok":
            return answer("OK", tag, quote_id(self.item_id or ""), f"{self.score or 0.0:.3f}")
        if self.status == "nomatch":
            return answer("NOMATCH", tag, f"{self.score or 0.0:.3f}")
        if self.status == "retake":
            return answer("RETAKE", tag, self.reason or "stale")
        if self.status == "busy":
            return answer("BUSY", tag, str(self.retry_ms or 0))
        return answer("ERR", tag, self.reason or "internal", self.message or "-")

    def retagged(self, source: str, tag: str | None) -> LookupResult:
        """The same lookup answered to another (debounced) trigger."""
        return dataclasses.replace(self, source=source, tag=tag, coalesced=True)

    def to_json(self) -> dict[str, Any]:
        """Full result for the webhook, `POST /v1/trigger` and `GET /v1/last`."""
        out = dataclasses.asdict(self)
        out["line"] = self.line()
        out["at"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.at)) + (
            f".{int(self.at * 1000) % 1000:03d}Z"
        )
        out["timings"] = {k: round(v, 2) for k, v in self.timings.items()}
        return out


def busy(source: str, tag: str | None, retry_ms: float) -> LookupResult:
    return LookupResult("busy", source, tag, retry_ms=max(1, int(retry_ms + 0.999)))


def error(source: str, tag: str | None, code: str, message: str) -> LookupResult:
    return LookupResult("error", source, tag, reason=code, message=message)
