"""A background thread that keeps the camera drained so a trigger always sees a fresh frame.

Cameras queue frames (V4L2 buffers, stream jitter buffers). If nobody reads them, the
"next" frame after a trigger is seconds old. The grabber calls ``grab()`` continuously —
cheap, no colour conversion — and decodes (``retrieve()``) only while someone is waiting for
a frame, so an idle kiosk spends almost no CPU and a trigger gets the first frame captured
after it. A video file is paced at its own FPS and looped, so it behaves like a camera.

The camera may vanish (USB unplugged, stream down, file not there yet): the grabber releases
it and reopens with exponential backoff. A watchdog thread notices when no frame has arrived
for ``stall_seconds`` — even if ``grab()`` itself hangs — and says so in the log and health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensbox.device.capture.source import file_fps, open_capture, parse_source
from lensbox.device.config.camera import CameraConfig

log = logging.getLogger("lensbox.capture.camera")

READ_FAILURES_BEFORE_RECONNECT = 3


@dataclass(frozen=True)
class Frame:
    """A decoded BGR frame; ``captured`` is monotonic seconds when its grab returned."""

    seq: int
    bgr: np.ndarray
    captured: float
    wall: float
    generation: int  # increments on every (re)connection

    def age(self, now: float) -> float:
        return now - self.captured


class FrameGrabber:
    """Owns one cv2.VideoCapture on its own thread; every other method is thread-safe."""

    def __init__(self, cfg: CameraConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.spec = parse_source(cfg.source, cfg.backend)
        self._clock = clock
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._latest: Frame | None = None
        self._waiters = 0
        self._state = "starting"  # starting | down | ok | ended
        self._error = ""
        self._seq = 0
        self._generation = 0
        self._grabs = 0
        self._session_grabs = 0
        self._last_grab: float | None = None
        self._opened_at: float | None = None
        self._stalled = False
        self._stalls = 0
        self._fps = 0.0
        self._down_logged = ""
        # Decode every grabbed frame, not only while someone waits: costs CPU, lets a trigger
        # use the newest frame at once (KioskConfig.max_frame_age_ms > 0 turns it on).
        self.decode_always = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FrameGrabber:
        if self._threads:
            return self
        self._stop.clear()
        for target, name in ((self._run, "camera-grab"), (self._watch, "camera-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    # -- consumers ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """The capture is open (it may still be stalled)."""
        return self._state in ("ok", "ended")

    def latest(self) -> Frame | None:
        return self._latest

    def wait_frame(
        self, newer_than: float = float("-inf"), after_seq: int = -1, timeout: float = 1.0
    ) -> Frame | None:
        """The first frame captured at/after ``newer_than`` with seq > ``after_seq``.

        Waiting is what makes the grabber decode, so call this rather than polling latest().
        None when none arrives within ``timeout`` seconds (camera stalled or gone).
        """
        deadline = self._clock() + timeout
        with self._cv:
            self._waiters += 1
            try:
                while True:
                    frame = self._latest
                    if frame is not None and frame.captured >= newer_than and frame.seq > after_seq:
                        return frame
                    left = deadline - self._clock()
                    if left <= 0 or self._stop.is_set():
                        return None
                    self._cv.wait(min(left, 0.25))
            finally:
                self._waiters -= 1

    def health(self) -> dict[str, Any]:
        now = self._clock()
        with self._cv:
            latest, last_grab = self._latest, self._last_grab
            state = self._state
            if state == "ok" and self._stalled:
                state = "stalled"
            return {
                "source": self.spec.describe(),
                "state": state,
                "connected": self.connected,
                "stalled": self._stalled,
                "stalls": self._stalls,
                "error": self._error,
                "fps": round(self._fps, 1),
                "frames": self._grabs,
                "reconnects": max(0, self._generation - 1),
                "last_frame_age_s": None if last_grab is None else round(now - last_grab, 3),
                "size": None if latest is None else [latest.bgr.shape[1], latest.bgr.shape[0]],
            }

    # -- the grab thread ---------------------------------------------------------------
    def _run(self) -> None:
        cfg = self.cfg
        backoff = cfg.reconnect_min_seconds
        while not self._stop.is_set():
            cap, why = open_capture(self.spec, cfg)
            if cap is None:
                self._went_down(why)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_seconds)
                continue
            self._opened(cap)
            try:
                reason = self._pump(cap)
            except Exception as exc:  # a backend error must not kill the thread
                reason = f"capture error: {exc}"
            finally:
                cap.release()
            if self._stop.is_set():
                break
            if self._session_grabs:
                backoff = cfg.reconnect_min_seconds
            self._went_down(reason)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, cfg.reconnect_max_seconds)
        with self._cv:
            self._state = "down"
            self._cv.notify_all()

    def _opened(self, cap: Any) -> None:
        import cv2

        with self._cv:
            self._generation += 1
            self._state, self._error, self._down_logged = "ok", "", ""
            self._session_grabs = 0
            self._opened_at = self._clock()
        size = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        verb = "reopened" if self._generation > 1 else "opened"
        log.info("camera %s: %s (%s)", verb, self.spec.describe(), size)

    def _went_down(self, reason: str) -> None:
        with self._cv:
            was = self._state
            self._state, self._error = "down", reason
            self._cv.notify_all()
        if was == "ok" or reason != self._down_logged:
            log.warning("camera unavailable: %s; retrying with backoff", reason)
            self._down_logged = reason
        else:
            log.debug("camera still unavailable: %s", reason)

    def _pump(self, cap: Any) -> str:
        """Grab until the capture fails or we are stopped; returns why it ended."""
        period = 1.0 / file_fps(cap, self.cfg) if self.spec.is_file else 0.0
        next_at = self._clock()
        failures = 0
        while not self._stop.is_set():
            if period:
                delay = next_at - self._clock()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at = max(next_at + period, self._clock() - 1.0)
            ok = cap.grab()
            if not ok and self.spec.is_file:
                if not self._session_grabs:
                    return "video file has no readable frames"
                if not self.cfg.loop:
                    return self._ended()
                ok = self._rewind(cap)
                if not ok:
                    return "video file could not be rewound"
            if not ok:
                failures += 1
                if failures >= READ_FAILURES_BEFORE_RECONNECT or not cap.isOpened():
                    return "camera read failed"
                self._stop.wait(0.05)
                continue
            failures = 0
            self._grabbed(cap)
        return "stopped"

    @staticmethod
    def _rewind(cap: Any) -> bool:
        import cv2

        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return bool(cap.grab())

    def _ended(self) -> str:
        """A non-looping video file ran out: keep its last frame, produce no new ones."""
        log.info("video file ended (camera.loop = false): %s", self.spec.target)
        with self._cv:
            self._state = "ended"
        while not self._stop.wait(0.5):
            pass
        return "stopped"

    def _grabbed(self, cap: Any) -> None:
        now = self._clock()
        with self._cv:
            if self._last_grab is not None and now > self._last_grab:
                inst = 1.0 / (now - self._last_grab)
                self._fps = inst if self._fps == 0 else 0.9 * self._fps + 0.1 * inst
            self._grabs += 1
            self._session_grabs += 1
            self._last_grab = now
            wanted = self._waiters > 0 or self.decode_always
        if not wanted:
            return
        ok, bgr = cap.retrieve()
        if not ok or bgr is None:
            return
        with self._cv:
            self._seq += 1
            self._latest = Frame(self._seq, bgr, now, time.time(), self._generation)
            self._cv.notify_all()

    # -- the watchdog thread -----------------------------------------------------------
    def _watch(self) -> None:
        """Runs apart from the grab thread because a stalled ``grab()`` may never return."""
        limit = self.cfg.stall_seconds
        while not self._stop.wait(min(0.25, limit / 4)):
            now = self._clock()
            with self._cv:
                if self._state not in ("ok", "ended"):
                    self._stalled = False
                    continue
                since = self._last_grab
                if since is None or (self._opened_at and self._opened_at > since):
                    since = self._opened_at
                silent = now - since if since is not None else 0.0
                was = self._stalled
                self._stalled = silent > limit
                if self._stalled and not was:
                    self._stalls += 1
            if self._stalled and not was:
                log.warning(
                    "camera stalled: no frame for %.1f s from %s", silent, self.spec.describe()
                )
            elif was and not self._stalled:
                log.info("camera frames again: %s", self.spec.describe())
