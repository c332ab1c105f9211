"""A live catalog's ranking: the base bundle's (tombstoned rows dropped) merged with an
exact scan of the delta, best first; and item look-ups across both."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lensbox.device.bundle.reader import Item
from lensbox.device.embedding.descriptor import dequantize_int8
from lensbox.device.features.local import LocalFeatures
from lensbox.device.features.rerank import Evidence
from lensbox.device.live.items import as_item
from lensbox.device.live.view import View
from lensbox.device.search.engine import insert_ranked


def ranked(
    view: View,
    queries: np.ndarray,
    wanted: int,
    exact: bool | None,
    local: LocalFeatures | None = None,
    evidence: dict[int, Evidence] | None = None,
    whole: bool = True,
    budget: int | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Merged (rows, raw scores) best first (all, or when not ``whole`` at least the first
    ``wanted``: see :data:`~lensbox.device.search.results.Ranking`), and whether the base
    ranking was exhaustive. ``budget``: the query's own verification budget
    (:meth:`~lensbox.device.search.engine.SearchEngine.verify`)."""
    engine = view.engine
    bundle = engine.bundle
    rows = np.zeros(0, np.int64)
    scores = np.zeros(0, np.float32)
    exhaustive = True
    ordered = 0
    if len(bundle.vectors):
        use_exact = engine.use_exact(queries) if exact is None else exact
        # Exact: every item (so totals count the whole catalog; the exact path only runs
        # below exact_below vectors). Annoy: enough candidates to make up for tombstoned
        # ones.
        want = None if use_exact else wanted + len(view.hidden)
        head = None if whole or not use_exact else wanted + len(view.hidden)
        rows, scores = engine.rank(queries, want, use_exact, local, evidence, head, budget)
        rows, scores = np.asarray(rows, np.int64), np.asarray(scores, np.float32)
        exhaustive = use_exact or len(rows) >= bundle.item_count
        ordered = len(rows) if head is None else min(head, len(rows))
        if len(view.hidden_arr):
            keep = ~np.isin(rows, view.hidden_arr)
            ordered = int(keep[:ordered].sum())
            rows, scores = rows[keep], scores[keep]
    if len(view.alive_arr):
        delta_rows, delta_scores_ = delta_scores(view, queries)
        rows, scores, _ = insert_ranked(rows, scores, ordered, delta_rows, delta_scores_)
    return rows, scores, exhaustive


def delta_scores(view: View, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact best score per live delta item (rows numbered after the base rows)."""
    keep = np.isin(view.vec_slot, view.alive_arr)
    vecs = dequantize_int8(view.vectors[keep], view.engine.bundle.int8_scale)
    slots = view.vec_slot[keep]
    best = (vecs @ queries.T).max(axis=1)
    starts = np.flatnonzero(np.r_[True, np.diff(slots) != 0])
    per_slot = np.maximum.reduceat(best, starts)
    return (view.base_rows + slots[starts]).astype(np.int64), per_slot.astype(np.float32)


def items_of(view: View, rows: Sequence[int]) -> list[Item | None]:
    """Items of merged rows, in order; None for a base row the bundle did not return."""
    base_n = view.base_rows
    base = [int(r) for r in rows if r < base_n]
    found = dict(zip(base, view.engine.bundle.items(base)))
    if len(found) != len(base):  # a row the bundle did not return: look each up
        found = {r: it for r in base for it in view.engine.bundle.items([r])}
    out: list[Item | None] = []
    for r in rows:
        r = int(r)
        out.append(found.get(r) if r < base_n else as_item(view.slots[r - base_n]))
    return out
