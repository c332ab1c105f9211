"""Fuse the global ranking with the visual-word ranking, verify the shortlist, re-score.

Measured on real phone photos (bench/recognition.py): the global descriptor alone puts the
right DVD first for 39% of photos, in its top 10 for 64%; visual words find items the
global vector misses (top 10: ~85%), and verification turns almost every shortlisted true
item into the first hit. Verification is the costly step (a ~5-10 ms match per candidate),
so candidates are checked in fused order and checking stops at the first clear match.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lensbox.device.features.local import LocalFeatures
from lensbox.device.features.store import LocalIndex
from lensbox.device.features.verify import Verification, VerifySettings, behind, match

# Inliers over the minimum at which the geometric evidence is ~0.8: slow enough that 120
# and 260 inliers still score apart (siblings sharing a template vs the item).
INLIER_SCALE = 40.0
# Geometric evidence never reaches certainty alone: a verified item scores below a
# near-identical global match (an item added on the box, which has no stored keypoints).
LOCAL_CEILING = 0.98


@dataclass(frozen=True)
class RerankSettings:
    """``shortlist``: items taken from each channel; ``verify``: most candidates checked per
    query (the per-query cost budget; 0 turns verification off); ``stop_inliers``: once a
    candidate is verified this well, only ``patience`` more are checked (an item that
    shares a template or artwork with the true one can verify well too; the true one, seen
    whole, has more inliers); ``rrf_k``: reciprocal-rank fusion constant (small: the head of
    each list counts most)."""

    shortlist: int = 30
    verify: int = 20
    # When none of the first ``verify`` candidates verified with ``stop_inliers``, up to this
    # many more are checked, the visual-word channel's first, and those that verify that
    # well join the ranking. Of the 39 smvs photos the first 20 answered wrongly, 15 had the
    # true DVD at visual-word rank 8-29, outside the fused top 20, verifying with 90-210
    # inliers (recall@1 0.902 -> 0.938, flat 0.780 -> 0.817, with 30 more and the PCA-
    # whitened descriptor). With the learned whitening the global shortlist holds most of
    # them: 10 more find what 30 do on every dev set (smvs 0.975 against 0.970 with none,
    # kiosk and flat unchanged), and the queries that verify nothing (3D objects: half the
    # kiosk renderings) check 30 candidates instead of 50: kiosk p99 237 -> 167 ms.
    verify_more: int = 10
    stop_inliers: int = 30
    patience: int = 2
    rrf_k: int = 10
    words: bool = True  # the visual-word channel (off: verify the global shortlist only)
    # Candidates verified at once on a thread pool (OpenCV's matcher and RANSAC release the
    # GIL): the answer is the same as checking one by one; only the wall time changes.
    workers: int = 2
    # The cascade: a global top hit this similar, this far ahead of the next, is answered
    # without verification (the bundle's calibrated "match" threshold is a floor). Measured
    # on smvs canon+droid and UKBench (quick half): 24% and 55% of queries stop here, with
    # recall@1 the same as verifying every query (bench/recognition.py, "always-verify").
    confident: float = 0.6
    margin: float = 0.1
    match: VerifySettings = field(default_factory=VerifySettings)


@dataclass
class Evidence:
    """What verification found for one item: its best photo's inliers and where it is.

    ``behind``: verified, but as the backdrop the item shown stands in front of
    (:func:`~lensbox.device.features.verify.behind`); it then ranks by its global score."""

    inliers: int
    region: list[tuple[float, float]] | None
    verified: bool
    behind: bool = False

    @property
    def support(self) -> int:
        """The inliers that count for the item being the one shown."""
        return 0 if self.behind else self.inliers


def confidence(global_score: float, inliers: int, min_inliers: int) -> float:
    """One 0-1 score from global similarity and verification.

    A verified item (at least ``min_inliers`` RANSAC inliers) has independent geometric
    evidence worth 0.5 to ``LOCAL_CEILING``, rising with the inliers; it is combined with the global
    similarity as two independent pieces of evidence, 1 - (1-g)(1-l). An unverified item
    keeps its global similarity.
    """
    g = min(1.0, max(0.0, global_score))
    if inliers < min_inliers:
        return g
    gain = 1.0 - math.exp(-(inliers - min_inliers + 1) / INLIER_SCALE)
    local = 0.5 + (LOCAL_CEILING - 0.5) * gain
    return 1.0 - (1.0 - g) * (1.0 - local)


def globally_confident(scores: np.ndarray, settings: RerankSettings, match: float = 0.0) -> bool:
    """Whether a global ranking (scores best first) is clear enough to skip verification.

    ``match``: the bundle's calibrated "match" threshold; a top hit below it is verified
    even when it leads clearly, so an answer the cascade gives is always a match."""
    if len(scores) == 0 or float(scores[0]) < max(settings.confident, match):
        return False
    return len(scores) == 1 or float(scores[0]) - float(scores[1]) >= settings.margin


def fuse(lists: list[list[int]], k: int) -> list[int]:
    """Reciprocal-rank fusion of ranked lists of item rows (weighting the word list 1.5-3x
    changed nothing on smvs canon+droid)."""
    scores: dict[int, float] = {}
    for ranked in lists:
        for rank, row in enumerate(ranked):
            scores[row] = scores.get(row, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda r: -scores[r])


def word_ranking(index: LocalIndex, query: LocalFeatures, wanted: int) -> list[int]:
    """Item rows best first by their best photo's visual-word score."""
    scores = index.word_scores(query)
    if not len(scores) or float(scores.max()) <= 0.0:
        return []
    head = min(wanted * 4, len(scores))  # sort only these: a 100k-photo argsort is ~6 ms
    order = np.argpartition(-scores, head - 1)[:head]
    order = order[np.argsort(-scores[order])]
    rows: list[int] = []
    for photo in order.tolist():
        if scores[photo] <= 0.0:
            break
        row = int(index.photo_items[photo])
        if row >= 0 and row not in rows:  # -1: the photo's item was removed
            rows.append(row)
            if len(rows) == wanted:
                break
    return rows


def verify_item(
    index: LocalIndex, query: LocalFeatures, photos: list[int], settings: VerifySettings
) -> Verification:
    best = Verification(0, 0, None)
    for photo in photos:
        found = match(query, index.features(photo), settings)
        if found.inliers > best.inliers:
            best = found
    return best


def rerank(
    index: LocalIndex,
    query: LocalFeatures,
    global_rows: list[int],
    settings: RerankSettings,
    allowed: set[int] | None = None,
) -> dict[int, Evidence]:
    """Verify the fused shortlist; evidence per checked item (the caller re-scores those,
    including items only the word channel found).

    ``allowed``: item rows that may be checked (e.g. not deleted); None: all.
    """
    if settings.verify <= 0 or len(query) < settings.match.min_inliers:
        return {}
    words = word_ranking(index, query, settings.shortlist) if settings.words else []
    if allowed is not None:
        words = [r for r in words if r in allowed]
    fused = fuse([global_rows[: settings.shortlist], words], settings.rrf_k)
    first = fused[: settings.verify]
    evidence: dict[int, Evidence] = {}
    stop = _Stopper(settings)
    if _check(index, query, first, settings, evidence, stop) or stop.extra is not None:
        return evidence  # done, or a candidate verified well and the list ran out
    seen = set(first)
    more = [r for r in dict.fromkeys(words + fused) if r not in seen][: settings.verify_more]
    further: dict[int, Evidence] = {}
    _check(index, query, more, settings, further, stop)
    # Deep in the list a weak verification is more often chance (or the object behind the
    # one held up) than the item: only a clear one counts.
    evidence.update({r: ev for r, ev in further.items() if ev.inliers >= settings.stop_inliers})
    return evidence


def _check(
    index: LocalIndex,
    query: LocalFeatures,
    rows: list[int],
    settings: RerankSettings,
    evidence: dict[int, Evidence],
    stop: _Stopper,
) -> bool:
    """Verify ``rows`` in order into ``evidence`` until ``stop`` says so (then True)."""
    photos = index.photos_of(np.asarray(rows, np.int64))

    def check(row: int) -> Verification:
        return verify_item(index, query, photos.get(row, []), settings.match)

    for row, found in _in_order(check, rows, settings.workers):
        ok = found.inliers >= settings.match.min_inliers
        backdrop = ok and behind(found, query.size)
        evidence[row] = Evidence(found.inliers, found.region if ok else None, ok, backdrop)
        # A backdrop's inliers end the checks as any item's do (as measured): the 3D item
        # in front of it seldom verifies, so checking on would mostly cost time.
        if stop.after(found.inliers):
            return True
    return False


class _Stopper:
    """Once a candidate verifies with ``stop_inliers``, ``patience`` more are checked."""

    def __init__(self, settings: RerankSettings) -> None:
        self.settings = settings
        self.extra: int | None = None

    def after(self, inliers: int) -> bool:
        if self.extra is not None:
            self.extra += 1
        elif inliers >= self.settings.stop_inliers:
            self.extra = 0
        return self.extra is not None and self.extra >= self.settings.patience


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """One small pool per process, shared by concurrent requests (so verification never
    uses more threads than the machine has cores, however many requests are in flight)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            size = max(1, min(4, os.cpu_count() or 1))
            _POOL = ThreadPoolExecutor(size, thread_name_prefix="lensbox-verify")
        return _POOL


def _in_order(
    check: Callable[[int], Verification], rows: list[int], workers: int
) -> Iterator[tuple[int, Verification]]:
    """Yield (row, check(row)) in ``rows`` order, ``workers`` checks in flight at a time.

    The consumer may stop early; at most ``workers - 1`` checks beyond that point run,
    and their results are dropped, so the evidence equals a one-by-one run's."""
    if workers <= 1 or len(rows) <= 1:
        for row in rows:
            yield row, check(row)
        return
    workers_pool = pool()
    pending = [workers_pool.submit(check, row) for row in rows[:workers]]
    following = workers
    for row in rows:
        future = pending.pop(0)
        if following < len(rows):
            pending.append(workers_pool.submit(check, rows[following]))
            following += 1
        try:
            yield row, future.result()
        except GeneratorExit:
            for f in pending:
                f.cancel()
            raise
