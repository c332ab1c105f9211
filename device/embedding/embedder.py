"""The one embedding path: RGB image -> pooled descriptors per view, concepts, subject boxes.

``lensbox build`` and the device both call :meth:`Embedder.embed`; the bundle's
:class:`~lensbox.device.embedding.descriptor.Projection` then turns pooled vectors into the
final descriptors. Keeping both steps here is what guarantees index and query vectors match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lensbox.device.embedding.descriptor import Projection, identity_descriptor, pool
from lensbox.device.embedding.model import ModelOutput, TFLiteModel, resize_input
from lensbox.device.embedding.subject import Box, subject_boxes
from lensbox.device.embedding.views import crop_views


@dataclass(frozen=True)
class Concept:
    """An ImageNet class the model sees in the image; ``id`` is the class index as text."""

    id: str
    name: str
    value: float


@dataclass
class ImageEmbedding:
    """Everything one image yields; ``pooled`` has one row per requested view."""

    views: tuple[str, ...]
    pooled: np.ndarray
    concepts: list[Concept]
    subjects: list[Box]
    size: tuple[int, int]  # (width, height)
    extra: dict = field(default_factory=dict)


def load_labels(path: Path | None = None) -> list[str]:
    if path is None:
        from lensbox.models import LABELS_PATH

        path = LABELS_PATH
    return Path(path).read_text(encoding="utf-8").splitlines()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_concepts(
    logits: np.ndarray, labels: list[str], k: int = 5, min_prob: float = 0.05
) -> list[Concept]:
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(probs)[::-1][:k]
    return [
        Concept(str(i), labels[i] if i < len(labels) else str(i), round(float(probs[i]), 4))
        for i in order
        if probs[i] >= min_prob
    ]


class Embedder:
    """Wraps a :class:`TFLiteModel` with pooling, views and concepts."""

    def __init__(
        self,
        model: TFLiteModel,
        pooling: str = "gem",
        labels: list[str] | None = None,
        subject_threshold: float = 0.5,
    ) -> None:
        self.model = model
        self.pooling = pooling
        self.labels = labels if labels is not None else load_labels()
        self.subject_threshold = subject_threshold

    def _run(self, images: list[np.ndarray]) -> ModelOutput:
        """One resize per view into a uint8 batch; the model scales and quantizes it by table
        look-up (the same input tensor as :func:`preprocess`, without float copies)."""
        size = self.model.input_size
        pixels = np.empty((len(images), size, size, 3), np.uint8)
        for i, img in enumerate(images):
            pixels[i] = resize_input(img, size)
        return self.model.run_pixels(pixels)

    def embed(
        self,
        rgb: np.ndarray,
        views: tuple[str, ...] = ("full",),
        settle: Callable[[np.ndarray], bool] | None = None,
    ) -> ImageEmbedding:
        """Embed one image under each of ``views`` (the full view always runs first)."""
        return self.embed_many([rgb], views, settle)[0]

    def embed_many(
        self,
        images: list[np.ndarray],
        views: tuple[str, ...] = ("full",),
        settle: Callable[[np.ndarray], bool] | None = None,
    ) -> list[ImageEmbedding]:
        """Embed several images; full views run as one batch, then the crops as another.

        ``settle`` (the query cascade) sees each image's pooled full view once it has run;
        when it answers True that image stops there, with the single view ``("full",)``:
        a query the full frame already answers clearly needs no crops (two model runs)."""
        out = self._run(images)
        results = []
        crops: list[np.ndarray] = []
        for i, rgb in enumerate(images):
            h, w = rgb.shape[:2]
            boxes = subject_boxes(out.features[i], w, h, self.subject_threshold)
            concepts = top_concepts(out.logits[i], self.labels)
            full = pool(out.features[i : i + 1], self.pooling)[0]
            mine = ("full",) if settle is not None and "full" in views and settle(full) else views
            results.append(
                ImageEmbedding(mine, np.empty((0,)), concepts, boxes, (w, h), {"full": full})
            )
            crops += [c for v, c in zip(mine, crop_views(rgb, mine, boxes[0])) if v != "full"]
        # Without crops no view below reads crop_pooled.
        crop_pooled = (
            pool(self._run(crops).features, self.pooling) if crops else np.empty((0, 0), np.float32)
        )
        cursor = 0
        for emb in results:
            rows = []
            for view in emb.views:
                if view == "full":
                    rows.append(emb.extra["full"])
                else:
                    rows.append(crop_pooled[cursor])
                    cursor += 1
            emb.pooled = np.stack(rows).astype(np.float32)
            emb.extra.clear()
        return results


def describe(pooled: np.ndarray, projection: Projection | None) -> np.ndarray:
    """Pooled (V, C) -> final L2-normalised descriptors (V, D)."""
    return projection.apply(pooled) if projection is not None else identity_descriptor(pooled)
