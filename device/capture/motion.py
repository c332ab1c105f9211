"""Motion trigger: difference of consecutive small gray frames, fired when the scene settles.

Someone places an item under the camera: pixels change (motion), then stop changing. A
lookup at the first changed frame would see a hand and motion blur, so by default the
trigger fires once the scene has been still for ``settle_ms`` after the motion, and only
once per motion episode — a continuously changing scene cannot flood the engine.
"""

from __future__ import annotations

import numpy as np

from lensbox.device.capture.quality import analysis_gray


class MotionDetector:
    """Feed frames in order with ``update``; it returns True when a lookup should start."""

    def __init__(
        self, width: int = 160, threshold: int = 25, min_area: float = 0.02, settle_ms: int = 300
    ) -> None:
        self.width = width
        self.threshold = threshold
        self.min_area = min_area
        self.settle = settle_ms / 1000.0
        self._prev: np.ndarray | None = None
        self._moving = False
        self._still_since: float | None = None
        self.last_changed = 0.0  # fraction of pixels that changed in the last update

    def reset(self) -> None:
        """Forget the reference frame (after a reconnect the scene may differ legitimately)."""
        self._prev, self._moving, self._still_since = None, False, None

    def changed_fraction(self, gray: np.ndarray) -> float:
        import cv2

        if self._prev is None or self._prev.shape != gray.shape:
            return 0.0
        diff = cv2.absdiff(gray, self._prev)
        return float(np.count_nonzero(diff > self.threshold)) / diff.size

    def update(self, bgr: np.ndarray, now: float) -> bool:
        import cv2

        gray = cv2.GaussianBlur(analysis_gray(bgr, self.width), (5, 5), 0)
        self.last_changed = self.changed_fraction(gray)
        self._prev = gray
        if self.last_changed >= self.min_area:
            fire_now = not self._moving and self.settle <= 0
            self._moving, self._still_since = True, None
            return fire_now
        if not self._moving:
            return False
        if self.settle <= 0:
            self._moving = False
            return False
        if self._still_since is None:
            self._still_since = now
        if now - self._still_since >= self.settle:
            self._moving, self._still_since = False, None
            return True
        return False
