"""TF-IDF over visual words: an inverted file from word to the catalog photos holding it.

It finds items the global descriptor misses (a cover small in a cluttered frame) because a
few dozen distinctive words in common outweigh a frame that looks different overall. Stored
as three flat arrays (CSR), memory-mapped from the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Postings a query may touch for them to be gathered at once; above it (a large catalog's
# long posting lists) they are added word by word from contiguous slices. Measured on a
# query: 250 photos, gather 0.3 ms vs by word 5.6 ms; 100k photos (~4M postings touched),
# gather 175 ms vs by word 55 ms (bench/local_scale.py).
GATHER_UP_TO = 500_000


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
        """Postings grouped by word, each word's in photo order. Arrays throughout: a 100k-
        photo catalog has ~75M postings, too many for a Python object each."""
        n = len(words_per_photo)
        df = np.zeros(k, np.float64)
        hists = []
        for words in words_per_photo:
            uniq, counts = np.unique(words, return_counts=True)
            df[uniq] += 1
            hists.append((uniq, counts))
        idf = np.log((n + 1) / (df + 1)).astype(np.float32)
        weights = []
        for uniq, counts in hists:
            w = counts.astype(np.float32) * idf[uniq]
            norm = float(np.linalg.norm(w)) or 1.0
            weights.append((w / norm).astype(np.float32, copy=False))
        lengths = [len(u) for u, _ in hists]
        words = np.concatenate([np.zeros(0, np.int64)] + [u for u, _ in hists])
        photos = np.repeat(np.arange(n, dtype=np.int32), lengths)
        flat = np.concatenate([np.zeros(0, np.float32), *weights])
        order = np.argsort(words, kind="stable")  # by word, photos ascending within one
        offsets = np.zeros(k + 1, np.int64)
        offsets[1:] = np.cumsum(np.bincount(words, minlength=k))
        return cls(offsets, photos[order], flat[order], idf, n)

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
        starts = self.offsets[uniq]
        lengths = self.offsets[uniq + 1] - starts
        touched = int(lengths.sum())
        if touched <= GATHER_UP_TO:
            return self._gathered(q, starts, lengths, touched)
        # One word's postings name each photo at most once, so they are added with a plain
        # scatter from contiguous slices of the memory-mapped arrays, word by word, in
        # float64: the sums the gather makes, in the same order.
        acc = np.zeros(self.n_photos, np.float64)
        photos, weights = np.asarray(self.photos), np.asarray(self.weights)  # no memmap views
        for lo, n, weight in zip(starts.tolist(), lengths.tolist(), q.tolist()):
            if n:
                acc[photos[lo : lo + n]] += weights[lo : lo + n] * np.float32(weight)
        return acc.astype(np.float32)

    def _gathered(
        self, q: np.ndarray, starts: np.ndarray, lengths: np.ndarray, touched: int
    ) -> np.ndarray:
        """Every touched posting gathered at once and summed per photo by ``bincount``."""
        ends = np.cumsum(lengths)
        idx = np.arange(touched, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
        weights = np.asarray(self.weights)[idx] * np.repeat(q, lengths)
        photos = np.asarray(self.photos)[idx]
        return np.bincount(photos, weights=weights, minlength=self.n_photos).astype(np.float32)
