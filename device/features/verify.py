"""Geometric verification: do the query's and a catalog photo's keypoints agree on one plane?

Descriptor matches alone are noisy (ORB on a cluttered desk matches something everywhere);
matches consistent with one homography are not. The number of RANSAC inliers is the
evidence, and the reference photo's outline projected into the query is where the item is.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lensbox.device.features.local import LocalFeatures


@dataclass(frozen=True)
class VerifySettings:
    """``ratio``: Lowe's ratio test; ``min_inliers``: fewer is "not verified";
    ``reprojection``: RANSAC threshold as a fraction of the query's long side."""

    ratio: float = 0.85
    min_inliers: int = 12
    reprojection: float = 0.012
    max_iters: int = 500


@dataclass
class Verification:
    inliers: int
    matches: int
    region: list[tuple[float, float]] | None  # reference corners in query pixels


NONE = Verification(0, 0, None)


def _plausible(h: np.ndarray, corners: np.ndarray | None, query_size: tuple[int, int]) -> bool:
    """A homography a real camera could produce: no flip, not collapsed, not absurdly large
    (``corners``: the reference photo's corners projected by ``h``)."""
    if corners is None:
        return False
    det = h[0, 0] * h[1, 1] - h[0, 1] * h[1, 0]
    if det <= 1e-4:
        return False
    quad = corners.astype(np.float32)
    qw, qh = query_size
    # An item may run off the photo's edge, not lie many photos away from it (a degenerate
    # fit once put a corner at (24937, -15391) and still counted 12 inliers).
    xs, ys = quad[:, 0], quad[:, 1]
    if xs.min() < -1.5 * qw or xs.max() > 2.5 * qw or ys.min() < -1.5 * qh or ys.max() > 2.5 * qh:
        return False
    area = abs(cv2.contourArea(quad))
    return 0.002 * qw * qh < area < 16 * qw * qh and cv2.isContourConvex(quad)


def _corners(h: np.ndarray, ref_size: tuple[int, int]) -> np.ndarray | None:
    w, hh = ref_size
    pts = np.array([[0, 0], [w, 0], [w, hh], [0, hh]], np.float32).reshape(-1, 1, 2)
    out = cv2.perspectiveTransform(pts, h)
    if out is None or not np.all(np.isfinite(out)):
        return None
    return out.reshape(-1, 2)


def match(query: LocalFeatures, ref: LocalFeatures, settings: VerifySettings) -> Verification:
    """Ratio-test matches from query to reference, then a RANSAC homography."""
    if len(query) < 2 or len(ref) < 2:
        return NONE
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(query.desc, ref.desc, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < settings.ratio * p[1].distance]
    if len(good) < max(4, settings.min_inliers):
        return Verification(0, len(good), None)
    src = ref.xy[[m.trainIdx for m in good]].reshape(-1, 1, 2)
    dst = query.xy[[m.queryIdx for m in good]].reshape(-1, 1, 2)
    threshold = settings.reprojection * max(query.size)
    h, mask = cv2.findHomography(
        src, dst, cv2.USAC_MAGSAC, threshold, maxIters=settings.max_iters, confidence=0.995
    )
    if h is None or mask is None:
        return Verification(0, len(good), None)
    corners = _corners(h, ref.size) if np.all(np.isfinite(h)) else None
    if not _plausible(h, corners, query.size):
        return Verification(0, len(good), None)
    region = [(float(x), float(y)) for x, y in corners] if corners is not None else None
    return Verification(int(mask.sum()), len(good), region)
