"""The kiosk loop: a trigger comes in, a fresh frame is judged and searched, an answer goes out.

One :class:`KioskLoop` owns the camera grabber, the optional serial line, the motion and
interval triggers and the webhook. Anything else (the HTTP blueprint, a test, the bench)
calls :meth:`KioskLoop.trigger`, which is thread-safe:

* **debounce** — a trigger within ``debounce_ms`` of the one that started a lookup gets that
  lookup's answer (a bouncing button or a chatty sensor costs one lookup, every request
  still gets exactly one answer);
* **min gap** — a new lookup starts no sooner than ``min_gap_ms`` after the previous one
  ended; an explicit request earlier than that is answered BUSY with the wait, an automatic
  (motion / interval) trigger is simply skipped;
* lookups never overlap: a request arriving during one waits for it to finish.

Lookups search a catalog (:class:`~lensbox.device.live.catalog.LiveCatalog`: the bundle as
built for ``lensbox kiosk``, the instance's live catalog in the daemon). It may be shared
with the HTTP API in the daemon, where a TFLite interpreter must never run in two threads at
once: pass either the lock the API holds around that catalog (``catalog_lock``) or
``lease``, a callable returning a context manager that yields a catalog for the duration of
one search (the daemon's instance, looked up per lookup).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensbox.device.capture.grabber import Frame, FrameGrabber
from lensbox.device.capture.motion import MotionDetector
from lensbox.device.capture.quality import assess
from lensbox.device.capture.result import LookupResult, busy, error
from lensbox.device.capture.webhook import WebhookPoster
from lensbox.device.config.camera import KioskConfig

log = logging.getLogger("lensbox.capture.kiosk")


@dataclass
class _Pending:
    lookup_id: int
    accepted_at: float
    done: threading.Event
    result: LookupResult | None = None


@dataclass
class _Outcome:
    """A finished lookup before it is tagged for a caller."""

    status: str
    fields: dict[str, Any]
    frame: np.ndarray | None = None


class KioskLoop:
    """Camera + catalog + triggers. ``start()`` it, ``trigger()`` it, ``stop()`` it."""

    def __init__(
        self,
        catalog: Any,
        grabber: FrameGrabber,
        cfg: KioskConfig,
        *,
        catalog_lock: threading.Lock | None = None,
        lease: Callable[[], AbstractContextManager[Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self._lease = lease
        self.grabber = grabber
        self.cfg = cfg
        self._catalog_lock = catalog_lock or threading.Lock()
        self._clock = clock
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        self._inflight: _Pending | None = None
        self._previous: _Pending | None = None
        self._last_done_at = float("-inf")
        self._last: LookupResult | None = None
        self._last_frame: np.ndarray | None = None
        self._jpeg: tuple[int, bytes] | None = None
        self._lookups = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.webhook = (
            WebhookPoster(cfg.webhook_url, cfg.webhook_timeout_seconds) if cfg.webhook_url else None
        )
        self.serial = None
        if cfg.serial.port:
            from lensbox.device.capture.serial_frontend import SerialFrontend

            self.serial = SerialFrontend(cfg.serial, self)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> KioskLoop:
        self._stop.clear()
        if self.cfg.max_frame_age_ms > 0:
            self.grabber.decode_always = True  # a recent frame must exist to be reused
        self.grabber.start()
        if self.webhook:
            self.webhook.start()
        if self.serial:
            self.serial.start()
        trig = self.cfg.trigger
        if trig.motion:
            self._spawn(self._motion_loop, "kiosk-motion")
        if trig.interval_seconds > 0:
            self._spawn(self._interval_loop, "kiosk-interval")
        log.info(
            "kiosk ready: camera %s, serial %s, motion %s, interval %s",
            self.grabber.spec.describe(),
            self.cfg.serial.port or "off",
            "on" if trig.motion else "off",
            f"{trig.interval_seconds:g} s" if trig.interval_seconds else "off",
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(3.0)
        self._threads = []
        if self.serial:
            self.serial.stop()
        if self.webhook:
            self.webhook.stop()
        self.grabber.stop()

    def __enter__(self) -> KioskLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def swap_catalog(self, catalog: Any) -> None:
        """Search a newly deployed bundle from the next lookup on (the running one finishes
        on the old catalog)."""
        with self._catalog_lock:
            self.catalog = catalog

    # -- what the API mounts -----------------------------------------------------------
    def last(self) -> LookupResult | None:
        return self._last

    def last_frame_jpeg(self) -> bytes | None:
        """JPEG of the frame the last lookup judged (encoded on first request, then cached)."""
        import cv2

        with self._cv:
            last, frame, cached = self._last, self._last_frame, self._jpeg
        if last is None or frame is None:
            return None
        if cached is not None and cached[0] == last.lookup_id:
            return cached[1]
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            return None
        data = buf.tobytes()
        with self._cv:
            if self._last is last:
                self._jpeg = (last.lookup_id, data)
        return data

    def health(self) -> dict[str, Any]:
        last = self._last
        return {
            "camera": self.grabber.health(),
            "serial": self.serial.health() if self.serial else None,
            "webhook": self.webhook.health() if self.webhook else None,
            "lookups": self._lookups,
            "last": None
            if last is None
            else {"status": last.status, "line": last.line(), "source": last.source},
        }

    # -- triggering --------------------------------------------------------------------
    def trigger(
        self,
        source: str = "http",
        tag: str | None = None,
        at: float | None = None,
        wait: bool = True,
    ) -> LookupResult:
        """Run (or join) a lookup for a trigger that happened at ``at`` (monotonic; now).

        ``wait=False`` is for automatic triggers: rather than wait for a running lookup or
        the min gap, return a BUSY result at once and do nothing.
        """
        at = self._clock() if at is None else at
        debounce = self.cfg.trigger.debounce_ms / 1000.0
        gap = self.cfg.trigger.min_gap_ms / 1000.0
        joined: _Pending | None
        with self._cv:
            while True:
                if self._stop.is_set():
                    return error(source, tag, "stopping", "kiosk is shutting down")
                pend = self._inflight or self._previous
                if pend is not None and at - pend.accepted_at <= debounce:
                    if not wait:
                        return busy(source, tag, debounce * 1000)
                    joined = pend
                    break
                if self._inflight is not None:
                    if not wait:
                        return busy(source, tag, gap * 1000)
                    self._cv.wait(0.25)
                    continue
                since = self._clock() - self._last_done_at
                if since < gap:
                    return busy(source, tag, (gap - since) * 1000)
                joined = None
                pend = _Pending(next(self._ids), at, threading.Event())
                self._inflight = pend
                break
        if joined is not None:
            joined.done.wait()
            assert joined.result is not None
            return joined.result.retagged(source, tag)
        return self._run_lookup(pend, source, tag)

    def _run_lookup(self, pend: _Pending, source: str, tag: str | None) -> LookupResult:
        t0 = self._clock()
        try:
            outcome = self._lookup(pend)
        except Exception as exc:  # the loop must survive anything one frame can cause
            log.exception("lookup %d failed", pend.lookup_id)
            outcome = _Outcome("error", {"reason": "internal", "message": type(exc).__name__})
        timings = outcome.fields.pop("timings", {})
        timings["total_ms"] = (self._clock() - pend.accepted_at) * 1e3
        timings["lookup_ms"] = (self._clock() - t0) * 1e3
        result = LookupResult(
            outcome.status, source, tag, pend.lookup_id, timings=timings, **outcome.fields
        )
        with self._cv:
            pend.result = result
            self._inflight, self._previous = None, pend
            self._last_done_at = self._clock()
            self._last, self._lookups = result, self._lookups + 1
            self._last_frame = outcome.frame
            self._cv.notify_all()
        pend.done.set()
        log.info(
            "lookup %d (%s%s): %s in %.0f ms",
            pend.lookup_id,
            source,
            f" {tag}" if tag else "",
            result.line(),
            timings["total_ms"],
        )
        if self.webhook:
            self.webhook.post(result.to_json())
        return result

    # -- one lookup --------------------------------------------------------------------
    def _lookup(self, pend: _Pending) -> _Outcome:
        cfg = self.cfg
        timings = {"wait_ms": 0.0, "quality_ms": 0.0, "embed_ms": 0.0, "search_ms": 0.0}
        if not self.grabber.connected:
            return _retake("nocamera", timings)
        newer_than = pend.accepted_at - cfg.max_frame_age_ms / 1000.0
        seq = -1
        tops: list[tuple[str | None, float, str | None]] = []
        search = frame = quality = None
        for _ in range(cfg.stable_frames):
            t = self._clock()
            frame = self.grabber.wait_frame(newer_than, seq, cfg.frame_timeout_ms / 1000.0)
            timings["wait_ms"] += (self._clock() - t) * 1e3
            if frame is None:
                return _retake("stale" if self.grabber.connected else "nocamera", timings)
            seq = frame.seq
            try:
                image = self._crop(frame.bgr)
            except ValueError as exc:  # [kiosk] region does not fit this camera
                log.error("%s; fix [kiosk] region", exc)
                return _Outcome(
                    "error", {"reason": "badregion", "message": "outside_frame", "timings": timings}
                )
            t = self._clock()
            quality = assess(image, cfg.min_luminance, cfg.min_sharpness, cfg.quality_width)
            timings["quality_ms"] += (self._clock() - t) * 1e3
            if quality.verdict:
                return _retake(
                    quality.verdict,
                    timings,
                    quality.as_dict(),
                    _frame_info(frame, pend),
                    frame.bgr,
                    len(tops) + 1,
                )
            search = self._search(image, timings)
            tops.append(
                (search.hits[0].id, search.hits[0].score, search.hits[0].verdict)
                if search.hits
                else (None, 0.0, None)
            )
        assert frame is not None and quality is not None and search is not None
        fields: dict[str, Any] = {
            "hits": [_hit_json(h) for h in search.hits],
            "quality": quality.as_dict(),
            "frame": _frame_info(frame, pend),
            "frames_used": len(tops),
            "timings": timings,
        }
        status, fields2 = self._decide(tops, search)
        fields.update(fields2)
        return _Outcome(status, fields, frame.bgr)

    def _clears(self, score: float, verdict: str | None) -> bool:
        """A configured ``min_score`` wins; otherwise the bundle's calibrated verdict."""
        if self.cfg.min_score is not None:
            return score >= self.cfg.min_score
        return verdict == "match"

    def _decide(
        self, tops: list[tuple[str | None, float, str | None]], search: Any
    ) -> tuple[str, dict]:
        """All frames agree and clear the bar -> ok; nothing clears it -> nomatch;
        frames disagree about something that would have matched -> retake unstable."""
        ids = {item_id for item_id, _, _ in tops}
        scores = [score for _, score, _ in tops]
        clear = [self._clears(score, verdict) for _, score, verdict in tops]
        best = max(scores)
        if len(ids) == 1 and None not in ids and all(clear):
            top = search.hits[0]
            return "ok", {
                "item_id": top.id,
                "score": min(scores),
                "verdict": top.verdict,
                "item": dict(top.item),
            }
        if not any(clear) or ids == {None}:
            return "nomatch", {"score": best, "verdict": tops[-1][2] or "none"}
        if len(ids) == 1:  # same id, one frame under the bar: not sure enough
            return "nomatch", {"score": min(scores)}
        return "retake", {"reason": "unstable", "score": best}

    def _crop(self, bgr: np.ndarray) -> np.ndarray:
        if not self.cfg.region:
            return bgr
        from lensbox.device.embedding.subject import Box

        return Box(*self.cfg.region).crop(bgr)

    def _search(self, bgr: np.ndarray, timings: dict[str, float]) -> Any:
        import cv2

        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self._lease is not None:
            with self._lease() as catalog:
                res = catalog.search_image(rgb, top_k=self.cfg.top_k)
        else:
            with self._catalog_lock:
                res = self.catalog.search_image(rgb, top_k=self.cfg.top_k)
        timings["embed_ms"] += res.timings.get("embed_ms", 0.0)
        timings["search_ms"] += res.timings.get("search_ms", 0.0)
        return res

    # -- automatic triggers ------------------------------------------------------------
    def _auto(self, source: str) -> LookupResult | None:
        result = self.trigger(source, f"@{source}", wait=False)
        if result.status == "busy":
            return None
        if self.serial:
            self.serial.announce(result)
        return result

    def _interval_loop(self) -> None:
        every = self.cfg.trigger.interval_seconds
        while not self._stop.wait(every):
            self._auto("interval")

    def _motion_loop(self) -> None:
        trig = self.cfg.trigger
        detector = MotionDetector(
            trig.motion_width, trig.motion_threshold, trig.motion_min_area, trig.motion_settle_ms
        )
        period = 1.0 / trig.motion_fps
        seq, generation = -1, None
        while not self._stop.wait(period):
            frame: Frame | None = self.grabber.wait_frame(after_seq=seq, timeout=1.0)
            if frame is None:
                continue
            if frame.generation != generation:
                detector.reset()
                generation = frame.generation
            seq = frame.seq
            if detector.update(frame.bgr, frame.captured):
                log.info(
                    "motion settled (%.1f%% of pixels changed); looking up",
                    100 * detector.last_changed,
                )
                self._auto("motion")


def _retake(
    reason: str,
    timings: dict[str, float],
    quality: dict | None = None,
    frame: dict | None = None,
    bgr: np.ndarray | None = None,
    frames_used: int = 0,
) -> _Outcome:
    return _Outcome(
        "retake",
        {
            "reason": reason,
            "quality": quality,
            "frame": frame,
            "frames_used": frames_used,
            "timings": timings,
        },
        bgr,
    )


def _frame_info(frame: Frame, pend: _Pending) -> dict[str, Any]:
    h, w = frame.bgr.shape[:2]
    return {
        "seq": frame.seq,
        "generation": frame.generation,
        "width": w,
        "height": h,
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(frame.wall))
        + f".{int(frame.wall * 1000) % 1000:03d}Z",
        "after_trigger_ms": round((frame.captured - pend.accepted_at) * 1e3, 1),
    }


def _hit_json(hit: Any) -> dict[str, Any]:
    item = hit.item
    return {
        "id": hit.id,
        "score": hit.score,
        "verdict": getattr(hit, "verdict", None),
        "inliers": getattr(hit, "inliers", None),
        "title": item.get("title"),
        "page_url": item.get("page_url"),
        "category_id": item.get("category_id"),
    }
