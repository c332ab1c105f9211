"""Annoy shortlist, exact re-rank with the stored int8 vectors, filters, paging.

Score: the cosine similarity of the (PCA-whitened, L2-normalised) descriptors, clipped to
0–1, best over the query's views and over the item's stored vectors. See README "Scores"
for what values mean in practice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lensbox.device.bundle.reader import Bundle, Item
from lensbox.device.embedding.embedder import Concept, Embedder, describe
from lensbox.device.embedding.subject import Box
from lensbox.device.embedding.views import QUERY_VIEWS, validate_views

Predicate = Callable[[Item], bool]


@dataclass(frozen=True)
class SearchSettings:
    """How queries are embedded and how hard the index is searched.

    ``candidates`` vectors per query view come back from Annoy and are re-ranked exactly.
    Below ``exact_below`` stored vectors a brute-force scan is used instead: PCA-whitened
    descriptors are nearly isotropic, the worst case for Annoy's random-projection trees
    (recall@10 vs exact 0.23 at 100k with defaults), while an exact scan of a float32 copy
    (kept while it fits in ``exact_cache_mb``: 100k x 256 dims is 98 MB) takes ~17 ms per
    query at 100k on the benchmark machine (docs/benchmarks.md, sections 2 and 4).
    """

    query_views: tuple[str, ...] = QUERY_VIEWS
    candidates: int = 100
    search_k: int = -1
    exact_below: int = 200_000
    exact_cache_mb: int = 128

    def __post_init__(self) -> None:
        validate_views(self.query_views)
        if self.candidates < 1:
            raise ValueError("candidates must be >= 1")


@dataclass
class QueryEmbedding:
    """A query image reduced to what search needs; cached by query id in the daemon."""

    vectors: np.ndarray  # (V, D) float32, L2-normalised
    concepts: list[Concept]
    subjects: list[Box]
    size: tuple[int, int]
    region: Box | None = None


@dataclass
class Hit:
    row: int
    id: str
    score: float
    item: Item


@dataclass
class SearchResult:
    hits: list[Hit]
    total: int
    query: QueryEmbedding | None
    timings: dict[str, float] = field(default_factory=dict)


class SearchEngine:
    """Search one bundle with one embedder; safe to share between threads for reading."""

    def __init__(
        self, bundle: Bundle, embedder: Embedder, settings: SearchSettings | None = None
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

    # -- embedding ---------------------------------------------------------------------
    def embed_query(
        self,
        rgb: np.ndarray,
        region: Box | None = None,
        views: tuple[str, ...] | None = None,
    ) -> QueryEmbedding:
        """Embed a query; ``region`` crops first (the contracts' Region / box)."""
        if region is not None:
            rgb = region.crop(rgb)
        emb = self.embedder.embed(rgb, views or self.settings.query_views)
        vectors = describe(emb.pooled, self.bundle.projection)
        return QueryEmbedding(vectors, emb.concepts, emb.subjects, emb.size, region)

    # -- scoring -----------------------------------------------------------------------
    def _dequantized(self, vector_ids: np.ndarray) -> np.ndarray:
        return self.bundle.vectors[vector_ids].astype(np.float32) / self.bundle.int8_scale

    def _float_blocks(self, block: int = 65536):
        """Yield (start, float32 block) over all stored vectors, from the cache if it fits."""
        vectors = self.bundle.vectors
        if self._float is None and vectors.nbytes * 4 <= self.settings.exact_cache_mb << 20:
            self._float = np.asarray(vectors, dtype=np.float32) / self.bundle.int8_scale
        if self._float is not None:
            yield 0, self._float
            return
        for start in range(0, len(vectors), block):
            yield (
                start,
                np.asarray(vectors[start : start + block], np.float32) / self.bundle.int8_scale,
            )

    def exact_scores(self, queries: np.ndarray) -> np.ndarray:
        """Best score of every item against the query views: (items_with_vectors,)."""
        best = np.empty(len(self.bundle.vectors), np.float32)
        for start, block in self._float_blocks():
            best[start : start + len(block)] = (block @ queries.T).max(axis=1)
        return np.maximum.reduceat(best, self._starts) if len(best) else best

    def _top(self, scores: np.ndarray, wanted: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Item rows and scores of the best ``wanted`` (all when None), best first."""
        if wanted is not None and wanted < len(scores):
            top = np.argpartition(-scores, wanted - 1)[:wanted]
            order = top[np.argsort(-scores[top], kind="stable")]
        else:
            order = np.argsort(-scores, kind="stable")
        return self._start_items[order], scores[order]

    def _exact_ranking(
        self, queries: np.ndarray, wanted: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._top(self.exact_scores(queries), wanted)

    def _ann_ranking(self, queries: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.settings.candidates, wanted)
        cand = set()
        axis = self.bundle.index_axis_scale
        for q in queries if axis is None else queries * axis:
            cand.update(self.bundle.index.get_nns_by_vector(q.tolist(), n, self.settings.search_k))
        ids = np.fromiter(cand, dtype=np.int64, count=len(cand))
        scores = (self._dequantized(ids) @ queries.T).max(axis=1)
        rows = self.bundle.vector_items[ids]
        best: dict[int, float] = {}
        for row, score in zip(rows.tolist(), scores.tolist()):
            if score > best.get(row, -2.0):
                best[row] = score
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        return (
            np.array([r for r, _ in ranked], np.int64),
            np.array([s for _, s in ranked], np.float32),
        )

    def use_exact(self) -> bool:
        return len(self.bundle.vectors) < self.settings.exact_below

    def rank(
        self, queries: np.ndarray, wanted: int | None, exact: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Item rows and raw scores, best first (ANN candidates unless exact)."""
        if exact is None:
            exact = self.use_exact()
        if exact:
            return self._exact_ranking(queries, wanted)
        return self._ann_ranking(queries, wanted)

    # -- search ------------------------------------------------------------------------
    def search_vectors(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        min_score: float = 0.0,
    ) -> tuple[list[Hit], int]:
        """A page of hits and how many matched; filters apply before the page is cut.

        ``total`` counts every item scoring at least ``min_score`` on an exact scan, and the
        matching candidates on an Annoy search (a lower bound there).
        """
        wanted = offset + top_k
        if predicate is None:
            if self.use_exact():
                scores = self.exact_scores(queries)
                total = int((scores >= min_score).sum())
                rows, scores = self._top(scores, wanted)
            else:
                rows, scores = self._ann_ranking(queries, wanted)
                total = int((scores >= min_score).sum())
            keep = scores >= min_score
            rows, scores = rows[keep][offset:wanted], scores[keep][offset:wanted]
            items = self.bundle.items([int(r) for r in rows])
            hits = [make_hit(int(r), float(sc), it) for r, sc, it in zip(rows, scores, items)]
            return hits, total
        exact = self.use_exact()
        rows, scores = self.rank(queries, None if exact else wanted, exact)
        keep = scores >= min_score
        passing = self._filter(rows[keep], scores[keep], predicate)
        if len(passing) < wanted and not exact:  # too few candidates passed: scan everything
            rows, scores = self._exact_ranking(queries, None)
            keep = scores >= min_score
            passing = self._filter(rows[keep], scores[keep], predicate)
        return passing[offset:wanted], len(passing)

    def _filter(self, rows: np.ndarray, scores: np.ndarray, predicate: Predicate) -> list[Hit]:
        return filter_hits(rows, scores, predicate, self.bundle.items)

    def search_image(
        self,
        rgb: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        region: Box | None = None,
    ) -> SearchResult:
        return timed_image_search(self, rgb, top_k, offset, predicate, region)


def timed_image_search(
    searcher,
    rgb: np.ndarray,
    top_k: int,
    offset: int,
    predicate: Predicate | None,
    region: Box | None,
) -> SearchResult:
    """Embed then search with ``searcher`` (an engine or a live catalog), timing both steps."""
    t0 = time.perf_counter()
    query = searcher.embed_query(rgb, region)
    t1 = time.perf_counter()
    hits, total = searcher.search_vectors(query.vectors, top_k, offset, predicate)
    t2 = time.perf_counter()
    return SearchResult(
        hits, total, query, {"embed_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3}
    )


def make_hit(row: int, raw: float, item: Item) -> Hit:
    """A hit with its score as the API reports it: cosine clipped to 0-1, 4 decimals."""
    return Hit(row, item["id"], round(min(1.0, max(0.0, raw)), 4), item)


def filter_hits(
    rows: np.ndarray,
    scores: np.ndarray,
    predicate: Predicate,
    fetch: Callable[[list[int]], list[Item | None]],
) -> list[Hit]:
    """Hits whose item passes ``predicate``, in rank order, fetching metadata in chunks;
    ``fetch`` returns the items of the rows it is given, in order (None: gone)."""
    out = []
    for start in range(0, len(rows), 512):
        chunk = [int(r) for r in rows[start : start + 512]]
        for row, score, item in zip(chunk, scores[start : start + 512], fetch(chunk)):
            if item is not None and predicate(item):
                out.append(make_hit(row, float(score), item))
    return out


def open_engine(
    bundle_path: str,
    settings: SearchSettings | None = None,
    threads: int = 2,
    runtime: str = "auto",
    model_path: str | None = None,
) -> SearchEngine:
    """Load the model and a bundle built with it; the one way the CLI and daemon start."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.embedding.model import TFLiteModel

    if model_path is None:
        from lensbox.models import MODEL_PATH

        model_path = str(MODEL_PATH)
    model = TFLiteModel(model_path, threads, runtime)
    bundle = open_bundle(bundle_path, model.sha256)
    pooling = bundle.manifest["descriptor"]["pooling"]
    return SearchEngine(bundle, Embedder(model, pooling), settings)
