"""Visual words: a binary vocabulary learned from the catalog's own ORB descriptors.

The second retrieval channel (Nistér & Stewénius style bag of words with TF-IDF) needs each
descriptor mapped to a word. Centroids of binary descriptors are themselves binary (the
bitwise majority of their members, "k-majority"), so assignment is a Hamming nearest
neighbour: OpenCV's brute-force matcher with popcount, the same kernel verification uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lensbox.device.features.local import DESCRIPTOR_BYTES


def _nearest(desc: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Hamming) of each descriptor."""
    if len(desc) == 0:
        return np.zeros(0, np.int32)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=False)
    out = np.empty(len(desc), np.int32)
    for start in range(0, len(desc), 65536):
        chunk = desc[start : start + 65536]
        out[start : start + len(chunk)] = [m.trainIdx for m in matcher.match(chunk, centroids)]
    return out


def _majority(bits: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bitwise majority of each cluster's members: (k, 256) bool centroids, member counts.

    Members are summed per cluster after sorting by cluster (``np.add.at`` did the same
    and took 85% of a build's vocabulary time: 17 s for 60 photos)."""
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, bits.shape[1]), np.int64)
    present = np.flatnonzero(counts)
    if len(present):
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]])
        sums[present] = np.add.reduceat(bits[order], starts, axis=0, dtype=np.int64)
    return sums * 2 > counts[:, None], counts.astype(np.float32)


def _kmajority(desc: np.ndarray, k: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """k binary centroids of ``desc`` (bitwise majority of members); empties re-seeded."""
    k = max(1, min(k, len(desc)))
    words = desc[rng.choice(len(desc), k, replace=False)].copy()
    bits = np.unpackbits(desc, axis=1)
    for _ in range(iterations):
        labels = _nearest(desc, words)
        centroid_bits, counts = _majority(bits, labels, k)
        words = np.packbits(centroid_bits, axis=1)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            words[empty] = desc[rng.choice(len(desc), len(empty), replace=False)]
    return np.ascontiguousarray(words, np.uint8)


MAX_BRANCHING = 256
# Descriptors sampled per word when fitting (at least ``Vocabulary.fit``'s ``sample``): a
# 65k-word tree learned from 200k descriptors would give each leaf three members.
SAMPLE_PER_WORD = 10


@dataclass
class Vocabulary:
    """A two-level vocabulary tree: ``top`` (B, 32) centroids, each with ``leaves`` (B, B, 32).

    Word id = top index * B + leaf index, so K = B * B words. Assigning a descriptor costs
    2 * B Hamming distances instead of K (Nistér & Stewénius), which keeps the query's
    word lookup to a millisecond or two even with 16k words.
    """

    top: np.ndarray
    leaves: np.ndarray

    @property
    def branching(self) -> int:
        return len(self.top)

    def __len__(self) -> int:
        return len(self.top) * len(self.top)

    def assign(self, desc: np.ndarray) -> np.ndarray:
        desc = np.ascontiguousarray(desc, np.uint8)
        b = self.branching
        first = _nearest(desc, self.top)
        words = np.empty(len(desc), np.int32)
        for node in np.unique(first):
            members = np.flatnonzero(first == node)
            words[members] = node * b + _nearest(desc[members], self.leaves[node])
        return words

    @classmethod
    def fit(
        cls,
        desc: np.ndarray,
        branching: int,
        iterations: int = 5,
        sample: int = 200_000,
        seed: int = 7,
    ) -> Vocabulary:
        """k-majority at each level over (a sample of) the catalog's descriptors."""
        rng = np.random.default_rng(seed)
        desc = np.ascontiguousarray(desc, np.uint8)
        sample = max(sample, SAMPLE_PER_WORD * branching * branching)
        if len(desc) > sample:
            desc = desc[rng.choice(len(desc), sample, replace=False)]
        b = max(2, branching)
        top = _kmajority(desc, b, iterations, rng)
        if len(top) < b:  # fewer descriptors than branches: repeat to keep the shape
            top = np.resize(top, (b, DESCRIPTOR_BYTES))
        first = _nearest(desc, top)
        leaves = np.empty((b, b, DESCRIPTOR_BYTES), np.uint8)
        for node in range(b):
            members = desc[first == node]
            if len(members) == 0:
                members = top[node : node + 1]
            sub = _kmajority(members, b, iterations, rng)
            leaves[node] = np.resize(sub, (b, DESCRIPTOR_BYTES))
        return cls(top, leaves)


def branching_for(descriptors: int, per_word: int = 40) -> int:
    """Tree branching B (K = B² words) for a catalog with this many descriptors: about one
    word per ``per_word`` descriptors, B between 16 and 256 (bench/recognition.py).

    Up to 128 (16k words) a 100k-photo catalog had ~5,000 postings per word, so a query
    touched ~4M of them; 256 (65k words) is reached from ~2.6M descriptors (~2,600 photos)."""
    return int(np.clip(round(np.sqrt(max(descriptors, 1) / per_word)), 16, MAX_BRANCHING))
