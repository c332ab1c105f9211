"""The space the Annoy index lives in: a few dozen PCA dimensions of un-whitened descriptors.

Whitened descriptors are nearly isotropic, the worst case for Annoy's random-projection
trees (at 1M items the old 256-d index put the true item first for 63% of queries against
97% for an exact scan). The index is therefore built over ``(x - mean) @ matrix``: the
descriptor with the whitening undone, projected onto its top principal directions, learned
from the catalog at build time and stored in the bundle (``ann_projection.npz``). Annoy only
shortlists; candidates are re-ranked exactly with the stored int8 descriptors, so scores
never come from this space.

:meth:`IndexSpace.apply` is the one function that maps vectors into the index: the writer
uses it on every stored vector, the engine on every query view.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Vectors the PCA is learned from (a random sample above this: the top directions of a
# catalog are stable long before 100k vectors, and the build stays fast).
FIT_SAMPLE = 100_000


@dataclass(frozen=True)
class AnnProjection:
    """``(x - mean) @ matrix``: descriptor space (D) -> index space (d)."""

    mean: np.ndarray  # (D,) float32
    matrix: np.ndarray  # (D, d) float32

    @property
    def input_dims(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dims(self) -> int:
        return int(self.matrix.shape[1])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` are L2-normalised first: a query view scaled by its weight (or a
        stored vector's int8 rounding) must not move where it lands in the index."""
        return ((_unit(x) - self.mean) @ self.matrix).astype(np.float32)

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        dims: int,
        axis_scale: np.ndarray | None = None,
        int8_scale: float = 1.0,
        seed: int = 0,
    ) -> AnnProjection:
        """Top-``dims`` PCA of the descriptors ``vectors / int8_scale`` (int8 as stored, or
        float with the default 1), L2-normalised as :meth:`apply` does, times
        ``axis_scale`` (the factors that undo whitening; None: the descriptors as they are)."""
        n, d_in = vectors.shape
        dims = max(1, min(int(dims), d_in))
        scale = np.ones(d_in, np.float64) if axis_scale is None else axis_scale.astype(np.float64)
        if n > FIT_SAMPLE:
            pick = np.sort(np.random.default_rng(seed).choice(n, FIT_SAMPLE, replace=False))
            vectors = vectors[pick]
        if len(vectors) < 2:  # nothing to learn from: the leading axes, uncentred
            mean = np.zeros(d_in, np.float64)
            basis = np.eye(d_in)[:, :dims]
        else:
            y = _unit(np.asarray(vectors, np.float32) / np.float32(int8_scale)) * scale
            mu = y.mean(axis=0)
            eigval, eigvec = np.linalg.eigh(np.cov((y - mu).T))
            basis = eigvec[:, np.argsort(eigval)[::-1][:dims]]
            mean = mu / scale
        # (x - mean) @ (diag(scale) @ basis) == (x * scale - mu) @ basis
        return cls(mean.astype(np.float32), (scale[:, None] * basis).astype(np.float32))

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean, matrix=self.matrix)

    @classmethod
    def load(cls, path: Path, input_dims: int, dims: int) -> AnnProjection:
        """Read and check the file; ValueError (with the reason) when it is unusable."""
        with np.load(path, allow_pickle=False) as data:
            mean = np.asarray(data["mean"])
            matrix = np.asarray(data["matrix"])
        if mean.dtype != np.float32 or matrix.dtype != np.float32:
            raise ValueError("arrays are not float32")
        if mean.shape != (input_dims,) or matrix.shape != (input_dims, dims):
            raise ValueError(
                f"shapes {mean.shape} and {matrix.shape}, expected ({input_dims},) and "
                f"({input_dims}, {dims})"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(matrix))):
            raise ValueError("non-finite values")
        return cls(mean, matrix)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


@dataclass(frozen=True)
class IndexSpace:
    """What a descriptor becomes before it meets the Annoy index, for every bundle kind.

    ``projection``: the reduced PCA space of current bundles; ``axis_scale``: the
    full-dimensional un-whitened space of bundles recording ``index.space = pca``; neither:
    the stored descriptors themselves (the oldest bundles)."""

    projection: AnnProjection | None = None
    axis_scale: np.ndarray | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.projection is not None:
            return self.projection.apply(x)
        x = np.asarray(x, np.float32)
        return x if self.axis_scale is None else x * self.axis_scale
