"""Which crops of an image get embedded.

A catalog shot is usually the object alone; a kiosk photo shows it smaller, off-centre,
among other things. Embedding a few crops of the query and keeping each item's best match
is the cheapest way to bridge that gap; each view costs one model run.
"""

from __future__ import annotations

import numpy as np

from lensbox.device.embedding.subject import Box

QUERY_VIEWS = ("full", "center", "subject")
ALL_VIEWS = ("full", "center", "subject", "tl", "tr", "bl", "br")


def fixed_crop(rgb: np.ndarray, view: str, frac: float = 0.7) -> np.ndarray:
    """Fixed crops: the centre or one of four corners, each ``frac`` of each side."""
    h, w = rgb.shape[:2]
    cw, ch = max(1, int(w * frac)), max(1, int(h * frac))  # never empty, even for 1x1
    x = {"center": (w - cw) // 2, "tl": 0, "bl": 0, "tr": w - cw, "br": w - cw}[view]
    y = {"center": (h - ch) // 2, "tl": 0, "tr": 0, "bl": h - ch, "br": h - ch}[view]
    return rgb[y : y + ch, x : x + cw]


def validate_views(views: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [v for v in views if v not in ALL_VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown views {unknown}; choose from {ALL_VIEWS}")
    return tuple(views)


def crop_views(rgb: np.ndarray, views: tuple[str, ...], subject: Box | None) -> list[np.ndarray]:
    """The pixel arrays for ``views``; 'subject' needs the box found on the full view."""
    out = []
    for view in views:
        if view == "full":
            out.append(rgb)
        elif view == "subject":
            # A box under 2 px (a tiny image) has no crop to give: the whole image stands in.
            usable = subject is not None and min(subject.width, subject.height) >= 2
            out.append(subject.crop(rgb) if subject is not None and usable else rgb)
        else:
            out.append(fixed_crop(rgb, view))
    return out
