"""What a :class:`~lensbox.device.search.engine.SearchEngine` embeds with.

An :class:`~lensbox.device.embedding.embedder.Embedder` (one interpreter), or the daemon's
:class:`~lensbox.device.serving.interpreters.PooledEmbedder` (each call leases one of the
pool's interpreters): both are ``QueryEmbedder``\\ s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from lensbox.device.embedding.embedder import ImageEmbedding


class QueryEmbedder(Protocol):
    def embed(
        self,
        rgb: np.ndarray,
        views: tuple[str, ...] = ...,
        settle: Callable[[np.ndarray], bool] | None = ...,
    ) -> ImageEmbedding: ...

    def embed_many(
        self,
        images: list[np.ndarray],
        views: tuple[str, ...] = ...,
        settle: Callable[[np.ndarray], bool] | None = ...,
    ) -> list[ImageEmbedding]: ...
