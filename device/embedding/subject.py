"""Find the main subject(s) of a photo from the model's own activation map.

The last feature map is already computed for the descriptor, so localising the subject
costs no extra inference: cells where the network fires strongly are where the object is.
Used for the contracts' ``Crop`` / ``is_crop`` and for the subject view of a query.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """Pixel box, x/y of the top-left corner; the contracts convert to their own forms."""

    x: int
    y: int
    width: int
    height: int

    def clip(self, width: int, height: int) -> Box:
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.width), min(height, self.y + self.height)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def crop(self, rgb: np.ndarray) -> np.ndarray:
        b = self.clip(rgb.shape[1], rgb.shape[0])
        if b.width < 2 or b.height < 2:
            raise ValueError(f"region {self} is outside the {rgb.shape[1]}x{rgb.shape[0]} image")
        return rgb[b.y : b.y + b.height, b.x : b.x + b.width]

    @property
    def area(self) -> int:
        return self.width * self.height


# Longest side of the map the subject's outline is traced on (see subject_boxes).
MASK_SIDE = 160


def activation_map(features: np.ndarray) -> np.ndarray:
    """(h, w, C) feature map -> (h, w) saliency in [0, 1]."""
    act = features.astype(np.float32).sum(axis=-1)
    lo, hi = float(act.min()), float(act.max())
    return (act - lo) / (hi - lo) if hi > lo else np.zeros_like(act)


def subject_boxes(
    features: np.ndarray, width: int, height: int, threshold: float = 0.5, max_boxes: int = 5
) -> list[Box]:
    """Boxes around strongly activated regions, largest first.

    The map is upsampled before thresholding so that boxes are not snapped to the coarse
    7x7 grid: to at most ``MASK_SIDE`` pixels a side, then scaled to the image (upsampling
    to a 640x480 photo itself cost ~3 ms a query for boxes a few pixels finer).
    """
    scale = min(1.0, MASK_SIDE / max(width, height, 1))
    sw, sh = max(1, round(width * scale)), max(1, round(height * scale))
    sal = cv2.resize(activation_map(features), (sw, sh), interpolation=cv2.INTER_LINEAR)
    mask = (sal >= threshold).astype(np.uint8)
    _count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    fx, fy = width / sw, height / sh
    boxes = [
        Box(int(x * fx), int(y * fy), round(float(w) * fx), round(float(h) * fy))
        for x, y, w, h, area in stats[1:]
        if area >= 0.01 * sw * sh
    ]
    boxes.sort(key=lambda b: b.area, reverse=True)
    if not boxes:
        return [Box(0, 0, width, height)]
    return [_pad(b, width, height) for b in boxes[:max_boxes]]


def _pad(box: Box, width: int, height: int, frac: float = 0.1) -> Box:
    dx, dy = int(box.width * frac), int(box.height * frac)
    return Box(box.x - dx, box.y - dy, box.width + 2 * dx, box.height + 2 * dy).clip(width, height)
