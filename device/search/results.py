"""From a ranking to a page of hits: the one place where filters, ``min_score``, paging,
totals and hit construction happen, for every catalog.

A catalog hands :func:`page_hits` a *ranking* (``exact -> (rows, raw scores, exhaustive)``,
best first), a *fetch* (``rows -> items``, None for a row that is gone) and an *annotate*
step (verification evidence and verdicts). A filtered search that finds too few items
among Annoy's candidates asks the ranking again with ``exact=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np

from lensbox.device.bundle.reader import Item
from lensbox.device.search.engine import Hit

Predicate = Callable[[Item], bool]
# (exact (None: the catalog decides), whole) -> (item rows, raw scores, whether every item
# was scored). Rows come best first: all of them when ``whole``, else at least the first
# offset + top_k (the rest of an exhaustive ranking follows in any order, for the total).
Ranking = Callable[[Optional[bool], bool], tuple[np.ndarray, np.ndarray, bool]]
Fetch = Callable[[list[int]], Sequence[Item | None]]
Annotate = Callable[[list[Hit]], list[Hit]]

CHUNK = 512  # items fetched per metadata look-up while filtering


def make_hit(row: int, raw: float, item: Item) -> Hit:
    """A hit with its score as the API reports it: cosine clipped to 0-1, 4 decimals."""
    return Hit(row, item["id"], round(min(1.0, max(0.0, raw)), 4), item)


def hits_of(rows: np.ndarray, scores: np.ndarray, fetch: Fetch) -> list[Hit]:
    """Hits for ``rows`` in order, skipping rows whose item is gone."""
    items = fetch([int(r) for r in rows])
    return [
        make_hit(int(r), float(s), it) for r, s, it in zip(rows, scores, items) if it is not None
    ]


def filter_hits(
    rows: np.ndarray, scores: np.ndarray, predicate: Predicate, fetch: Fetch
) -> list[Hit]:
    """Hits whose item passes ``predicate``, in rank order, fetching metadata in chunks."""
    out = []
    for start in range(0, len(rows), CHUNK):
        chunk = [int(r) for r in rows[start : start + CHUNK]]
        for row, score, item in zip(chunk, scores[start : start + CHUNK], fetch(chunk)):
            if item is not None and predicate(item):
                out.append(make_hit(row, float(score), item))
    return out


def page_hits(
    ranking: Ranking,
    fetch: Fetch,
    annotate: Annotate,
    top_k: int = 10,
    offset: int = 0,
    predicate: Predicate | None = None,
    min_score: float = 0.0,
) -> tuple[list[Hit], int]:
    """A page of hits and how many matched; filters apply before the page is cut.

    ``total`` counts every item scoring at least ``min_score`` on an exhaustive ranking,
    and the matching candidates on an Annoy one (a lower bound there).
    """
    wanted = offset + top_k
    # A filter walks the ranking in order until the page is full: it needs all of it sorted.
    rows, scores, exhaustive = ranking(None, predicate is not None)
    keep = scores >= min_score
    rows, scores = rows[keep], scores[keep]
    if predicate is None:
        page = slice(offset, wanted)
        return annotate(hits_of(rows[page], scores[page], fetch)), len(rows)
    passing = filter_hits(rows, scores, predicate, fetch)
    if len(passing) < wanted and not exhaustive:  # too few candidates passed: scan all
        rows, scores, _ = ranking(True, True)
        keep = scores >= min_score
        passing = filter_hits(rows[keep], scores[keep], predicate, fetch)
    return annotate(passing[offset:wanted]), len(passing)
