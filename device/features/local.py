"""Local features: ORB keypoints and binary descriptors, the same code for catalog and query.

Why ORB: a global descriptor of the whole frame cannot tell one DVD cover from another when
the cover fills a third of a cluttered desk photo; local features matched with a geometric
check can (docs/benchmarks.md, "Recognition"). ORB is patent-free, in every OpenCV wheel
(aarch64 included), its 32-byte binary descriptors are compact in the bundle, and Hamming
matching is a popcount. AKAZE/SIFT/BRISK were compared in bench/recognition.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DESCRIPTOR_BYTES = 32


@dataclass(frozen=True)
class LocalSettings:
    """How local features are detected; recorded in the bundle manifest.

    ``max_side``: the image is resized so its long side is at most this before detection
    (keypoints are reported in the original image's pixels). ``catalog_features`` and
    ``query_features`` cap the keypoints kept (strongest first): the catalog's cap sets the
    bundle's size (40 bytes per feature), the query's the time spent matching.
    """

    max_side: int = 640
    catalog_features: int = 1000
    query_features: int = 1000
    fast_threshold: int = 12

    def as_dict(self) -> dict[str, int | str]:
        return {
            "detector": "orb",
            "max_side": self.max_side,
            "catalog_features": self.catalog_features,
            "query_features": self.query_features,
            "fast_threshold": self.fast_threshold,
        }

    @classmethod
    def from_manifest(cls, data: dict) -> LocalSettings:
        return cls(
            max_side=int(data.get("max_side", cls.max_side)),
            catalog_features=int(data.get("catalog_features", cls.catalog_features)),
            query_features=int(data.get("query_features", cls.query_features)),
            fast_threshold=int(data.get("fast_threshold", cls.fast_threshold)),
        )


@dataclass
class LocalFeatures:
    """Keypoints of one image: ``xy`` (N, 2) float32 in image pixels, ``desc`` (N, 32) uint8."""

    xy: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]  # (width, height) of the image they were found in

    def __len__(self) -> int:
        return len(self.desc)

    @classmethod
    def empty(cls, size: tuple[int, int] = (0, 0)) -> LocalFeatures:
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8), size)


def _gray(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Grayscale, shrunk so the long side is at most ``max_side``; and the scale applied."""
    gray = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape[:2]
    scale = min(1.0, max_side / max(h, w, 1))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(gray), scale


def extract(rgb: np.ndarray, settings: LocalSettings, limit: int) -> LocalFeatures:
    """ORB features of an RGB (or gray) image, at most ``limit``, strongest first.

    A blank, tiny or flat image has no keypoints: the result is empty, never an error, and
    search then ranks by the global descriptor alone.
    """
    h, w = rgb.shape[:2]
    if min(h, w) < 32 or limit <= 0:
        return LocalFeatures.empty((w, h))
    gray, scale = _gray(rgb, settings.max_side)
    orb = cv2.ORB.create(
        nfeatures=int(limit),
        fastThreshold=settings.fast_threshold,
        edgeThreshold=19,
        patchSize=19,
    )
    # mask=None is OpenCV's documented noArray(); its stubs only allow an array.
    keypoints, desc = orb.detectAndCompute(gray, None)  # type: ignore[call-overload]
    if desc is None or not keypoints:
        return LocalFeatures.empty((w, h))
    xy = np.array([kp.pt for kp in keypoints], np.float32) / np.float32(scale)
    return LocalFeatures(xy, np.ascontiguousarray(desc, np.uint8), (w, h))
