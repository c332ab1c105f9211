"""The visual-word inverted file: postings as built, and scores by either summing path."""

from __future__ import annotations

import numpy as np
import pytest

from lensbox.device.features import inverted
from lensbox.device.features.inverted import InvertedIndex

K = 64


@pytest.fixture()
def photos_words() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    words = [rng.integers(0, K, rng.integers(1, 120)).astype(np.int32) for _ in range(40)]
    words.append(np.zeros(0, np.int32))  # a photo without keypoints
    return words


def _dense(words: list[np.ndarray], idf: np.ndarray) -> np.ndarray:
    """Each photo's L2-normalised tf-idf vector, written out in full."""
    out = np.zeros((len(words), K))
    for photo, w in enumerate(words):
        tf = np.bincount(w, minlength=K) * idf
        out[photo] = tf / (np.linalg.norm(tf) or 1.0)
    return out


def test_postings_are_grouped_by_word_with_photos_in_order(photos_words) -> None:
    index = InvertedIndex.build(photos_words, K)
    assert index.offsets[0] == 0 and index.offsets[-1] == len(index.photos) == len(index.weights)
    dense = _dense(photos_words, index.idf.astype(np.float64))
    for word in range(K):
        lo, hi = index.offsets[word], index.offsets[word + 1]
        photos = index.photos[lo:hi]
        assert np.all(np.diff(photos) > 0)  # ascending, each photo once
        assert set(photos.tolist()) == {p for p, w in enumerate(photos_words) if word in w}
        assert np.allclose(index.weights[lo:hi], dense[photos, word], atol=1e-6)


@pytest.mark.parametrize("gather_up_to", [0, 10**9], ids=["word by word", "gathered"])
def test_scores_are_the_tfidf_cosine_by_either_path(photos_words, monkeypatch, gather_up_to):
    """A large catalog sums postings word by word, a small one gathers them: same scores."""
    monkeypatch.setattr(inverted, "GATHER_UP_TO", gather_up_to)
    index = InvertedIndex.build(photos_words, K)
    dense = _dense(photos_words, index.idf.astype(np.float64))
    query = np.concatenate([photos_words[5], np.array([1, 1, 2], np.int32)])
    q = np.bincount(query, minlength=K) * index.idf
    want = dense @ (q / np.linalg.norm(q))
    got = index.scores(query)
    assert got.dtype == np.float32 and got.shape == (len(photos_words),)
    assert np.allclose(got, want, atol=1e-5)
    assert int(np.argmax(got)) == 5 and got[-1] == 0.0
    assert not index.scores(np.zeros(0, np.int32)).any()


def test_both_paths_give_the_same_bits(photos_words, monkeypatch) -> None:
    index = InvertedIndex.build(photos_words, K)
    query = np.concatenate(photos_words[:3])
    monkeypatch.setattr(inverted, "GATHER_UP_TO", 0)
    by_word = index.scores(query)
    monkeypatch.setattr(inverted, "GATHER_UP_TO", 10**9)
    assert np.array_equal(by_word, index.scores(query))
