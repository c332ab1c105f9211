"""Bundles and TFLite interpreters for the daemon.

A TFLite interpreter is not thread-safe, and on a 2-core board two busy interpreters are
all the CPU there is. So the daemon keeps a small fixed set of interpreter *slots*
(``server.interpreters``), shared by every loaded bundle: instance ``X`` has one
:class:`SearchEngine` per slot, engine ``i`` embedding with interpreter ``i``. A request
leases a slot for the few milliseconds of inference only; decoding, ranking, filtering and
rendering run outside it, on waitress' threads. See device/api/README.md for the
measurements behind the defaults.

``lensbox serve`` builds an :class:`InterpreterPool`; the bundle manager opens every bundle
on the pool's models (:meth:`InterpreterPool.opener`), so a hot-swapped or compacted bundle
needs no extra interpreter.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.api.errors import ApiError
from lensbox.device.embedding.embedder import Embedder, ImageEmbedding, load_labels
from lensbox.device.search.engine import SearchEngine

log = logging.getLogger("lensbox.api")

LEASE_TIMEOUT_S = 60.0


class InterpreterSlots:
    """A pool of slot numbers; LIFO so the most recently used interpreter (warm caches)
    is handed out first."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._free: queue.LifoQueue[int] = queue.LifoQueue()
        for slot in range(count):
            self._free.put(slot)

    @contextmanager
    def lease(self, timeout: float = LEASE_TIMEOUT_S) -> Iterator[tuple[int, float]]:
        """Yield (slot, seconds waited)."""
        started = time.perf_counter()
        try:
            slot = self._free.get(timeout=timeout)
        except queue.Empty as exc:
            raise ApiError("not_ready", "every interpreter is busy; try again") from exc
        try:
            yield slot, time.perf_counter() - started
        finally:
            self._free.put(slot)


class PooledEmbedder:
    """An :class:`Embedder` look-alike over every interpreter slot.

    What the bundle manager's engines carry (``engine.embedder``): each ``embed`` call leases
    a free interpreter from the pool, so work the manager does on its own (validating a new
    bundle, a catalog change without an explicit embedder) never runs an interpreter that
    an HTTP request holds. The request path leases a slot itself and uses :meth:`at`.
    """

    def __init__(self, slots: InterpreterSlots, embedders: Sequence[Embedder]) -> None:
        self.slots = slots
        self.embedders = list(embedders)
        self.pooling = self.embedders[0].pooling
        self.model = self.embedders[0].model  # for model.sha256 / input_size look-ups

    def at(self, slot: int) -> Embedder:
        """The plain embedder of ``slot``; the caller holds that slot's lease."""
        return self.embedders[slot]

    def embed(
        self,
        rgb: np.ndarray,
        views: tuple[str, ...] = ("full",),
        settle: Callable[[np.ndarray], bool] | None = None,
    ) -> ImageEmbedding:
        with self.slots.lease() as (slot, _waited):
            return self.embedders[slot].embed(rgb, views, settle)

    def embed_many(
        self,
        images: list[np.ndarray],
        views: tuple[str, ...] = ("full",),
        settle: Callable[[np.ndarray], bool] | None = None,
    ) -> list[ImageEmbedding]:
        with self.slots.lease() as (slot, _waited):
            return self.embedders[slot].embed_many(images, views, settle)


class InterpreterPool:
    """``server.interpreters`` TFLite models shared by every bundle, and their slots.

    :meth:`opener` is the ``engine_opener`` the daemon gives its
    :class:`~lensbox.device.live.manager.BundleManager`: bundles (deployed, reloaded,
    compacted) open on these models, so no extra interpreter is ever loaded.
    """

    def __init__(self, models: Sequence[Any], labels: list[str] | None = None) -> None:
        if not models:
            raise ValueError("an interpreter pool needs at least one model")
        self.models = list(models)
        self.slots = InterpreterSlots(len(self.models))
        self.labels = labels if labels is not None else load_labels()
        self._embedders: dict[str, PooledEmbedder] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        count: int,
        threads: int = 1,
        runtime: str = "auto",
        model_path: str | Path | None = None,
    ) -> InterpreterPool:
        from lensbox.device.embedding.model import TFLiteModel

        if model_path is None:
            from lensbox.models import MODEL_PATH

            model_path = MODEL_PATH
        return cls([TFLiteModel(model_path, threads, runtime) for _ in range(count)])

    @property
    def sha256(self) -> str:
        return self.models[0].sha256

    def embedder(self, pooling: str) -> PooledEmbedder:
        """One pooled embedder per pooling mode (bundles may differ in it)."""
        with self._lock:
            found = self._embedders.get(pooling)
            if found is None:
                found = PooledEmbedder(
                    self.slots, [Embedder(m, pooling, self.labels) for m in self.models]
                )
                self._embedders[pooling] = found
            return found

    def opener(self, settings: Any = None) -> Callable[[Path], SearchEngine]:
        """``path -> SearchEngine`` on this pool's models (checks the bundle's model hash).

        ``settings``: SearchSettings, or a function returning the current ones."""
        from lensbox.device.bundle.reader import open_bundle

        def open_engine(path: Path) -> SearchEngine:
            bundle = open_bundle(path, self.sha256)
            pooling = bundle.manifest["descriptor"]["pooling"]
            current = settings() if callable(settings) else settings
            return SearchEngine(bundle, self.embedder(pooling), current)

        return open_engine

    def warmup(self) -> None:
        """One inference per interpreter, so the first requests do not pay for it."""
        gray = np.full((256, 256, 3), 128, np.uint8)
        for slot in range(len(self.models)):
            Embedder(self.models[slot], "gem", self.labels).embed(gray)
        log.info("warmed up %d interpreter(s)", len(self.models))
