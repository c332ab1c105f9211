"""Which catalog answers a request: the instance *registry* and the per-request
:class:`Instance`.

`lensbox serve` serves live catalogs: a :class:`ManagedInstances` registry asks the
:class:`~lensbox.device.live.manager.BundleManager` for the instance's current
:class:`~lensbox.device.live.catalog.LiveCatalog` (bundle + journal delta - tombstones) on
every request. A request takes its :class:`Instance` once and uses it to the end, so a hot
swap (deploy, reload) never changes the catalog under a running request: the old catalog
keeps answering reads until the request is done. New items are searchable and deleted ones
gone at the next request.

Without a ``[state]`` section the same catalogs are opened read-only: there is one serving
path, the one `lensbox serve` runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.bundle.format import PROJECTION
from lensbox.device.embedding.embedder import Embedder
from lensbox.device.live.catalog import LiveCatalog
from lensbox.device.search.engine import QueryEmbedding
from lensbox.device.serving.interpreters import InterpreterPool


# -- the per-request view ------------------------------------------------------------------
@dataclass(frozen=True)
class Instance:
    """One instance as a request sees it: its catalog and one embedder per interpreter
    slot (embedder ``i`` runs interpreter ``i``; lease the slot first)."""

    name: str
    catalog: LiveCatalog
    embedders: tuple[Embedder, ...]
    loaded_at: float | None = None

    @property
    def bundle(self):
        """The base bundle (manifest, dims, projection); items: ask the catalog."""
        return self.catalog.bundle

    def embed(self, slot: int, rgb: np.ndarray, region=None) -> QueryEmbedding:
        return self.catalog.embed_query(rgb, region, embedder=self.embedders[slot])

    @property
    def cache_key(self) -> str:
        """Query-cache namespace: the instance name and what its query descriptors depend
        on, so a cached embedding is never reused across a bundle with another projection."""
        return f"{self.name}|{descriptor_key(self.catalog.bundle)}"

    def version(self) -> tuple:
        """Changes whenever the catalog's content may have (swap, compaction, change)."""
        cat = self.catalog
        return (id(cat), str(cat.base_path), cat.applied_seq + cat.pending_changes)


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


# -- the registry ----------------------------------------------------------------------
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
