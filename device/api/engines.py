"""Bundles and TFLite interpreters for the daemon.

A TFLite interpreter is not thread-safe, and on a 2-core board two busy interpreters are
all the CPU there is. So the daemon keeps a small fixed set of interpreter *slots*
(``server.interpreters``), shared by every loaded bundle: instance ``X`` has one
:class:`SearchEngine` per slot, engine ``i`` embedding with interpreter ``i``. A request
leases a slot for the few milliseconds of inference only; decoding, ranking, filtering and
rendering run outside it, on waitress' threads. See device/api/README.md for the
measurements behind the defaults.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lensbox.device.api.errors import ApiError
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


@dataclass
class Instance:
    """One named bundle with its engines (one per interpreter slot)."""

    name: str
    engines: list[SearchEngine]
    _categories: list[int] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def engine(self) -> SearchEngine:
        """For work that needs no interpreter (ranking, item lookups)."""
        return self.engines[0]

    @property
    def bundle(self):
        return self.engines[0].bundle

    def all_items(self, chunk: int = 2000) -> Iterator[tuple[int, dict]]:
        """(row, item) for every item, in row order, a chunk at a time."""
        count = self.bundle.item_count
        for start in range(0, count, chunk):
            rows = list(range(start, min(count, start + chunk)))
            yield from zip(rows, self.bundle.items(rows))

    def categories(self) -> list[int]:
        """Distinct category ids in the catalog (computed once)."""
        with self._lock:
            if self._categories is None:
                found = {it["category_id"] for _, it in self.all_items()}
                self._categories = sorted(c for c in found if c is not None)
            return self._categories


def make_instances(
    engines: Mapping[str, SearchEngine | Sequence[SearchEngine]],
) -> tuple[dict[str, Instance], InterpreterSlots]:
    """Wrap ``engines`` (one engine, or one per slot, per name) and check slot counts."""
    instances: dict[str, Instance] = {}
    counts = set()
    for name, value in engines.items():
        group = [value] if isinstance(value, SearchEngine) else list(value)
        if not group:
            raise ValueError(f"instance {name!r} has no engine")
        counts.add(len(group))
        instances[name] = Instance(name, group)
    if len(counts) > 1:
        raise ValueError("every instance needs the same number of engines (one per interpreter)")
    if len(instances) == 1 and "default" not in instances:
        only = next(iter(instances.values()))
        instances["default"] = only
    return instances, InterpreterSlots(counts.pop() if counts else 1)


def load_engines(
    bundles: Mapping[str, str | Path],
    interpreters: int = 2,
    threads: int = 1,
    runtime: str = "auto",
    settings=None,
    model_path: str | Path | None = None,
    warmup: bool = True,
) -> dict[str, list[SearchEngine]]:
    """Open every bundle once and ``interpreters`` models shared by all of them."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.embedding.embedder import Embedder, load_labels
    from lensbox.device.embedding.model import TFLiteModel

    if model_path is None:
        from lensbox.models import MODEL_PATH

        model_path = MODEL_PATH
    models = [TFLiteModel(model_path, threads, runtime) for _ in range(interpreters)]
    labels = load_labels()
    opened: dict[Path, object] = {}
    engines: dict[str, list[SearchEngine]] = {}
    for name, path in bundles.items():
        key = Path(path).resolve()
        if key not in opened:
            opened[key] = open_bundle(path, models[0].sha256)
        bundle = opened[key]
        pooling = bundle.manifest["descriptor"]["pooling"]
        engines[name] = [
            SearchEngine(bundle, Embedder(m, pooling, labels), settings) for m in models
        ]
    if warmup and engines:
        first = next(iter(engines.values()))
        gray = np.full((256, 256, 3), 128, np.uint8)
        for engine in first:
            engine.embedder.embed(gray)
        log.info("warmed up %d interpreter(s)", len(first))
    return engines
