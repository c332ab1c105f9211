"""Is a frame worth searching? Too dark or too blurred gives a confident wrong match, so the
kiosk answers RETAKE instead.

Both measures are taken on a gray copy scaled to a fixed width, so the thresholds mean the
same thing whatever the camera resolution: the variance of the Laplacian (edge energy)
grows with resolution, mean luminance does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quality:
    luminance: float  # mean gray level 0-255
    sharpness: float  # variance of the Laplacian at the analysis width
    verdict: str | None  # None (fine) | "dark" | "blurred"

    def as_dict(self) -> dict[str, float]:
        return {"luminance": round(self.luminance, 1), "sharpness": round(self.sharpness, 1)}


def analysis_gray(bgr: np.ndarray, width: int) -> np.ndarray:
    """Gray copy no wider than ``width`` (area interpolation keeps noise from aliasing)."""
    import cv2

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    h, w = gray.shape[:2]
    if w > width:
        gray = cv2.resize(gray, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return gray


def assess(
    bgr: np.ndarray, min_luminance: float, min_sharpness: float, width: int = 640
) -> Quality:
    """Dark is checked first: a dark frame has no edges either, and "dark" is the useful hint."""
    import cv2

    gray = analysis_gray(bgr, width)
    luminance = float(gray.mean())
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    verdict = None
    if luminance < min_luminance:
        verdict = "dark"
    elif sharpness < min_sharpness:
        verdict = "blurred"
    return Quality(luminance, sharpness, verdict)
