"""BundleManager: the current (engine, live catalog) per instance name, swapped without downtime.

A request takes ``manager[name]`` (or ``manager.get(name)``) once and uses that object to
the end; a reload publishes a new mapping with one reference assignment, so the hot path has
no locks and a request that started on the old bundle finishes on it (its generation
directory is kept on disk until the next swap).

A new bundle comes from `lensbox deploy` (copied into the slot, renamed atomically), from
:meth:`BundleManager.deploy` (the HTTP layer), from the manifest watcher noticing a changed
slot, or from SIGHUP (config reload). It must open with this device's model and answer one
test query; otherwise it is refused, the slot is rolled back, and the old one keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lensbox.device.bundle.format import PROJECTION, BundleError
from lensbox.device.bundle.reader import Bundle
from lensbox.device.embedding.descriptor import dequantize_int8
from lensbox.device.embedding.subject import Box
from lensbox.device.live.catalog import CatalogClosed, LiveCatalog, LiveSettings
from lensbox.device.live.slot import BundleSlot
from lensbox.device.search.engine import QueryEmbedding, SearchEngine

if TYPE_CHECKING:
    from lensbox.device.embedding.model import TFLiteModel

log = logging.getLogger("lensbox.live")
T = TypeVar("T")

EngineOpener = Callable[[Path], SearchEngine]


@dataclass(frozen=True)
class Instance:
    """What one request holds: an instance's catalog at the moment it was taken. A request
    takes it once and uses it to the end, so a hot swap never changes the catalog under it."""

    name: str
    slot_path: Path
    catalog: LiveCatalog
    loaded_at: float

    @property
    def engine(self) -> SearchEngine:
        return self.catalog.engine

    @property
    def bundle(self) -> Bundle:
        """The base bundle (manifest, dims, projection); items: ask the catalog."""
        return self.catalog.bundle

    def embedder_at(self, slot: int) -> Any:
        """The embedder running interpreter ``slot`` (the caller holds its lease); None when
        the catalog's embedder is not a pool's (it then locks on its own)."""
        at = getattr(self.catalog.embedder, "at", None)
        return at(slot) if at is not None else None

    def embed(self, slot: int, rgb: np.ndarray, region: Box | None = None) -> QueryEmbedding:
        """Embed a query on interpreter ``slot``, with this bundle's projection."""
        return self.catalog.embed_query(rgb, region, embedder=self.embedder_at(slot))

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


@dataclass
class ReloadResult:
    name: str
    ok: bool
    changed: bool = False
    path: str | None = None
    error: str | None = None


@dataclass
class _InstanceState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    error: str | None = None
    seen: tuple | None = None  # watcher debounce: signature seen on the previous poll


def validate_engine(engine: SearchEngine, embed_lock: Any = None) -> None:
    """Refuse a bundle that cannot serve: a self-query must find itself; the model must
    produce descriptors of the bundle's size. Raises BundleError with the reason."""
    bundle = engine.bundle
    if len(bundle.vectors):
        query = dequantize_int8(bundle.vectors[:1], bundle.int8_scale)
        query /= max(float(np.linalg.norm(query)), 1e-6)
        for exact in (True, False):
            rows, scores = engine.rank(query, 1, exact=exact)
            if not len(rows) or float(scores[0]) < 0.95:
                raise BundleError(f"{bundle.path}: test query did not find its own vector")
        if not bundle.items([int(rows[0])]):
            raise BundleError(f"{bundle.path}: item metadata missing for row {int(rows[0])}")
    if engine.embedder is not None:
        yy, xx = np.mgrid[0:96, 0:128]
        rgb = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
        if embed_lock is not None:
            with embed_lock:
                q = engine.embed_query(rgb, views=("full",))
        else:
            q = engine.embed_query(rgb, views=("full",))
        if q.vectors.shape[1] != bundle.dims:
            raise BundleError(
                f"{bundle.path}: the model gives {q.vectors.shape[1]}-d descriptors, the "
                f"bundle holds {bundle.dims}-d ones"
            )


class BundleManager(Mapping):
    """Holds one :class:`LiveCatalog` per configured instance (``config.bundles``).

    ``manager[name]`` is the current LiveCatalog (SearchEngine-compatible for reads).
    ``engine_opener(path)`` opens a bundle directory as a SearchEngine; by default one
    TFLite model is loaded once and shared (guarded by ``embed_lock``).
    """

    def __init__(
        self,
        config: Any,
        *,
        engine_opener: EngineOpener | None = None,
        embed_lock: Any = None,
        background: bool = True,
    ) -> None:
        self.config = config
        self._opener = engine_opener
        self.embed_lock = embed_lock or threading.Lock()
        self.background = background
        self._instances: dict[str, Instance] = {}
        self._states: dict[str, _InstanceState] = {}
        self._config_lock = threading.Lock()
        self._swapped = threading.Condition()
        self._model: TFLiteModel | None = None  # loaded on the first open without an opener
        self._labels: list[str] | None = None
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- the hot path -------------------------------------------------------------------
    def instance(self, name: str = "default") -> Instance | None:
        """The instance as it is now (catalog + when it was loaded); hold it per request."""
        return self._instances.get(name)

    def __getitem__(self, name: str) -> LiveCatalog:
        return self._instances[name].catalog

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._instances))

    def __len__(self) -> int:
        return len(self._instances)

    # -- opening ------------------------------------------------------------------------
    def _state(self, name: str) -> _InstanceState:
        return self._states.setdefault(name, _InstanceState())

    def _slot(self, name: str) -> BundleSlot:
        return BundleSlot(self.config.bundles[name])

    def open_engine(self, path: Path) -> SearchEngine:
        if self._opener is not None:
            return self._opener(path)
        from lensbox.device.bundle.reader import open_bundle
        from lensbox.device.embedding.embedder import Embedder, load_labels
        from lensbox.device.embedding.model import TFLiteModel
        from lensbox.models import MODEL_PATH

        if self._model is None:
            search = self.config.search
            self._model = TFLiteModel(MODEL_PATH, search.threads, search.runtime)
            self._labels = load_labels()
        bundle = open_bundle(path, self._model.sha256)
        embedder = Embedder(self._model, bundle.manifest["descriptor"]["pooling"], self._labels)
        return SearchEngine(bundle, embedder, self.config.search.settings())

    def _budgeted(self, name: str, engine: SearchEngine) -> SearchEngine:
        """``engine`` with instance ``name``'s own verification budget, when
        ``[search.bundles.<name>]`` gives one."""
        budget = self.config.search.bundles.get(name)
        if budget is not None:
            settings = engine.settings
            engine.settings = replace(settings, rerank=budget.apply(settings.rerank))
        return engine

    def _catalog(self, name: str, engine: SearchEngine, slot: BundleSlot) -> LiveCatalog:
        state = self.config.state
        return LiveCatalog(
            self._budgeted(name, engine),
            state.journal_path(name),
            slot=slot,
            settings=LiveSettings.from_config(state, background=self.background),
            engine_factory=lambda path: self._budgeted(name, self.open_engine(path)),
            embed_lock=self.embed_lock,
            read_only=state.read_only,
        )

    def start(self) -> dict[str, str | None]:
        """Load every configured instance (errors are kept, not raised); start the watcher."""
        results = {name: self.reload(name).error for name in self.config.bundles}
        interval = self.config.state.watch_interval_seconds
        if interval > 0 and self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, args=(interval,), name="lensbox-bundle-watch", daemon=True
            )
            self._watcher.start()
        return results

    # -- swapping -----------------------------------------------------------------------
    def _publish(self, name: str, inst: Instance | None) -> None:
        instances = dict(self._instances)
        if inst is None:
            instances.pop(name, None)
        else:
            instances[name] = inst
        self._instances = instances  # one reference assignment: readers see old or new
        with self._swapped:
            self._swapped.notify_all()

    def reload(self, name: str, force: bool = False) -> ReloadResult:
        """(Re)load ``name`` from its slot if it changed; a bad bundle is refused."""
        if name not in self.config.bundles:
            return ReloadResult(name, False, error=f"no bundle configured as {name!r}")
        state = self._state(name)
        with state.lock:
            old = self._instances.get(name)
            slot = self._slot(name)
            try:
                target = slot.current()
            except BundleError as exc:
                state.error = str(exc)
                log.error("instance %s: %s", name, exc)
                return ReloadResult(name, False, error=str(exc))
            if (
                old is not None
                and not force
                and old.catalog.signature == slot.signature()
                and not old.catalog.closed
            ):
                state.error = None  # serving what the slot holds: an older error is over
                return ReloadResult(name, True, changed=False, path=str(target))
            try:
                engine = self.open_engine(target)
                validate_engine(engine, self.embed_lock)
            except Exception as exc:
                return self._refuse(name, slot, target, old, exc)
            if old is not None:
                old.catalog.close()
            try:
                catalog = self._catalog(name, engine, slot)
            except Exception as exc:
                if old is not None:  # put the previous one back (its journal was untouched)
                    self._reopen(name, old, slot)
                return self._refuse(name, slot, target, None, exc)
            self._publish(name, Instance(name, slot.path, catalog, time.time()))
            state.error = None
            state.seen = None
            log.info(
                "instance %s now serves %s (%d items)",
                name,
                target,
                catalog.count(),
                extra={"instance": name, "bundle": str(target)},
            )
            if old is not None and old.catalog.base_path != catalog.base_path:
                try:
                    slot.prune(keep=[old.catalog.base_path, catalog.base_path])
                except OSError as exc:  # old generations stay on disk; the swap is done
                    log.warning("instance %s: could not prune old generations: %s", name, exc)
            return ReloadResult(name, True, changed=True, path=str(target))

    def _refuse(
        self, name: str, slot: BundleSlot, target: Path, old: Instance | None, exc: BaseException
    ) -> ReloadResult:
        msg = f"refused bundle {target}: {exc}"
        self._state(name).error = msg  # first: nothing below may hide the refusal
        if old is not None and Path(target).resolve() != old.catalog.base_path:
            try:
                aside = slot.reject(target, keep=old.catalog.base_path)
            except Exception as err:  # e.g. the disk is full: keep serving regardless
                log.error("instance %s: could not roll the slot back: %s", name, err)
                aside = None
            msg += f"; kept serving {old.catalog.base_path}"
            if aside is not None:
                msg += f" (refused bundle moved to {aside})"
        self._state(name).error = msg
        log.error("instance %s: %s", name, msg, extra={"instance": name})
        return ReloadResult(name, False, error=msg, path=str(target))

    def _reopen(self, name: str, old: Instance, slot: BundleSlot) -> None:
        try:
            catalog = self._catalog(name, old.catalog.engine, slot)
        except Exception:
            log.exception("instance %s: could not reopen the previous catalog", name)
            return
        self._publish(name, Instance(name, slot.path, catalog, time.time()))

    def deploy(self, name: str, source: str | Path) -> ReloadResult:
        """Validate a bundle directory, copy it into ``name``'s slot atomically, load it."""
        try:
            engine = self.open_engine(Path(source))
            validate_engine(engine, self.embed_lock)
        except Exception as exc:
            msg = f"refused bundle {source}: {exc}"
            log.error("instance %s: %s", name, msg)
            return ReloadResult(name, False, error=msg)
        self._slot(name).install_copy(source)
        return self.reload(name)

    def drop(self, name: str) -> None:
        inst = self._instances.get(name)
        self._publish(name, None)
        if inst is not None:
            inst.catalog.close()

    # -- writes with retry across a swap ------------------------------------------------
    def write(self, name: str, change: Callable[[LiveCatalog], T], timeout: float = 30.0) -> T:
        """Run ``change(catalog)``; if a reload closed that catalog meanwhile, retry on the
        new one (a change is never applied twice: a closed catalog refuses before writing)."""
        deadline = time.monotonic() + timeout
        while True:
            inst = self._instances.get(name)
            if inst is None:
                raise KeyError(name)
            try:
                return change(inst.catalog)
            except CatalogClosed:
                if time.monotonic() > deadline:
                    raise
                with self._swapped:
                    self._swapped.wait(0.2)

    def put(self, name: str, item_id: str, images, fields=None, **kw):
        return self.write(name, lambda c: c.put(item_id, images, fields, **kw))

    def update(self, name: str, item_id: str, fields):
        return self.write(name, lambda c: c.update(item_id, fields))

    def delete(self, name: str, ids):
        return self.write(name, lambda c: c.delete(ids))

    # -- config reload (SIGHUP) ---------------------------------------------------------
    def reload_config(self, config: Any) -> dict[str, Any]:
        """Apply a new configuration: add, drop and reload instances as needed."""
        with self._config_lock:
            old, self.config = self.config, config
            restart = [
                k
                for k in type(config).model_fields
                if k not in ("bundles", "search", "state") and getattr(old, k) != getattr(config, k)
            ]
            everything = old.search != config.search or old.state != config.state
            if (
                old.search.threads != config.search.threads
                or old.search.runtime != config.search.runtime
            ):
                self._model = None
            results: dict[str, Any] = {}
            for name in set(old.bundles) - set(config.bundles):
                self.drop(name)
                results[name] = "dropped"
            for name, path in config.bundles.items():
                changed = everything or old.bundles.get(name) != path
                res = self.reload(name, force=changed)
                results[name] = res.error or ("reloaded" if res.changed else "unchanged")
            if restart:
                log.warning(
                    "config sections %s changed; they take effect after a restart",
                    ", ".join(restart),
                )
            return {"instances": results, "restart_needed_for": restart}

    # -- watching -----------------------------------------------------------------------
    def _watch(self, interval: float) -> None:
        while not self._watch_stop.wait(interval):
            for name in list(self.config.bundles):
                try:
                    self.poll(name)
                except Exception:  # the watcher must survive anything
                    log.exception("bundle watcher: polling %s failed", name)

    def poll(self, name: str) -> ReloadResult | None:
        """One watcher step: reload ``name`` once its slot has shown the same new
        signature on two consecutive polls (a copy in progress is not picked up)."""
        state = self._state(name)
        sig = self._slot(name).signature()
        inst = self._instances.get(name)
        current = inst.catalog.signature if inst is not None else None
        if sig is None or sig == current:
            state.seen = None
            return None
        if state.seen == ("refused", sig):
            return None  # already refused this one; wait for another change
        if state.seen != sig:
            state.seen = sig
            return None
        res = self.reload(name)
        if not res.ok:
            state.seen = ("refused", sig)
        return res

    # -- health -------------------------------------------------------------------------
    def ready(self) -> tuple[bool, dict[str, Any]]:
        """For /readyz: every configured instance serving, with per-instance details."""
        details: dict[str, Any] = {}
        ok = bool(self.config.bundles)
        for name in self.config.bundles:
            inst = self._instances.get(name)
            entry: dict[str, Any] = {"ready": inst is not None, "error": self._state(name).error}
            if inst is not None:
                entry.update(inst.catalog.stats())
                entry["loaded_at"] = inst.loaded_at
            ok = ok and inst is not None
            details[name] = entry
        return ok, details

    def healthy(self) -> bool:
        """For the systemd watchdog: no failed journal, background threads alive."""
        if self._watcher is not None and not self._watcher.is_alive():
            return False
        return all(inst.catalog.healthy() for inst in self._instances.values())

    def close(self) -> None:
        self._watch_stop.set()
        for name in list(self._instances):
            self.drop(name)


def install_sighup(
    manager: BundleManager,
    config_path: str | Path,
    *,
    loader: Callable[[str | Path], Any] | None = None,
    notifier: Any = None,
) -> Any:
    """SIGHUP re-reads ``config_path`` and applies it in a worker thread (the handler
    itself only starts the thread). An invalid file is logged and the old config kept.
    Returns the previous handler. Call from the main thread."""
    if loader is None:
        from lensbox.device.config.loader import load_config

        loader = load_config

    lock = threading.Lock()

    def work() -> None:
        with lock:
            if notifier is not None:
                notifier.reloading()
            try:
                config = loader(config_path)
            except Exception as exc:
                log.error("SIGHUP: %s; keeping the running configuration", exc)
            else:
                try:
                    result = manager.reload_config(config)
                except Exception:  # the running instances keep serving regardless
                    log.exception("SIGHUP: applying the new configuration failed")
                else:
                    log.info("SIGHUP: configuration reloaded", extra={"reload": result})
            finally:
                if notifier is not None:
                    notifier.ready("configuration reloaded")

    def handler(signum: int, frame: Any) -> None:
        threading.Thread(target=work, name="lensbox-sighup", daemon=True).start()

    return signal.signal(signal.SIGHUP, handler)
