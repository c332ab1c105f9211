"""Annoy shortlist, exact re-rank with the stored int8 vectors, verification: a ranker.

A :class:`SearchEngine` ranks one bundle's vectors and annotates hits; it does not page,
filter or return hits. That is the one catalog,
:class:`~lensbox.device.live.catalog.LiveCatalog` (``open_catalog`` opens one on a bundle
as built), through :func:`~lensbox.device.search.results.page_hits`.

Score: the cosine similarity of the (PCA-whitened, L2-normalised) descriptors, clipped to
0–1, best over the query's views and over the item's stored vectors. See README "Scores"
for what values mean in practice.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lensbox.device.bundle.reader import Bundle, Item
from lensbox.device.embedding.descriptor import dequantize_int8
from lensbox.device.embedding.embedder import Concept, Embedder, describe
from lensbox.device.embedding.subject import Box
from lensbox.device.embedding.views import QUERY_VIEWS, validate_views
from lensbox.device.features.local import LocalFeatures, extract
from lensbox.device.features.rerank import (
    Evidence,
    RerankSettings,
    confidence,
    globally_confident,
    pool,
    rerank,
)
from lensbox.device.features.store import LocalIndex, open_local_index
from lensbox.device.search.calibration import MATCH, WEAK, Calibration
from lensbox.device.search.protocols import QueryEmbedder

# A verified hit with fewer than this share of the best verified hit's inliers is at most
# "weak" (see SearchEngine.annotate).
SIBLING_RATIO = 0.7


@dataclass(frozen=True)
class SearchSettings:
    """How queries are embedded and how hard the index is searched.

    ``candidates`` vectors come back from Annoy for the query's lead view, looking at
    ``search_k`` index entries (each other view gets a share: :func:`view_budgets`), and are
    re-ranked exactly with the stored int8 vectors; None picks them by catalog size
    (:func:`ann_defaults`). Below ``exact_below`` stored vectors a scan of
    every int8 vector is used instead, in blocks (no float copy unless it fits in
    ``exact_cache_mb``, 0 by default: docs/benchmarks.md, sections 2-4).
    """

    query_views: tuple[str, ...] = QUERY_VIEWS
    candidates: int | None = None
    search_k: int | None = None
    exact_below: int = 200_000
    exact_cache_mb: int = 0
    rerank: RerankSettings = field(default_factory=RerankSettings)
    # A query's views other than the centre crop count this much, the centre crop the rest
    # (lean_on_centre): people aim the camera at the item, and the full frame and the
    # subject guess also see the table, the shelf or another item. Measured with the global
    # descriptor alone (bench/recognition.py, tuning sets): 0.6 against none gave UKBench
    # kiosk 0.72 -> 0.74, smvs canon 0.52 -> 0.55, droid 0.58 -> 0.62, flat 0.44 -> 0.49,
    # UKBench real views unchanged at 0.98. 0.3 behind the cascade's first stage (which
    # answers clear full frames alone), full pipeline: kiosk 0.793 -> 0.807, real views
    # 0.989 -> 0.987; a photo of the item embedded with every view scores ~0.86, not 1.
    other_view_weight: float = 0.3
    # The query cascade's first stage: the full frame is embedded and searched alone, and a
    # clear answer there (``rerank.confident``/``margin``, the calibrated match as a floor)
    # stops the query: no crops, no keypoints, no verification (SearchEngine.embed_with).
    full_first: bool = True

    def __post_init__(self) -> None:
        validate_views(self.query_views)
        if not 0.0 < self.other_view_weight <= 1.0:
            raise ValueError("other_view_weight must be in (0, 1]")
        if self.candidates is not None and self.candidates < 1:
            raise ValueError("candidates must be >= 1")


# Above this many vectors the cascade's first stage asks Annoy for its top two instead of
# scanning: at 100k vectors a scan of one view took ~5 ms against ~6 ms for a model run.
FIRST_STAGE_SCAN = 20_000
# Single-view scans remembered per engine (one per request in flight is enough).
RECENT_SCANS = 8
# Int8 vectors converted to float32 at a time by the exact scan (4 MB at 256 dims).
EXACT_BLOCK = 4096
# Bundles whose Annoy index predates the reduced PCA space keep their old defaults (and
# search every query view alike).
LEGACY_CANDIDATES, LEGACY_SEARCH_K = 100, -1
# Above this many vectors a catalog gets the deeper Annoy search and more trees.
LARGE_CATALOG = 300_000
# Share of the lead view's Annoy budget (candidates and search_k) for each other query view:
# they lean on the centre crop (lean_on_centre) and find mostly the same vectors. At 100k
# items (32 trees, centre crop 1,000 / 5,000) a twentieth kept the true item first for 99.3%
# of 150 real queries, no lookup for them for 98.0%.
OTHER_VIEW_SHARE = 0.05
# Share of it for the cascade's first stage, which needs only a clear top two of its one
# view. 0.4 keeps the stage's search_k at 100k items where it was measured (2,500); at 1M
# (1,000 / 14,000 of the defaults) Annoy's first item was the exact scan's for 98.7% of real
# full views, in 3.2 ms (99.3% with search_k 20,000).
FIRST_STAGE_SHARE = 0.4


def ann_defaults(vectors: int) -> tuple[int, int]:
    """(candidates, search_k) of a query's lead view for an index in the reduced PCA space of
    a catalog of ``vectors``, chosen from bench.scale's sweep (docs/benchmarks.md section 4).

    The lead view (the centre crop) gets the whole budget, each other view
    ``OTHER_VIEW_SHARE`` of it, the cascade's first stage ``FIRST_STAGE_SHARE`` (see
    :func:`view_budgets`). At 1M items (48 dims, 32 trees) search_k 50,000 for the centre
    crop found 0.75 of the exact top 10 in 9.7 ms where 20,000 for each of three views (the
    previous default, 16 trees) found 0.62 in 9.4 ms: the views overlap, so Annoy's work on
    three of them mostly found the same vectors three times. The default is 35,000 (0.70 in
    7.2 ms, 1.5 model runs): #13 asks for search within 10 ms where a model run takes 6 ms,
    and every setting that kept the true item first within a point of exact search was
    short of its recall@10 target anyway (docs/benchmarks.md section 4)."""
    if vectors <= LARGE_CATALOG:
        return 1_000, 6_250
    return 2_500, 35_000


def index_trees(vectors: int) -> int:
    """Annoy trees for a catalog of ``vectors`` (``lensbox build --trees`` overrides it).

    At 1M items 32 trees instead of 16 found 0.70 of the exact top 10 instead of 0.65 with
    the default search (2,500 / 35,000) in the same time, for an index of 582 MB instead of
    393 MB; at 100k they changed little (docs/benchmarks.md section 4)."""
    return 16 if vectors <= LARGE_CATALOG else 32


def scaled_budget(candidates: int, search_k: int, share: float) -> tuple[int, int]:
    """``share`` of an Annoy budget (a search_k below 0, Annoy's own default, stays)."""
    if share == 1.0:
        return candidates, search_k
    k = search_k if search_k < 0 else max(1, round(search_k * share))
    return max(1, round(candidates * share)), k


def view_budgets(views: int, lead: int, candidates: int, search_k: int) -> list[tuple[int, int]]:
    """(candidates, search_k) for each of a query's ``views`` Annoy lookups: the whole budget
    for view ``lead``, ``OTHER_VIEW_SHARE`` of it for the others; a legacy budget (search_k
    below 0) for every view alike, as such bundles were searched before."""
    if search_k < 0:
        return [(candidates, search_k)] * views
    other = scaled_budget(candidates, search_k, OTHER_VIEW_SHARE)
    return [(candidates, search_k) if v == lead else other for v in range(views)]


@dataclass
class QueryEmbedding:
    """A query image reduced to what search needs; cached by query id in the daemon."""

    vectors: np.ndarray  # (V, D) float32, L2-normalised, then lean_on_centre()
    concepts: list[Concept]
    subjects: list[Box]
    size: tuple[int, int]
    region: Box | None = None
    local: LocalFeatures | None = None  # keypoints, when the bundle has local features
    views: tuple[str, ...] = ()  # the views embedded: ("full",) when the cascade settled


@dataclass
class Hit:
    """One ranked item, from the engine to every contract. ``inliers``/``region`` come from
    geometric verification (region: the catalog photo's corners in the query image's
    pixels); ``verdict`` from the bundle's calibrated thresholds.

    A cloud fallback hit has no ``row``, ``source`` ``cloud:<provider>`` and, when the
    provider gives no similarity (Yandex), ``score_kind`` ``rank``. ``rank``: its place
    in the answer, 0-based."""

    row: int | None
    id: str
    score: float
    item: Item
    inliers: int | None = None
    region: list[tuple[float, float]] | None = None
    verdict: str | None = None
    source: str = "local"
    score_kind: str = "similarity"
    rank: int = 0


@dataclass
class SearchResult:
    hits: list[Hit]
    total: int
    query: QueryEmbedding | None
    timings: dict[str, float] = field(default_factory=dict)


def lean_on_centre(vectors: np.ndarray, views: tuple[str, ...], weight: float) -> np.ndarray:
    """Blend each query view other than the centre crop toward the centre crop's vector.

    An item then scores through such a view ``weight * cos(view) + (1 - weight) *
    cos(centre)`` (a dot product is linear, so every scoring path sees it). A photo of the
    item alone still scores near 1; an item only the full frame or the subject guess sees,
    such as the product on the shelf behind the one held up, loses its lead. Without a
    centre view the vectors are returned as they are."""
    if "center" not in views or weight >= 1.0:
        return vectors
    centre = vectors[views.index("center")]
    out = vectors * np.float32(weight) + centre * np.float32(1.0 - weight)
    out[views.index("center")] = centre
    return out.astype(np.float32, copy=False)


class SearchEngine:
    """Rank one bundle's vectors with one embedder; safe to share between threads for reading.

    Embedding, exact or Annoy ranking, verification and :meth:`annotate`; a search (filters,
    pages, hits) goes through a catalog (:class:`~lensbox.device.live.catalog.LiveCatalog`).
    """

    def __init__(
        self, bundle: Bundle, embedder: QueryEmbedder, settings: SearchSettings | None = None
    ) -> None:
        self.bundle = bundle
        self.embedder = embedder
        self.settings = settings or SearchSettings()
        items = bundle.vector_items
        if len(items) and np.any(np.diff(items) < 0):
            raise ValueError("bundle vectors must be grouped by item (vector_items sorted)")
        self._starts = np.flatnonzero(np.r_[True, np.diff(items) != 0]) if len(items) else items
        self._start_items = items[self._starts] if len(items) else items
        self._float: np.ndarray | None = None
        # The cascade's first stage scans with the full view; when the query stops there,
        # the search that follows scans with the same vector: its scores are kept here.
        self._recent: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()
        # Above FIRST_STAGE_SCAN vectors the first stage settles through Annoy's shortlist;
        # the search that follows ranks by that same shortlist instead of scanning every
        # vector for the rest of its page (keys of the settled full views, as ``_recent``).
        self._screened: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.local: LocalIndex | None = open_local_index(
            bundle.path, bundle.manifest, bundle.item_count
        )
        self.calibration = Calibration.from_manifest(bundle.manifest)

    # -- embedding ---------------------------------------------------------------------
    def embed_query(
        self,
        rgb: np.ndarray,
        region: Box | None = None,
        views: tuple[str, ...] | None = None,
    ) -> QueryEmbedding:
        """Embed a query; ``region`` crops first (the contracts' Region / box)."""
        return self.embed_with(self.embedder, rgb, region, views)

    def embed_with(
        self,
        embedder: QueryEmbedder,
        rgb: np.ndarray,
        region: Box | None = None,
        views: tuple[str, ...] | None = None,
    ) -> QueryEmbedding:
        """As :meth:`embed_query` with the given embedder (one leased from a pool)."""
        if region is not None:
            rgb = region.crop(rgb)
        views = views or self.settings.query_views
        keypoints: Future[LocalFeatures | None] | None = None

        def settle(full: np.ndarray) -> bool:
            nonlocal keypoints
            if self.settled(full):
                return True
            keypoints = pool().submit(self.local_features, rgb)  # overlaps the crops' runs
            return False

        cascade = self.settings.full_first and "full" in views and len(views) > 1
        if not cascade:
            # Keypoints are found on another thread while the model runs (both release the GIL).
            keypoints = pool().submit(self.local_features, rgb)
        emb = embedder.embed(rgb, views, settle if cascade else None)
        vectors = describe(emb.pooled, self.bundle.projection)
        vectors = lean_on_centre(vectors, emb.views, self.settings.other_view_weight)
        local = keypoints.result() if keypoints is not None else None
        return QueryEmbedding(
            vectors, emb.concepts, emb.subjects, emb.size, region, local, emb.views
        )

    def settled(self, full: np.ndarray) -> bool:
        """The cascade's first stage: does the pooled full view alone give a clear answer?"""
        query = describe(full[None, :], self.bundle.projection)
        scanned = self.use_exact() and len(self.bundle.vectors) <= FIRST_STAGE_SCAN
        # A large catalog is screened through Annoy: the scan would cost most of a model
        # run, and again, on other vectors, for every query that goes on.
        if scanned:
            rows, scores = self._exact_ranking(query, 2)
        else:
            rows, scores = self._ann_ranking(query, 2, FIRST_STAGE_SHARE)
        clear = globally_confident(scores, self.settings.rerank, self.calibration.match)
        if clear and not scanned:  # the search that follows ranks by this shortlist
            rows.setflags(write=False)
            scores.setflags(write=False)
            self._remember(self._screened, query, (rows, scores))
        return clear

    def local_features(self, rgb: np.ndarray) -> LocalFeatures | None:
        """The query's keypoints, when this bundle can verify (same code as the builder)."""
        if self.local is None or self.settings.rerank.verify <= 0:
            return None
        settings = self.local.settings
        return extract(rgb, settings, settings.query_features)

    # -- scoring -----------------------------------------------------------------------
    def _dequantized(self, vector_ids: np.ndarray) -> np.ndarray:
        return dequantize_int8(self.bundle.vectors[vector_ids], self.bundle.int8_scale)

    def exact_scores(self, queries: np.ndarray) -> np.ndarray:
        """Best score of every item against the query views (a few recent single-view
        queries' scores are remembered: see ``_recent``)."""
        if len(queries) != 1:
            return self._scan(queries)
        with self._recent_lock:
            found = self._recent.get(_key(queries))
        if found is not None:
            return found
        found = self._scan(queries)
        found.setflags(write=False)
        self._remember(self._recent, queries, found)
        return found

    def _remember(self, memo: OrderedDict, queries: np.ndarray, value: Any) -> None:
        with self._recent_lock:
            memo[_key(queries)] = value
            while len(memo) > RECENT_SCANS:
                memo.popitem(last=False)

    def _scan(self, queries: np.ndarray) -> np.ndarray:
        """Best score of every item against the query views: (items_with_vectors,).

        The int8 vectors are scored ``EXACT_BLOCK`` rows at a time through one small float32
        buffer, with the int8 scale folded into the queries, so no float copy of the
        catalog is kept (unless ``exact_cache_mb`` allows one: same scores, less work)."""
        vectors = self.bundle.vectors
        best = np.empty(len(vectors), np.float32)
        if self._float is None and vectors.nbytes * 4 <= self.settings.exact_cache_mb << 20:
            self._float = dequantize_int8(np.asarray(vectors), self.bundle.int8_scale)
        if self._float is not None:
            np.dot(self._float, np.ascontiguousarray(queries[0], np.float32), out=best)
            for q in queries[1:]:  # one product per view, as below
                np.maximum(best, self._float @ np.ascontiguousarray(q, np.float32), out=best)
        elif len(vectors):
            # One matrix-vector product per query view: BLAS's matrix product is 2x slower
            # than that for the 1-3 columns a query has (measured at 100k rows).
            scale = np.float32(1.0 / self.bundle.int8_scale)
            cols = [np.ascontiguousarray(q, np.float32) * scale for q in queries]
            rows = min(EXACT_BLOCK, len(vectors))
            buf = np.empty((rows, vectors.shape[1]), np.float32)
            tmp = np.empty(rows, np.float32)
            for start in range(0, len(vectors), EXACT_BLOCK):
                chunk = vectors[start : start + EXACT_BLOCK]
                part, out = buf[: len(chunk)], best[start : start + len(chunk)]
                np.copyto(part, chunk, casting="unsafe")
                np.dot(part, cols[0], out=out)
                for col in cols[1:]:
                    np.maximum(out, np.dot(part, col, out=tmp[: len(chunk)]), out=out)
        return np.maximum.reduceat(best, self._starts) if len(best) else best

    def _top(
        self, scores: np.ndarray, wanted: int | None, head: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item rows and scores of the best ``wanted`` (all when None), best first. With
        ``head`` (and ``wanted`` None): every row, but only the first ``head`` in order, the
        rest after them in any order (see :func:`insert_ranked`)."""
        if wanted is not None and wanted < len(scores):
            top = np.argpartition(-scores, wanted - 1)[:wanted]
            order = top[np.argsort(-scores[top], kind="stable")]
        elif wanted is None and head is not None and 0 < head < len(scores):
            split = np.argpartition(-scores, head - 1)
            first = split[:head]
            order = np.concatenate([first[np.argsort(-scores[first], kind="stable")], split[head:]])
        else:
            order = np.argsort(-scores, kind="stable")
        return self._start_items[order], scores[order]

    def row_scores(self, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Exact global score of each item row (best over its vectors and the query views)."""
        pos = np.searchsorted(self._start_items, rows)
        out = np.full(len(rows), -1.0, np.float32)
        for i, (p, row) in enumerate(zip(pos.tolist(), rows.tolist())):
            if p >= len(self._starts) or self._start_items[p] != row:
                continue
            end = self._starts[p + 1] if p + 1 < len(self._starts) else len(self.bundle.vectors)
            vecs = self._dequantized(np.arange(self._starts[p], end))
            out[i] = float((vecs @ queries.T).max())
        return out

    def verify(
        self, rows: np.ndarray, local: LocalFeatures | None, budget: int | None = None
    ) -> dict[int, Evidence]:
        """Local evidence for the head of a global ranking (empty without local features).

        ``budget``: this query's ``verify`` (candidates checked first) instead of the
        settings' (a request's own; 0: none)."""
        if local is None or self.local is None or not len(rows):
            return {}
        settings = self.settings.rerank
        if budget is not None:
            settings = replace(settings, verify=max(0, budget))
        return rerank(self.local, local, rows.tolist(), settings)

    def rescore(
        self, queries: np.ndarray, evidence: dict[int, Evidence]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, confidence) of the verified-or-checked items."""
        rows = np.fromiter(evidence, np.int64, len(evidence))
        globals_ = self.row_scores(rows, queries)
        need = self.settings.rerank.match.min_inliers
        conf = [
            confidence(float(g), evidence[int(r)].support, need) for r, g in zip(rows, globals_)
        ]
        return rows, np.asarray(conf, np.float32)

    def refine(
        self,
        queries: np.ndarray,
        rows: np.ndarray,
        scores: np.ndarray,
        local: LocalFeatures | None,
        evidence: dict[int, Evidence] | None = None,
        ordered: int | None = None,
        budget: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-rank (rows, scores) with verification of its head; ``ordered``: how many of
        the first rows are in order (None: all), as many or more afterwards; ``budget``:
        see :meth:`verify`.

        Items found only by the visual-word channel join the ranking with their exact
        global score combined with their verification. ``evidence`` (a dict) receives what
        was found, for the hits.
        """
        if globally_confident(scores, self.settings.rerank, self.calibration.match):
            return rows, scores  # the cascade: a clear global answer needs no verification
        found = self.verify(rows, local, budget)
        if not found:
            return rows, scores
        if evidence is not None:
            evidence.update(found)
        ev_rows, ev_scores = self.rescore(queries, found)
        keep = ~np.isin(rows, ev_rows)
        ordered = len(rows) if ordered is None else min(ordered, len(rows))
        kept = int(keep[:ordered].sum())
        rows, scores, _ = insert_ranked(rows[keep], scores[keep], kept, ev_rows, ev_scores)
        return rows, scores

    def annotate(self, hits: list[Hit], evidence: dict[int, Evidence]) -> list[Hit]:
        """Attach verification evidence and the calibrated verdict to each hit.

        A verified hit is a ``match`` only when it is about as well supported as the best
        verified item (``SIBLING_RATIO`` of its inliers): items sharing a template or
        artwork with the one in view verify too, with fewer inliers, and must not read as
        the item.
        """
        best = max((ev.support for ev in evidence.values() if ev.verified), default=0)
        for hit in hits:
            ev = None if hit.row is None else evidence.get(hit.row)
            if ev is not None:
                hit.inliers = ev.inliers
                hit.region = ev.region
            verdict = self.calibration.verdict(hit.score)
            weaker = ev is None or ev.support < SIBLING_RATIO * best
            if verdict == MATCH and best and weaker:
                verdict = WEAK
            hit.verdict = verdict
        return hits

    def _exact_ranking(
        self, queries: np.ndarray, wanted: int | None, head: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._top(self.exact_scores(queries), wanted, head)

    def ann_params(self) -> tuple[int, int]:
        """(candidates, search_k) of the lead view: the settings' where given, else by size."""
        if self.bundle.ann_projection is None:
            candidates, search_k = LEGACY_CANDIDATES, LEGACY_SEARCH_K
        else:
            candidates, search_k = ann_defaults(len(self.bundle.vectors))
        s = self.settings
        return (
            candidates if s.candidates is None else s.candidates,
            search_k if s.search_k is None else s.search_k,
        )

    def _lead_view(self, views: int) -> int:
        """Which of a query's ``views`` vectors gets the whole Annoy budget: the centre crop
        of a query embedded with every configured view, else the first."""
        names = self.settings.query_views
        return names.index("center") if views == len(names) and "center" in names else 0

    def _ann_ranking(
        self, queries: np.ndarray, wanted: int, share: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Annoy's shortlist per query view (in the bundle's index space), re-ranked exactly
        with the stored int8 vectors: best score per item, best first. ``share``: of the
        lead view's budget, for a query of one view (the cascade's first stage)."""
        candidates, search_k = self.ann_params()
        if len(queries) == 1 and wanted <= candidates:  # the first stage's, when it settled
            with self._recent_lock:
                settled = self._screened.get(_key(queries))
            if settled is not None:
                return settled
        candidates, search_k = scaled_budget(candidates, search_k, share)
        budgets = view_budgets(len(queries), self._lead_view(len(queries)), candidates, search_k)
        found: list[int] = []
        for q, (n, k) in zip(self.bundle.index_space.apply(queries), budgets):
            n = max(n, wanted)
            found += self.bundle.index.get_nns_by_vector(q.tolist(), n, k if k < 0 else max(k, n))
        ids = np.unique(np.asarray(found, np.int64))
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = (self._dequantized(ids) @ queries.T).max(axis=1).astype(np.float32)
        rows = self.bundle.vector_items[ids].astype(np.int64)
        order = np.lexsort((-scores, rows))  # by row, best vector of each row first
        rows, scores = rows[order], scores[order]
        first = np.r_[True, rows[1:] != rows[:-1]]
        rows, scores = rows[first], scores[first]
        ranked = np.argsort(-scores, kind="stable")
        return rows[ranked], scores[ranked]

    def use_exact(self, queries: np.ndarray | None = None) -> bool:
        """Scan every vector? Below ``exact_below`` vectors, except for ``queries`` that
        the cascade's first stage settled through Annoy (see ``_screened``)."""
        if len(self.bundle.vectors) >= self.settings.exact_below:
            return False
        if queries is None or len(queries) != 1:
            return True
        with self._recent_lock:
            return _key(queries) not in self._screened

    def rank(
        self,
        queries: np.ndarray,
        wanted: int | None,
        exact: bool | None = None,
        local: LocalFeatures | None = None,
        evidence: dict[int, Evidence] | None = None,
        head: int | None = None,
        budget: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item rows and scores, best first (ANN candidates unless exact), the head
        verified with ``local`` features when given (evidence goes into ``evidence``).

        ``head`` (exact, ``wanted`` None): every row, only the first ``head`` in order.
        A page of a search needs no more, and at 100k items sorting every score took
        longer than computing them."""
        if exact is None:
            exact = self.use_exact(queries)
        ordered = None
        if exact:
            rows, scores = self._exact_ranking(queries, wanted, head)
            ordered = head if wanted is None else None
        else:
            assert wanted is not None, "an ANN ranking needs how many rows are wanted"
            rows, scores = self._ann_ranking(queries, wanted)
        return self.refine(queries, rows, scores, local, evidence, ordered, budget)


def _key(queries: np.ndarray) -> bytes:
    """Memo key of query vectors (the first stage's and the search's are the same array)."""
    return np.asarray(queries, np.float32).tobytes()


def insert_ranked(
    rows: np.ndarray,
    scores: np.ndarray,
    ordered: int,
    new_rows: np.ndarray,
    new_scores: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Insert (``new_rows``, ``new_scores``) into a ranking whose first ``ordered`` rows are
    best first and no worse than any after them; returns the ranking and how many of its
    first rows are now in order. Ties keep the existing row first, as a stable sort of
    the two lists one after the other would; inserting beats re-sorting 100k rows."""
    order = np.argsort(-new_scores, kind="stable")
    new_rows, new_scores = new_rows[order], np.asarray(new_scores, np.float32)[order]
    rest = scores[ordered:]
    fits = new_scores >= (rest.max() if len(rest) else -np.inf)
    at = np.searchsorted(-scores[:ordered], -new_scores[fits], side="right")
    rows = np.concatenate([np.insert(rows, at, new_rows[fits]), new_rows[~fits]])
    scores = np.concatenate([np.insert(scores, at, new_scores[fits]), new_scores[~fits]])
    return rows, scores.astype(np.float32, copy=False), ordered + int(fits.sum())


def open_engine(
    bundle_path: str,
    settings: SearchSettings | None = None,
    threads: int = 2,
    runtime: str = "auto",
    model_path: str | None = None,
) -> SearchEngine:
    """Load the model and a bundle built with it: the engine a catalog ranks with
    (:func:`~lensbox.device.live.catalog.open_catalog` opens both)."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.embedding.model import TFLiteModel

    if model_path is None:
        from lensbox.models import MODEL_PATH

        model_path = str(MODEL_PATH)
    model = TFLiteModel(model_path, threads, runtime)
    bundle = open_bundle(bundle_path, model.sha256)
    pooling = bundle.manifest["descriptor"]["pooling"]
    return SearchEngine(bundle, Embedder(model, pooling), settings)
