"""The serial side of the kiosk: requests in, one answer line per request out, in order.

The reader thread (in :class:`SerialLink`) only timestamps and queues lines, so a bouncing
button's second line is seen — and debounced — at the time it really arrived, even while a
lookup is running. One dispatcher thread answers the queue in order, so a client that
sends untagged requests can pair answers with requests by position.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from lensbox.device.capture.protocol import answer, parse_request
from lensbox.device.capture.result import LookupResult
from lensbox.device.capture.serial_link import LineEvent, RateLimitedLog, SerialLink
from lensbox.device.config.camera import SerialConfig

if TYPE_CHECKING:
    from lensbox.device.capture.kiosk import KioskLoop

log = logging.getLogger("lensbox.capture.serial")

QUEUE_MAX = 16


class SerialFrontend:
    def __init__(self, cfg: SerialConfig, loop: KioskLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.link = SerialLink(cfg, self._on_line)
        self._queue: queue.Queue[LineEvent | None] = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._bad = RateLimitedLog(log)

    def start(self) -> SerialFrontend:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._dispatch, name="serial-answer", daemon=True
            )
            self._thread.start()
        self.link.start()
        return self

    def stop(self) -> None:
        self.link.stop()
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
            self._thread.join(3.0)
            self._thread = None

    def health(self) -> dict[str, Any]:
        return {**self.link.health(), "queued": self._queue.qsize()}

    def announce(self, result: LookupResult) -> None:
        """Answers to motion / interval lookups, written when ``announce`` asks for them."""
        if self.cfg.announce == "all" or (self.cfg.announce == "matches" and result.status == "ok"):
            self.link.send(result.line())

    # -- reader thread -----------------------------------------------------------------
    def _on_line(self, event: LineEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:  # flooded: say so now rather than queue without bound
            req = parse_request(event.text, self.cfg.token) if event.text else None
            tag = req.tag if req is not None else None
            self.link.send(answer("BUSY", tag, str(self.loop.cfg.trigger.min_gap_ms or 100)))

    # -- dispatcher thread -------------------------------------------------------------
    def _dispatch(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                line = self.respond(event)
            except Exception:  # never let one request kill the line
                log.exception("serial request failed")
                line = answer("ERR", None, "internal", "see_log")
            if line is not None:
                self.link.send(line)

    def respond(self, event: LineEvent) -> str | None:
        """The answer line for one request line (None: blank line, no answer)."""
        if event.error:
            return answer("ERR", None, event.error, event.detail)
        assert event.text is not None
        req = parse_request(event.text, self.cfg.token)
        if req is None:
            return None
        if req.kind == "error":
            self._bad.warning("bad serial request %r: %s", event.text[:40], req.code)
            return answer("ERR", req.tag, req.code, req.detail)
        if req.kind == "ping":
            return answer("PONG", req.tag)
        if req.kind == "status":
            cam = self.loop.grabber.health()
            age = cam["last_frame_age_s"]
            return answer(
                "STATUS", req.tag, cam["state"], "-" if age is None else str(int(age * 1000))
            )
        return self.loop.trigger("serial", req.tag, at=event.at).line()
