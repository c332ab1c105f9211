"""Which catalog answers a request: the instance *registry* and the per-request
:class:`Instance`.

`lensbox serve` serves live catalogs: a :class:`ManagedInstances` registry asks the
:class:`~lensbox.device.live.manager.BundleManager` for the instance's current
:class:`~lensbox.device.live.catalog.LiveCatalog` (bundle + journal delta - tombstones) on
every request. A request takes its :class:`Instance` once and uses it to the end, so a hot
swap (deploy, reload) never changes the catalog under a running request: the old catalog
keeps answering reads until the request is done. New items are searchable and deleted ones
gone at the next request.

``create_app(config, engines)`` with fixed engines (tests, tools) gets a
:class:`StaticInstances` registry: each bundle is wrapped in a read-only
:class:`FixedCatalog` with the same read interface, so the search path is one and the same.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.api.engines import InterpreterPool, InterpreterSlots
from lensbox.device.bundle.format import PROJECTION
from lensbox.device.embedding.embedder import Embedder
from lensbox.device.live.catalog import CatalogReadOnly
from lensbox.device.search.engine import Predicate, QueryEmbedding, SearchEngine, SearchResult

FIXED_REASON = (
    "this server serves fixed bundles (started without a bundle manager); catalog "
    "changes need `lensbox serve` with a [state] directory"
)


# -- the per-request view ------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    """One instance as a request sees it: its catalog and one embedder per interpreter
    slot (embedder ``i`` runs interpreter ``i``; lease the slot first)."""

    name: str
    catalog: Any  # LiveCatalog, or FixedCatalog
    embedders: tuple[Embedder, ...]
    loaded_at: float | None = None

    @property
    def bundle(self):
        """The base bundle (manifest, dims, projection); items: ask the catalog."""
        return self.catalog.bundle

    def embed(self, slot: int, rgb: np.ndarray, region=None) -> QueryEmbedding:
        return self.catalog.embed_query(rgb, region, embedder=self.embedders[slot])

    def searcher(self, slot: int) -> SlotSearcher:
        """A SearchEngine-like object on ``slot`` (what the kiosk loop searches with)."""
        return SlotSearcher(self, slot)

    @property
    def cache_key(self) -> str:
        """Query-cache namespace: the instance name and what its query descriptors depend
        on, so a cached embedding is never reused across a bundle with another projection."""
        return f"{self.name}|{descriptor_key(self.catalog.bundle)}"

    def version(self) -> tuple:
        """Changes whenever the catalog's content may have (swap, compaction, change)."""
        cat = self.catalog
        return (id(cat), str(cat.base_path), cat.applied_seq + cat.pending_changes)


@dataclass(frozen=True)
class SlotSearcher:
    inst: Instance
    slot: int

    def search_image(
        self,
        rgb: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        region=None,
    ) -> SearchResult:
        t0 = time.perf_counter()
        query = self.inst.embed(self.slot, rgb, region)
        t1 = time.perf_counter()
        hits, total = self.inst.catalog.search_vectors(
            query.vectors, top_k, offset, predicate, local=query.local
        )
        t2 = time.perf_counter()
        return SearchResult(
            hits, total, query, {"embed_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3}
        )


_DESCRIPTOR_KEYS: dict[str, str] = {}


def descriptor_key(bundle: Any) -> str:
    """Hash of what turns a query image into this bundle's descriptors (model, pooling,
    projection); cached per bundle directory."""
    path = str(bundle.path)
    key = _DESCRIPTOR_KEYS.get(path)
    if key is None:
        manifest = bundle.manifest
        descriptor = {
            k: v
            for k, v in (manifest.get("descriptor") or {}).items()
            if k not in ("int8_scale", "catalog_views")
        }
        digest = hashlib.sha256(
            json.dumps(
                [manifest.get("model", {}).get("sha256"), descriptor], sort_keys=True, default=str
            ).encode()
        )
        projection = Path(bundle.path) / PROJECTION
        if projection.is_file():
            digest.update(projection.read_bytes())
        key = digest.hexdigest()[:16]
        _DESCRIPTOR_KEYS[path] = key
    return key


# -- a bundle as built (no changes) --------------------------------------------------------
class FixedCatalog:
    """The read side of :class:`LiveCatalog` over a plain :class:`SearchEngine`; every
    change is refused with :class:`CatalogReadOnly`."""

    applied_seq = 0
    pending_changes = 0

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.base_path = Path(engine.bundle.path).resolve()

    @property
    def bundle(self):
        return self.engine.bundle

    @property
    def embedder(self):
        return self.engine.embedder

    @property
    def settings(self):
        return self.engine.settings

    def embed_query(
        self, rgb: np.ndarray, region=None, views=None, embedder: Any = None
    ) -> QueryEmbedding:
        if embedder is None:
            return self.engine.embed_query(rgb, region, views)
        return self.engine.embed_with(embedder, rgb, region, views)

    def search_vectors(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        min_score: float = 0.0,
        local: Any = None,
    ):
        return self.engine.search_vectors(queries, top_k, offset, predicate, min_score, local)

    def item_by_id(self, item_id: str):
        return self.engine.bundle.item_by_id(item_id)

    def get(self, item_id: str) -> dict | None:
        found = self.item_by_id(item_id)
        return found[1] if found else None

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.item_by_id(item_id) is not None

    def item_vectors(self, item_id: str) -> np.ndarray | None:
        found = self.item_by_id(item_id)
        return None if found is None else self.engine.bundle.item_vectors(found[0])

    def all_items(self, chunk: int = 2000) -> Iterator[tuple[int, dict]]:
        bundle = self.engine.bundle
        for start in range(0, bundle.item_count, chunk):
            rows = list(range(start, min(bundle.item_count, start + chunk)))
            yield from zip(rows, bundle.items(rows))

    def find_ids(self, product_id: str) -> list[str]:
        return [it["id"] for _, it in self.all_items() if it.get("product_id") == product_id]

    def count(self) -> int:
        return self.engine.bundle.item_count

    def writable_reason(self) -> str | None:
        return FIXED_REASON

    def put(self, *args: Any, **kwargs: Any):
        raise CatalogReadOnly(FIXED_REASON)

    update = delete = put

    def healthy(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        bundle = self.engine.bundle
        return {
            "bundle": str(self.base_path),
            "items": bundle.item_count,
            "base_items": bundle.item_count,
            "deleted_base_items": 0,
            "delta_items": 0,
            "pending_changes": 0,
            "journal_bytes": None,
            "writable": False,
            "not_writable_because": FIXED_REASON,
            "compacting": False,
            "last_compaction": None,
            "last_error": None,
        }


# -- registries ----------------------------------------------------------------------------
class StaticInstances:
    """Fixed engines, one group (one engine per interpreter slot) per instance name."""

    manager = None

    def __init__(self, instances: Mapping[str, Instance], aliases: Mapping[str, str]) -> None:
        self._instances = dict(instances)
        self._aliases = dict(aliases)

    def get(self, name: str) -> Instance | None:
        return self._instances.get(self._aliases.get(name, name))

    def names(self) -> list[str]:
        return sorted({*self._instances, *self._aliases})

    def configured(self) -> list[str]:
        return self.names()

    def write(self, name: str, change):
        inst = self.get(name)
        if inst is None:
            raise KeyError(name)
        return change(inst.catalog)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        details = {
            n: {"ready": True, "error": None, **i.catalog.stats()}
            for n, i in self._instances.items()
        }
        return bool(details), details

    def healthy(self) -> bool:
        return True


class ManagedInstances:
    """The bundle manager's instances, resolved on every request (hot swaps included).

    A single configured instance also answers to ``default``.
    """

    def __init__(self, manager: Any, pool: InterpreterPool) -> None:
        self.manager = manager
        self.pool = pool
        self._built: dict[str, Instance] = {}

    def _real(self, name: str) -> str:
        configured = list(self.manager.config.bundles)
        if name == "default" and "default" not in configured and len(configured) == 1:
            return configured[0]
        return name

    def get(self, name: str) -> Instance | None:
        real = self._real(name)
        held = self.manager.instance(real)
        if held is None:
            return None
        built = self._built.get(real)
        if built is not None and built.catalog is held.catalog:
            return built
        pooling = held.catalog.bundle.manifest["descriptor"]["pooling"]
        embedders = tuple(self.pool.embedder(pooling).embedders)
        built = Instance(real, held.catalog, embedders, held.loaded_at)
        self._built[real] = built
        return built

    def _with_alias(self, names: Sequence[str]) -> list[str]:
        configured = list(self.manager.config.bundles)
        out = set(names)
        if len(configured) == 1 and "default" not in configured and configured[0] in out:
            out.add("default")
        return sorted(out)

    def names(self) -> list[str]:
        """Instances that are serving now."""
        return self._with_alias(list(self.manager))

    def configured(self) -> list[str]:
        return self._with_alias(list(self.manager.config.bundles))

    def write(self, name: str, change):
        """``change(catalog)``, retried on the new catalog if a swap closed the old one."""
        return self.manager.write(self._real(name), change)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self.manager.ready()

    def healthy(self) -> bool:
        return self.manager.healthy()


def make_instances(
    engines: Mapping[str, SearchEngine | Sequence[SearchEngine]],
) -> tuple[StaticInstances, InterpreterSlots]:
    """Wrap fixed ``engines`` (one engine, or one per slot, per name); check slot counts."""
    instances: dict[str, Instance] = {}
    counts = set()
    for name, value in engines.items():
        group = [value] if isinstance(value, SearchEngine) else list(value)
        if not group:
            raise ValueError(f"instance {name!r} has no engine")
        counts.add(len(group))
        instances[name] = Instance(
            name, FixedCatalog(group[0]), tuple(e.embedder for e in group), time.time()
        )
    if len(counts) > 1:
        raise ValueError("every instance needs the same number of engines (one per interpreter)")
    aliases = {}
    if len(instances) == 1 and "default" not in instances:
        aliases["default"] = next(iter(instances))
    return StaticInstances(instances, aliases), InterpreterSlots(counts.pop() if counts else 1)
