"""TF-IDF over visual words: an inverted file from word to the catalog photos holding it.

It finds items the global descriptor misses (a cover small in a cluttered frame) because a
few dozen distinctive words in common outweigh a frame that looks different overall. Stored
as three flat arrays (CSR), memory-mapped from the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class InvertedIndex:
    """``offsets`` (K+1,) int64; ``photos`` (P,) int32; ``weights`` (P,) float32
    (tf-idf of that word in that photo, each photo's vector L2-normalised); ``idf`` (K,)."""

    offsets: np.ndarray
    photos: np.ndarray
    weights: np.ndarray
    idf: np.ndarray
    n_photos: int

    @classmethod
    def build(cls, words_per_photo: list[np.ndarray], k: int) -> InvertedIndex:
        n = len(words_per_photo)
        df = np.zeros(k, np.float64)
        hists = []
        for words in words_per_photo:
            uniq, counts = np.unique(words, return_counts=True)
            df[uniq] += 1
            hists.append((uniq, counts))
        idf = np.log((n + 1) / (df + 1)).astype(np.float32)
        per_word: list[list[tuple[int, float]]] = [[] for _ in range(k)]
        for photo, (uniq, counts) in enumerate(hists):
            w = counts.astype(np.float32) * idf[uniq]
            norm = float(np.linalg.norm(w)) or 1.0
            for word, weight in zip(uniq.tolist(), (w / norm).tolist()):
                per_word[word].append((photo, weight))
        offsets = np.zeros(k + 1, np.int64)
        offsets[1:] = np.cumsum([len(p) for p in per_word])
        photos = np.fromiter((p for post in per_word for p, _ in post), np.int32, offsets[-1])
        weights = np.fromiter((w for post in per_word for _, w in post), np.float32, offsets[-1])
        return cls(offsets, photos, weights, idf, n)

    def scores(self, words: np.ndarray) -> np.ndarray:
        """Cosine of the query's tf-idf vector with every photo's: (n_photos,) float32."""
        out = np.zeros(self.n_photos, np.float32)
        if len(words) == 0:
            return out
        uniq, counts = np.unique(words, return_counts=True)
        q = counts.astype(np.float32) * self.idf[uniq]
        norm = float(np.linalg.norm(q))
        if norm == 0:
            return out
        q /= norm
        starts, ends = self.offsets[uniq], self.offsets[uniq + 1]
        lengths = ends - starts
        if lengths.sum() == 0:
            return out
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends) if e > s])
        weights = self.weights[idx] * np.repeat(q, lengths)
        return np.bincount(self.photos[idx], weights=weights, minlength=self.n_photos).astype(
            np.float32
        )
