"""The scale bench's recall definitions: strict overlap is not the only one it reports.

ann-benchmarks' distance-tolerant recalls count a returned item when its cosine distance is
within 1e-3 (additive) or 1% (relative) of the exact 10th's. These tests pin the two
thresholds and the exact ranking's gap summary on hand-made scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.scale import ExactTop, tolerant_recalls


def test_tolerant_recalls_count_near_ties_and_not_real_misses() -> None:
    # Exact 10th: score 0.5, distance 0.5. 1e-3 slack: distance <= 0.501; 1%: <= 0.505.
    returned = np.array([0.9, 0.6, 0.55, 0.5, 0.5, 0.4995, 0.4995, 0.497, 0.497, 0.49])
    slack, eps = tolerant_recalls(returned, 0.5)
    assert slack == pytest.approx(0.7)  # the two at 0.497 and the one at 0.49 are out
    assert eps == pytest.approx(0.9)  # only 0.49 (distance 0.51) is out


def test_a_short_answer_counts_its_missing_places_as_misses() -> None:
    slack, eps = tolerant_recalls(np.array([0.8, 0.7, 0.6]), 0.5)
    assert (slack, eps) == (pytest.approx(0.3), pytest.approx(0.3))


def test_exact_gaps_are_per_query_medians() -> None:
    ranks = np.arange(100, dtype=np.float32)
    # Two queries; scores fall by 0.001 per rank, the second query 0.1 lower throughout.
    scores = np.stack([0.9 - 0.001 * ranks, 0.8 - 0.001 * ranks])
    exact = ExactTop(np.tile(np.arange(100), (2, 1)), scores)
    gaps = exact.gaps()
    assert gaps["ranks"][1] == pytest.approx(0.85)
    assert gaps["ranks"][10] == pytest.approx(0.85 - 0.009)
    assert gaps["10-11"] == pytest.approx(0.001, abs=1e-6)
    assert gaps["10-100"] == pytest.approx(0.090, abs=1e-6)
    assert exact.top10.shape == (2, 10)


def test_a_ranking_shallower_than_100_leaves_the_deep_gap_out() -> None:
    exact = ExactTop(np.zeros((1, 20), np.int64), np.linspace(1, 0, 20)[None, :])
    gaps = exact.gaps()
    assert 100 not in gaps["ranks"] and gaps["10-100"] is None
    assert gaps["10-11"] is not None
