"""Feature map -> compact, L2-normalised descriptor -> int8.

Pooling happens here, in numpy, rather than in the graph: tflite-runtime 2.14 has no int8
SQRT/POW, and keeping the feature map lets the device also localise the subject from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

GEM_P = 3.0
EPS = 1e-6


def gem_pool(features: np.ndarray, p: float = GEM_P) -> np.ndarray:
    """Generalised-mean pooling of (N, h, w, C) -> (N, C); p=1 is average pooling.

    GeM weights the strongest activations more than the average, which helps when the object
    fills only part of the frame (the kiosk case).
    """
    x = np.maximum(features.astype(np.float32), EPS)
    cubed = x * x * x if p == 3.0 else np.power(x, p)  # the default p: 10x cheaper than pow
    return np.power(np.mean(cubed, axis=(1, 2)), 1.0 / p)


def pool(features: np.ndarray, method: str) -> np.ndarray:
    if method == "gem":
        return gem_pool(features, GEM_P)
    if method == "avg":
        return features.astype(np.float32).mean(axis=(1, 2))
    raise ValueError(f"unknown pooling {method!r}; use 'gem' or 'avg'")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, EPS)


@dataclass
class Projection:
    """The projection learned at build time and stored in the bundle: PCA(-whitening) of the
    catalog, or whitening learned from camera views of it (:meth:`fit_learned`).

    ``apply`` centres, projects onto the top components, divides by the square root of their
    variance (when whitening) and L2-normalises. Whitening evens out the few dominant
    directions that every photo shares, so similarity reflects what is specific to an item.
    """

    mean: np.ndarray  # (C,)
    components: np.ndarray  # (C, D), already divided by sqrt(eigenvalue) when whitened
    whiten: bool  # the catalog's PCA directions were scaled to unit variance

    @property
    def dims(self) -> int:
        return int(self.components.shape[1])

    def apply(self, pooled: np.ndarray) -> np.ndarray:
        x = l2_normalise(pooled)
        return l2_normalise((x - self.mean) @ self.components)

    @classmethod
    def fit(
        cls, pooled: np.ndarray, dims: int, whiten: bool = True, shrinkage: float = 0.1
    ) -> Projection:
        """Fit on L2-normalised pooled descriptors.

        ``shrinkage`` adds a fraction of the mean eigenvalue before whitening so that tiny,
        noisy directions are not blown up when the catalog is small.
        """
        x = l2_normalise(pooled).astype(np.float64)
        mean = x.mean(axis=0)
        cov = np.cov((x - mean).T)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1][:dims]
        eigval, eigvec = eigval[order], eigvec[:, order]
        if whiten:
            eigvec = eigvec / np.sqrt(eigval + shrinkage * eigval.mean() + 1e-12)
        return cls(mean.astype(np.float32), _signed(eigvec).astype(np.float32), whiten)

    @classmethod
    def fit_learned(
        cls,
        pooled: np.ndarray,
        pairs: tuple[np.ndarray, np.ndarray],
        dims: int,
        shrinkage: float = 0.3,
    ) -> Projection:
        """Whitening learned from matching pairs (Radenović et al.'s "learned whitening").

        ``pairs`` = (camera views, the catalog photos they show), pooled, row by row. The
        directions in which a photo and a camera view of the same item differ (background,
        light, perspective, blur) are scaled down by the inverse square root of their
        covariance; the catalog's own PCA in that space then picks the ``dims`` directions
        that tell items apart. PCA-whitening from the catalog alone only knows how items
        differ, not how a camera changes one. ``shrinkage`` (a fraction of the mean
        eigenvalue) keeps directions the views barely sampled from being blown up.
        """
        x = l2_normalise(pooled).astype(np.float64)
        mean = x.mean(axis=0)
        views, photos = pairs
        diffs = l2_normalise(views).astype(np.float64) - l2_normalise(photos).astype(np.float64)
        eigval, eigvec = np.linalg.eigh(diffs.T @ diffs / max(1, len(diffs)))
        eigval = np.maximum(eigval, 0.0)
        whitening = eigvec / np.sqrt(eigval + shrinkage * eigval.mean() + 1e-12)
        spread, axes = np.linalg.eigh(np.cov(((x - mean) @ whitening).T))
        order = np.argsort(spread)[::-1][:dims]
        components = whitening @ axes[:, order]
        # Not ``whiten``: the catalog's spread is kept, so the dominant directions still
        # lead and Annoy's trees split on them without undoing anything (unwhiten_scale).
        return cls(mean.astype(np.float32), _signed(components).astype(np.float32), False)

    def unwhiten_scale(self) -> np.ndarray | None:
        """Per-dimension factors that undo the whitening (sqrt of each kept eigenvalue).

        Annoy indexes descriptors times these factors: plain PCA space keeps the dominant
        directions that random-projection trees split on well, while whitened vectors are
        nearly isotropic, the trees' worst case. Re-ranking stays in the whitened space.
        """
        if not self.whiten:
            return None
        return (1.0 / np.linalg.norm(self.components, axis=0)).astype(np.float32)

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean, components=self.components, whiten=np.array(self.whiten))

    @classmethod
    def load(cls, path: Path) -> Projection:
        with np.load(path) as data:
            return cls(data["mean"], data["components"], bool(data["whiten"]))


def _signed(components: np.ndarray) -> np.ndarray:
    """Each column turned so its largest entry is positive. An eigenvector's sign is
    arbitrary, and a rebuild from float-identical inputs should write an identical bundle;
    scores do not depend on it."""
    rows = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[rows, np.arange(components.shape[1])])
    return components * np.where(signs == 0, 1.0, signs)


def identity_descriptor(pooled: np.ndarray) -> np.ndarray:
    """Descriptor when the bundle has no projection (too few photos to learn one)."""
    return l2_normalise(pooled)


# Components of a unit vector rarely exceed 0.5 in magnitude once spread over 256 dims;
# a fixed scale keeps the quantization independent of the catalog and of later additions.
INT8_SCALE = 127.0 / 0.5


def quantize_int8(vectors: np.ndarray, scale: float = INT8_SCALE) -> np.ndarray:
    return np.clip(np.round(vectors * scale), -127, 127).astype(np.int8)


def dequantize_int8(vectors: np.ndarray, scale: float = INT8_SCALE) -> np.ndarray:
    return vectors.astype(np.float32) / scale


def choose_int8_scale(vectors: np.ndarray) -> float:
    """Scale so that the 99.99th percentile magnitude maps to 127 (clipping the rest)."""
    top = float(np.quantile(np.abs(vectors), 0.9999)) if vectors.size else 0.5
    return 127.0 / max(top, 1e-3)
