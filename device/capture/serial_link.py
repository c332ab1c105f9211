"""The serial port: open it, keep it open, read whole lines, write answers.

USB-serial adapters get unplugged, microcontrollers reset, cables are wired at the wrong
baud. None of that may end the kiosk: any SerialException/OSError closes the port and it is
reopened with exponential backoff (the path may be a udev symlink such as
/dev/serial/by-id/..., which is what to configure so a re-plugged adapter is found again).
Bytes become lines in :class:`LineSplitter`; undecodable lines are reported, not trusted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lensbox.device.capture.protocol import LineSplitter, TooLong, decode_line
from lensbox.device.config.camera import SerialConfig

log = logging.getLogger("lensbox.capture.serial")

READ_TIMEOUT_S = 0.1
WRITE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class LineEvent:
    """A complete line (``text``) or why it could not be used (``error`` code + detail)."""

    at: float  # monotonic time the line's last byte was read
    text: str | None = None
    error: str = ""
    detail: str = ""


class RateLimitedLog:
    """Wrong baud produces a bad line every few ms; log the first, then a count every 10 s."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger, self.every = logger, every_s
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            extra = f" ({self._suppressed} more since last report)" if self._suppressed else ""
            self.logger.warning(msg + extra, *args)
            self._last, self._suppressed = now, 0
        else:
            self._suppressed += 1


class SerialLink:
    """Reads lines on its own thread and hands each to ``on_line``; ``send`` writes one."""

    def __init__(
        self,
        cfg: SerialConfig,
        on_line: Callable[[LineEvent], None],
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_line = on_line
        self._on_open = on_open
        self._clock = clock
        self._port: Any = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._broken = False
        self._opens = 0
        self._error = ""
        self._bad = RateLimitedLog(log)
        self.stats = {"lines": 0, "bad_lines": 0, "too_long": 0, "sent": 0, "send_failed": 0}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> SerialLink:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="serial-read", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()

    @property
    def connected(self) -> bool:
        return self._port is not None and not self._broken

    def health(self) -> dict[str, Any]:
        return {
            "port": self.cfg.port,
            "baud": self.cfg.baud,
            "connected": self.connected,
            "opens": self._opens,
            "error": self._error,
            **self.stats,
        }

    # -- writing -----------------------------------------------------------------------
    def send(self, text: str) -> bool:
        """Write one answer line; False (and a reconnect) if the port is gone."""
        with self._write_lock:
            port = self._port
            if port is None or self._broken:
                self.stats["send_failed"] += 1
                log.info("serial port not open; answer dropped: %s", text)
                return False
            try:
                port.write(text.encode("ascii", "replace") + b"\n")
                port.flush()
            except Exception as exc:  # SerialException, SerialTimeoutException, OSError
                self.stats["send_failed"] += 1
                self._broken = True
                self._error = f"write failed: {exc}"
                log.warning("serial write failed (%s); reopening", exc)
                return False
            self.stats["sent"] += 1
            return True

    # -- reading -----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.cfg.reconnect_min_seconds
        while not self._stop.is_set():
            if not self._open():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_seconds)
                continue
            backoff = self.cfg.reconnect_min_seconds
            self._read_until_broken()
            self._close()
            if not self._stop.is_set():
                self._stop.wait(backoff)

    def _open(self) -> bool:
        import serial

        try:
            port = serial.Serial(
                self.cfg.port,
                self.cfg.baud,
                timeout=READ_TIMEOUT_S,
                write_timeout=WRITE_TIMEOUT_S,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            if str(exc) != self._error:
                log.warning("serial port %s unavailable: %s; retrying", self.cfg.port, exc)
            self._error = str(exc)
            return False
        with self._write_lock:
            self._port, self._broken = port, False
        self._opens += 1
        self._error = ""
        log.info(
            "serial port %s open at %d baud%s",
            self.cfg.port,
            self.cfg.baud,
            " (reopened)" if self._opens > 1 else "",
        )
        if self._on_open is not None:
            self._on_open()
        return True

    def _close(self) -> None:
        with self._write_lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # closing a vanished device may fail too
                log.debug("closing serial port: %s", exc)

    def _read_until_broken(self) -> None:
        import serial

        splitter = LineSplitter(self.cfg.max_line)
        port = self._port
        while not self._stop.is_set() and not self._broken:
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                self._error = f"read failed: {exc}"
                log.warning("serial port %s lost (%s); reopening", self.cfg.port, exc)
                return
            if data:
                now = self._clock()
                for piece in splitter.feed(data):
                    self._emit(piece, now)

    def _emit(self, piece: bytes | TooLong, now: float) -> None:
        if isinstance(piece, TooLong):
            self.stats["too_long"] += 1
            self._bad.warning("serial line longer than %d bytes dropped", self.cfg.max_line)
            event = LineEvent(now, error="toolong", detail=f"max={self.cfg.max_line}")
        else:
            text, why = decode_line(piece)
            if text is None:
                self.stats["bad_lines"] += 1
                self._bad.warning(
                    "unreadable serial line (%s, %d bytes: %r) — wrong baud?",
                    why,
                    len(piece),
                    piece[:16],
                )
                event = LineEvent(now, error="badline", detail=why)
            else:
                self.stats["lines"] += 1
                event = LineEvent(now, text=text)
        try:
            self._on_line(event)
        except Exception:  # a handler bug must not stop the reader
            log.exception("serial line handler failed")
