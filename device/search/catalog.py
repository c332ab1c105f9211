"""What serves a search: the read side every catalog offers.

One implementation: :class:`~lensbox.device.live.catalog.LiveCatalog`, a bundle plus its
live changes in the daemon (read-only when the box takes no changes), or the bundle as built
(no journal: :func:`~lensbox.device.live.catalog.open_catalog`, for the CLI, the standalone
kiosk, the builder's calibration, the benchmarks and the tests). Every search goes through
one: a :class:`~lensbox.device.search.engine.SearchEngine` only embeds, ranks a bundle's
vectors, verifies and annotates (it has no ``search_image``/``search_vectors``); the paging,
filters and hits of every search are :func:`~lensbox.device.search.results.page_hits`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lensbox.device.bundle.reader import Bundle, Item
from lensbox.device.embedding.subject import Box
from lensbox.device.features.local import LocalFeatures
from lensbox.device.search.engine import Hit, QueryEmbedding, SearchResult
from lensbox.device.search.results import Predicate


@runtime_checkable
class Catalog(Protocol):
    """Search and item look-ups over one bundle and whatever changed since it was built."""

    @property
    def bundle(self) -> Bundle: ...

    def embed_query(
        self,
        rgb: np.ndarray,
        region: Box | None = None,
        views: tuple[str, ...] | None = None,
        embedder: Any = None,
    ) -> QueryEmbedding: ...

    def search_vectors(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        min_score: float = 0.0,
        local: LocalFeatures | None = None,
        verify: int | None = None,
    ) -> tuple[list[Hit], int]: ...

    def search_image(
        self,
        rgb: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        region: Box | None = None,
    ) -> SearchResult: ...

    def item_by_id(self, item_id: str) -> tuple[int, Item] | None: ...

    def get(self, item_id: str) -> Item | None: ...

    def item_vectors(self, item_id: str) -> np.ndarray | None: ...

    def all_items(self, chunk: int = 2000) -> Iterator[tuple[int, Item]]: ...

    def find_ids(self, product_id: str) -> list[str]: ...

    def count(self) -> int: ...
