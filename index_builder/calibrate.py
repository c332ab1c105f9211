"""Measure what a score means on this catalog, and record the verdict thresholds.

A fixed "same item" threshold is wrong somewhere: a catalog of near-identical packages needs
a higher one than a catalog of paintings. So the builder photographs its own catalog, in a
way: a sample of catalog photos is rendered as camera views (perspective, a cluttered
background of shapes, light, blur, noise, JPEG), each view is searched
with the bundle just written — once as is (the positives) and once with its own item hidden
(what the box would answer for an object that is *not* in the catalog: the negatives).

``match`` is set just above the 99th percentile of the negatives' best score, ``weak`` at
their 90th percentile: a ``match`` verdict then almost never names an item for an object the
catalog lacks. How many positives clear it is recorded too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lensbox.device.imaging.decode import ImageError, load_reduced
from lensbox.device.imaging.frames import pipeline_sides

FRAME = (640, 480)
# Bump when camera_view draws differently: the builder's cached camera views carry it.
RENDERER_VERSION = 1


@dataclass(frozen=True)
class CalibrationSettings:
    samples: int = 60
    seed: int = 11
    negative_quantile_match: float = 0.99
    negative_quantile_weak: float = 0.90
    floor: float = 0.35
    ceiling: float = 0.97


def _background(rng: np.random.Generator) -> np.ndarray:
    """A cluttered scene with nothing from the catalog in it: a shaded table colour, grain,
    and random shapes and strokes (edges and corners for the detector to find, as real
    clutter has). Catalog photos must not appear here: the negatives would then find them."""
    w, h = FRAME
    scene = np.empty((h, w, 3), np.float32)
    scene[:] = rng.uniform(40, 200, size=3)
    scene *= cv2.resize(rng.uniform(0.7, 1.2, (3, 4)).astype(np.float32), (w, h))[..., None]
    for _ in range(int(rng.integers(6, 16))):
        colour = rng.uniform(0, 255, 3).tolist()
        x, y = int(rng.integers(w)), int(rng.integers(h))
        if rng.random() < 0.4:
            cv2.circle(scene, (x, y), int(rng.integers(10, 70)), colour, -1)
        elif rng.random() < 0.7:
            x2, y2 = x + int(rng.integers(20, 200)), y + int(rng.integers(20, 150))
            cv2.rectangle(scene, (x, y), (x2, y2), colour, -1)
        else:
            x2, y2 = int(rng.integers(w)), int(rng.integers(h))
            cv2.line(scene, (x, y), (x2, y2), colour, int(rng.integers(1, 6)))
    scene += rng.normal(0, 6, scene.shape).astype(np.float32)
    return cv2.GaussianBlur(scene, (0, 0), 1.2)


def camera_view(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo as a hand-held camera might see the item: smaller, tilted, in a scene."""
    w, h = FRAME
    scene = _background(rng)
    ih, iw = rgb.shape[:2]
    fill = rng.uniform(0.35, 0.7)
    scale = fill * min(w / iw, h / ih)
    cw, ch = iw * scale, ih * scale
    cx, cy = rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2)
    quad = np.array([[-cw, -ch], [cw, -ch], [cw, ch], [-cw, ch]], np.float32) / 2
    quad += rng.uniform(-0.12, 0.12, (4, 2)).astype(np.float32) * np.array([cw, ch], np.float32)
    angle = np.deg2rad(rng.uniform(-15, 15))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    quad = quad @ rot.T + np.array([cx, cy], np.float32)
    src = np.array([[0, 0], [iw, 0], [iw, ih], [0, ih]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    warped = cv2.warpPerspective(rgb.astype(np.float32), matrix, (w, h))
    mask = cv2.warpPerspective(np.ones((ih, iw), np.float32), matrix, (w, h))[..., None]
    img = warped * mask + scene * (1 - mask)
    img = img * rng.uniform(0.6, 1.25) + rng.uniform(-25, 25)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.6))
    img += rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 70])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1].copy() if ok else out


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values, np.float64), q)) if values else 0.0


def calibrate(
    catalog, photos: list[tuple[int, str]], settings: CalibrationSettings | None = None
) -> dict:
    """Thresholds for ``catalog`` (the new bundle as built: ``open_catalog``) from camera
    views of a sample of ``photos`` ((item row, path) pairs); the manifest's ``calibration``
    section."""
    settings = settings or CalibrationSettings()
    rng = np.random.default_rng(settings.seed)
    chosen = sorted(rng.choice(len(photos), min(settings.samples, len(photos)), replace=False))
    images: list[tuple[int, np.ndarray]] = []
    # Decoded as catalog photos are (a large JPEG at reduced scale): the view is 640x480.
    local = catalog.engine.local.settings if catalog.engine.local is not None else None
    long_side, short_side = pipeline_sides(local)
    for index in chosen:
        row, path = photos[int(index)]
        try:
            decoded = load_reduced(Path(path), long_side=long_side, short_side=short_side)
            images.append((row, decoded.rgb))
        except (ImageError, OSError):
            continue
    positives: list[float] = []
    negatives: list[float] = []
    correct = 0
    for n, (row, rgb) in enumerate(images):
        view = camera_view(rgb, np.random.default_rng([settings.seed, n]))
        query = catalog.embed_query(view)
        hits, _ = catalog.search_vectors(query.vectors, 1, local=query.local)
        if hits and hits[0].row == row:
            correct += 1
            positives.append(hits[0].score)
        hidden, _ = _without(catalog, query, row)
        negatives.append(hidden[0].score if hidden else 0.0)
    match = _quantile(negatives, settings.negative_quantile_match) + 0.01
    weak = _quantile(negatives, settings.negative_quantile_weak)
    match = float(np.clip(match, settings.floor, settings.ceiling))
    weak = float(np.clip(min(weak, match), settings.floor * 0.8, match))
    return {
        "match": round(match, 4),
        "weak": round(weak, 4),
        "method": "camera views of catalog photos; negatives with their own item hidden",
        "samples": len(images),
        "top1_correct": correct,
        "positives_at_match": sum(p >= match for p in positives),
        "negatives_at_match": sum(s >= match for s in negatives),
        "negatives_at_weak": sum(s >= weak for s in negatives),
    }


def _without(catalog, query, row: int) -> tuple[list, int]:
    """The best hit when item ``row`` is hidden: what an object not in the catalog gets."""
    item_id = catalog.bundle.items([row])[0]["id"]
    return catalog.search_vectors(
        query.vectors, 1, predicate=lambda item: item["id"] != item_id, local=query.local
    )
