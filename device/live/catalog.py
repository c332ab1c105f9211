"""LiveCatalog: a loaded bundle that takes additions, updates and deletions while serving.

A bundle's Annoy index is immutable, so changes live beside it until compaction:

* **delta segment** — items added (or changed) since the bundle was built: their int8
  descriptors sit in memory and are searched exactly, so a new item is findable at once;
* **tombstones** — base rows that were deleted or superseded: filtered out of every result
  even though Annoy still returns them.

Every change is first appended to the journal and fsync'd (:mod:`.journal`); only then is it
applied in memory and acknowledged. On start the journal is replayed over the bundle.
A background compaction folds everything into a new bundle generation (:mod:`.compaction`).

Readers never lock: each search reads one immutable :class:`_View` reference, and writers
publish a new view with a single attribute assignment. A request that started on the old
view finishes on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.bundle.format import MANIFEST
from lensbox.device.bundle.reader import Item
from lensbox.device.embedding.descriptor import dequantize_int8, quantize_int8
from lensbox.device.embedding.embedder import describe
from lensbox.device.features.local import LocalFeatures
from lensbox.device.features.rerank import Evidence
from lensbox.device.live.items import blank_item, check_id, normalize_fields, scrub_record
from lensbox.device.live.journal import (
    JournalError,
    JournalRecord,
    JournalWriter,
    read_journal,
    write_journal_file,
)
from lensbox.device.search.engine import (
    Hit,
    Predicate,
    QueryEmbedding,
    SearchEngine,
    SearchResult,
    timed_image_search,
)
from lensbox.device.search.results import page_hits

log = logging.getLogger("lensbox.live")


class CatalogClosed(RuntimeError):
    """This catalog was replaced (hot reload) or shut down; retry on the current one."""


class CatalogReadOnly(RuntimeError):
    """Changes are not accepted here (state.read_only, or the journal failed)."""


@dataclass(frozen=True)
class Change:
    """An acknowledged change: durable in the journal, visible to searches."""

    seq: int
    op: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class LiveSettings:
    compact_after_changes: int = 500
    compact_after_bytes: int = 64 * 1024 * 1024
    compact_nice: int = 10
    compact_retry_seconds: float = 30.0
    archived_journals: int = 3
    background: bool = True  # run the compactor thread

    @classmethod
    def from_config(cls, state: Any, background: bool = True) -> LiveSettings:
        return cls(
            compact_after_changes=state.compact_after_changes,
            compact_after_bytes=int(state.compact_after_journal_mb * 1024 * 1024),
            compact_nice=state.compact_nice,
            compact_retry_seconds=state.compact_retry_seconds,
            archived_journals=state.archived_journals,
            background=background,
        )


def bundle_lineage(engine: SearchEngine) -> tuple[str, int]:
    """(lineage, applied_seq): which journal belongs to this bundle and how far it is in.

    * a deployed copy (``deploy.json`` written by the slot) starts a new lineage, its
      deploy id: a deploy replaces the catalog, even when the same bundle is redeployed;
    * a compacted bundle carries its lineage on, with the journal seq it already holds;
    * any other bundle directory is named by its manifest's hash (stable across restarts).
    """
    from lensbox.device.live.slot import DEPLOY_MARKER

    path = Path(engine.bundle.path)
    try:
        marker = json.loads((path / DEPLOY_MARKER).read_text(encoding="utf-8"))
        return "d-" + str(marker["deploy_id"]), 0
    except (OSError, ValueError, KeyError, TypeError):
        pass
    live = engine.bundle.manifest.get("live") or {}
    if live.get("lineage"):
        return str(live["lineage"]), int(live.get("applied_seq", 0))
    raw = (path / MANIFEST).read_bytes()
    return "b-" + hashlib.sha256(raw).hexdigest()[:24], 0


# -- the immutable read state -------------------------------------------------------------
@dataclass(frozen=True)
class _View:
    engine: SearchEngine
    seq: int
    hidden: frozenset  # base rows deleted or superseded
    hidden_arr: np.ndarray
    vectors: np.ndarray  # (n, D) int8 delta descriptors (a slice of the growing buffer)
    vec_slot: np.ndarray  # (n,) int32 owning slot, non-decreasing
    slots: list  # shared, append-only: slot -> item dict
    alive: frozenset
    alive_arr: np.ndarray
    ids: Mapping[str, int]  # live delta id -> slot

    @property
    def base_rows(self) -> int:
        return self.engine.bundle.item_count


class _Draft:
    """Mutable copy of a view's sets plus the shared append-only buffers; freeze() publishes."""

    def __init__(
        self, engine: SearchEngine, seq: int, buffers: _Buffers, hidden=(), alive=(), ids=None
    ) -> None:
        self.engine = engine
        self.seq = seq
        self.buf = buffers
        self.hidden = set(hidden)
        self.alive = set(alive)
        self.ids: dict[str, int] = dict(ids or {})
        bundle = engine.bundle
        self.scale = bundle.int8_scale
        self.projection = bundle.projection

    @classmethod
    def of(cls, view: _View, buffers: _Buffers) -> _Draft:
        return cls(view.engine, view.seq, buffers, view.hidden, view.alive, view.ids)

    def freeze(self) -> _View:
        n = self.buf.n
        return _View(
            engine=self.engine,
            seq=self.seq,
            hidden=frozenset(self.hidden),
            hidden_arr=np.fromiter(sorted(self.hidden), np.int64, len(self.hidden)),
            vectors=self.buf.vectors[:n],
            vec_slot=self.buf.vec_slot[:n],
            slots=self.buf.slots,
            alive=frozenset(self.alive),
            alive_arr=np.fromiter(sorted(self.alive), np.int64, len(self.alive)),
            ids=dict(self.ids),
        )

    # -- lookups ------------------------------------------------------------------------
    def locate(self, item_id: str) -> tuple[str, int] | None:
        slot = self.ids.get(item_id)
        if slot is not None:
            return ("delta", slot)
        found = self.engine.bundle.item_by_id(item_id)
        if found is None or found[0] in self.hidden:
            return None
        return ("base", found[0])

    def item_and_vectors(self, item_id: str) -> tuple[dict, np.ndarray] | None:
        where = self.locate(item_id)
        if where is None:
            return None
        kind, n = where
        if kind == "delta":
            lo, hi = np.searchsorted(self.buf.vec_slot[: self.buf.n], [n, n + 1])
            return dict(self.buf.slots[n]), np.array(self.buf.vectors[lo:hi])
        bundle = self.engine.bundle
        lo, hi = np.searchsorted(bundle.vector_items, [n, n + 1])
        return bundle.items([n])[0], np.array(bundle.vectors[lo:hi])

    # -- changes ------------------------------------------------------------------------
    def to_int8(self, pooled: np.ndarray) -> np.ndarray:
        return quantize_int8(describe(np.asarray(pooled, np.float32), self.projection), self.scale)

    def remove(self, item_id: str) -> bool:
        where = self.locate(item_id)
        if where is None:
            return False
        kind, n = where
        if kind == "delta":
            self.alive.discard(n)
            del self.ids[item_id]
        else:
            self.hidden.add(n)
        return True

    def add(self, item: dict, vectors: np.ndarray) -> None:
        self.remove(item["id"])
        slot = self.buf.append(item, vectors)
        self.alive.add(slot)
        self.ids[item["id"]] = slot

    def apply(self, rec: JournalRecord) -> None:
        """Apply one journal record. Total and deterministic: replay gives the same state."""
        data = scrub_record(rec.data) if rec.op in ("put", "update") else rec.data
        if rec.op == "put":
            vectors = self.to_int8(rec.blob)
            old = self.item_and_vectors(data["id"]) if data.get("append") else None
            if old is not None:  # another photo of an existing item: keep what it was
                item, old_vectors = old
                vectors = np.concatenate([old_vectors, vectors])
            else:
                item = blank_item(data["id"])
                item.update(data.get("derived") or {})
            item.update(data.get("fields") or {})
            self.add(item, vectors)
        elif rec.op == "update":
            old = self.item_and_vectors(data["id"])
            if old is not None:
                item, vectors = old
                item.update(data.get("fields") or {})
                self.add(item, vectors)
        elif rec.op == "delete":
            for item_id in data["ids"]:
                self.remove(item_id)
        else:
            raise JournalError(f"unknown journal op {rec.op!r} (seq {rec.seq})")
        self.seq = rec.seq


class _Buffers:
    """Append-only delta storage; published views hold slices, so growth never moves them."""

    def __init__(self, dims: int) -> None:
        self.vectors = np.zeros((64, dims), np.int8)
        self.vec_slot = np.zeros(64, np.int32)
        self.n = 0
        self.slots: list[dict] = []

    def append(self, item: dict, vectors: np.ndarray) -> int:
        k = len(vectors)
        if self.n + k > len(self.vectors):
            cap = max(2 * len(self.vectors), self.n + k)
            grown = np.zeros((cap, self.vectors.shape[1]), np.int8)
            grown[: self.n] = self.vectors[: self.n]
            slots = np.zeros(cap, np.int32)
            slots[: self.n] = self.vec_slot[: self.n]
            self.vectors, self.vec_slot = grown, slots
        slot = len(self.slots)
        self.vectors[self.n : self.n + k] = vectors
        self.vec_slot[self.n : self.n + k] = slot
        self.n += k
        self.slots.append(item)
        return slot


# -- the catalog --------------------------------------------------------------------------
EngineFactory = Callable[[Path], SearchEngine]


@dataclass
class _Status:
    compacting: bool = False
    last_compaction: dict | None = None
    last_error: str | None = None
    failed: str | None = None
    archived: list[str] = field(default_factory=list)
    torn_bytes_dropped: int = 0


class LiveCatalog:
    """Search + live changes over one bundle; drop-in for :class:`SearchEngine` reads.

    ``engine``: a SearchEngine on the base bundle (open it on the resolved generation dir).
    ``journal_path``: this instance's journal file. ``slot``: where compactions install new
    bundles (``None``: no compaction). ``engine_factory(path)`` opens a compacted bundle;
    by default it reuses ``engine``'s embedder and settings.
    """

    def __init__(
        self,
        engine: SearchEngine,
        journal_path: str | Path,
        *,
        slot: Any = None,
        settings: LiveSettings | None = None,
        engine_factory: EngineFactory | None = None,
        embed_lock: Any = None,
        read_only: bool = False,
    ) -> None:
        self.live_settings = settings or LiveSettings()
        self.journal_path = Path(journal_path)
        self.slot = slot
        self.read_only = read_only
        self.base_path = Path(engine.bundle.path).resolve()
        self._engine_factory = engine_factory or _default_factory(engine)
        self._embed_lock = embed_lock or threading.Lock()
        self._write_lock = threading.RLock()
        self._compact_lock = threading.Lock()
        self._closed = False
        self._status = _Status()
        self._lock_fd = -1
        self._journal: JournalWriter | None = None
        self.lineage, self.applied_seq = bundle_lineage(engine)
        self.signature = dir_signature(self.base_path)
        if not read_only:
            self._take_lock()
        try:
            records = self._open_journal()
            self._pending: list[JournalRecord] = records
            self._view, self._buffers = replay(engine, self.applied_seq, records)
        except BaseException:
            self._release()
            raise
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if self.live_settings.background and self.writable_reason() is None and slot is not None:
            self._thread = threading.Thread(
                target=self._compactor, name="lensbox-compactor", daemon=True
            )
            self._thread.start()
        if self.needs_compaction():
            self._wake.set()

    # -- opening ------------------------------------------------------------------------
    def _take_lock(self) -> None:
        import fcntl

        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.journal_path.with_name(f".{self.journal_path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise CatalogReadOnly(
                f"{self.journal_path} is in use by another lensbox process; open this one "
                "read-only (state.read_only = true) or stop the other"
            ) from exc
        self._lock_fd = fd

    def _release(self) -> None:
        if self._journal is not None:
            self._journal.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _open_journal(self) -> list[JournalRecord]:
        """Read the journal that belongs to this bundle; archive one that does not."""
        contents = read_journal(self.journal_path)
        usable = (
            contents is not None
            and contents.header.get("lineage") == self.lineage
            and int(contents.header["base_seq"]) <= self.applied_seq
        )
        if contents is not None and not usable:
            self._archive(contents)
            contents = None
        if self.read_only:
            return [r for r in contents.records if r.seq > self.applied_seq] if contents else []
        if contents is None:
            write_journal_file(self.journal_path, self.lineage, self.applied_seq, 0)
            contents = read_journal(self.journal_path)
            assert contents is not None
        if contents.torn_bytes:
            log.warning(
                "journal %s: dropped a torn last record (%d bytes, never acknowledged)",
                self.journal_path,
                contents.torn_bytes,
            )
            self._status.torn_bytes_dropped = contents.torn_bytes
        self._journal = JournalWriter(self.journal_path, contents)
        return [r for r in contents.records if r.seq > self.applied_seq]

    def _archive(self, contents: Any) -> None:
        pending = len([r for r in contents.records if r.seq > int(contents.header["base_seq"])])
        if self.read_only:
            log.warning(
                "journal %s belongs to another bundle; ignored (read-only)", self.journal_path
            )
            return
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = self.journal_path.with_name(f"{self.journal_path.name}.archived-{stamp}")
        n = 0
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{self.journal_path.name}.archived-{stamp}-{n}")
        os.replace(self.journal_path, aside)
        log.warning(
            "bundle %s starts a new catalog (lineage %s); the previous journal with %d "
            "uncompacted change(s) was archived as %s",
            self.base_path,
            self.lineage,
            pending,
            aside,
        )
        self._status.archived.append(str(aside))
        old = sorted(self.journal_path.parent.glob(f"{self.journal_path.name}.archived-*"))
        keep = self.live_settings.archived_journals
        for stale in old[: max(0, len(old) - keep)]:
            stale.unlink(missing_ok=True)

    # -- reading (no locks) -------------------------------------------------------------
    @property
    def engine(self) -> SearchEngine:
        """The base bundle's engine (its own search ignores live changes: use this class)."""
        return self._view.engine

    @property
    def bundle(self):
        """The base bundle (manifest, projection, dims). Item lookups: :meth:`item_by_id`."""
        return self._view.engine.bundle

    @property
    def embedder(self):
        return self._view.engine.embedder

    @property
    def settings(self):
        """The engine's SearchSettings (as on SearchEngine); live ones: ``live_settings``."""
        return self._view.engine.settings

    def embed_query(
        self, rgb: np.ndarray, region=None, views=None, embedder=None
    ) -> QueryEmbedding:
        """As SearchEngine.embed_query. With ``embedder`` (e.g. one the caller leased from an
        interpreter pool) that one runs the model, unlocked; the bundle's projection is
        applied either way, so the descriptor always matches the bundle being searched."""
        engine = self._view.engine
        if embedder is None:
            with self._embed_lock:
                return engine.embed_query(rgb, region, views)
        return engine.embed_with(embedder, rgb, region, views)

    def search_image(
        self,
        rgb: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        region=None,
    ) -> SearchResult:
        return timed_image_search(self, rgb, top_k, offset, predicate, region)

    def search_vectors(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        min_score: float = 0.0,
        local: LocalFeatures | None = None,
    ) -> tuple[list[Hit], int]:
        """Same contract as :meth:`SearchEngine.search_vectors`, over base + delta - tombstones
        (the base bundle's items verified with ``local``; items added live rank by their
        global descriptor, as they have no stored keypoints)."""
        view = self._view
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        wanted = offset + top_k
        evidence: dict[int, Evidence] = {}

        def ranking(exact: bool | None) -> tuple[np.ndarray, np.ndarray, bool]:
            return _ranked(view, queries, wanted, exact, local, evidence)

        return page_hits(
            ranking,
            lambda rows: _items(view, rows),
            lambda hits: view.engine.annotate(hits, evidence),
            top_k,
            offset,
            predicate,
            min_score,
        )

    def item_by_id(self, item_id: str) -> tuple[int, Item] | None:
        view = self._view
        slot = view.ids.get(item_id)
        if slot is not None:
            return view.base_rows + slot, dict(view.slots[slot])
        found = view.engine.bundle.item_by_id(item_id)
        if found is None or found[0] in view.hidden:
            return None
        return found

    def get(self, item_id: str) -> Item | None:
        found = self.item_by_id(item_id)
        return found[1] if found else None

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.item_by_id(item_id) is not None

    def item_vectors(self, item_id: str) -> np.ndarray | None:
        """Dequantized descriptors of an item: search by an item already in the catalog."""
        view = self._view
        scale = view.engine.bundle.int8_scale
        slot = view.ids.get(item_id)
        if slot is not None:
            lo, hi = np.searchsorted(view.vec_slot, [slot, slot + 1])
            return dequantize_int8(view.vectors[lo:hi], scale)
        found = view.engine.bundle.item_by_id(item_id)
        if found is None or found[0] in view.hidden:
            return None
        vi = view.engine.bundle.vector_items
        lo, hi = np.searchsorted(vi, [found[0], found[0] + 1])
        return dequantize_int8(view.engine.bundle.vectors[lo:hi], scale)

    def find_ids(self, product_id: str) -> list[str]:
        """Ids of the live items with this product_id (Alibaba DeleteImage without PicName)."""
        view = self._view
        bundle = view.engine.bundle
        cur = bundle._db().execute("SELECT row, id FROM items WHERE product_id = ?", (product_id,))
        out = [i for row, i in cur if row not in view.hidden and i not in view.ids]
        out += [
            view.slots[s]["id"]
            for s in sorted(view.alive)
            if view.slots[s].get("product_id") == product_id
        ]
        return out

    def all_items(self, chunk: int = 2000):
        """(row, item) for every live item: base rows not deleted, then the delta."""
        view = self._view
        bundle = view.engine.bundle
        for start in range(0, view.base_rows, chunk):
            rows = [
                r for r in range(start, min(view.base_rows, start + chunk)) if r not in view.hidden
            ]
            yield from zip(rows, bundle.items(rows))
        for slot in sorted(view.alive):
            yield view.base_rows + slot, dict(view.slots[slot])

    def count(self) -> int:
        view = self._view
        return view.base_rows - len(view.hidden) + len(view.alive)

    # -- writing ------------------------------------------------------------------------
    def writable_reason(self) -> str | None:
        if self._closed:
            return "closed"
        if self.read_only:
            return "read-only"
        if self._status.failed:
            return f"journal failed: {self._status.failed}"
        return None

    def _check_writable(self) -> None:
        reason = self.writable_reason()
        if reason == "closed":
            raise CatalogClosed("this catalog was replaced or closed; retry on the current one")
        if reason is not None:
            raise CatalogReadOnly(f"catalog changes are not accepted: {reason}")

    def put(
        self,
        item_id: str,
        images: Sequence[bytes] | bytes,
        fields: Mapping[str, Any] | None = None,
        *,
        append: bool = False,
        limits: Any = None,
        embedder: Any = None,
    ) -> Change:
        """Add an item (or replace it: same id) from photo bytes; durable when it returns.

        ``append=True`` adds the photos to an existing item's (keeps its other photos and
        fields). Raises ImageError for an unusable photo, ValueError for bad fields.
        ``embedder``: as in :meth:`embed_query` (runs unlocked, caller owns it).
        """
        from lensbox.device.imaging.decode import DEFAULT_LIMITS, decode_with_info

        check_id(item_id)
        clean = normalize_fields(fields)
        if isinstance(images, (bytes, bytearray, memoryview)):
            images = [bytes(images)]
        if not images:
            raise ValueError("at least one photo is needed")
        limits = limits or DEFAULT_LIMITS
        infos, rgbs = [], []
        for n, data in enumerate(images):
            source = f"{item_id}[{n}]"
            rgb, info = decode_with_info(data, limits, source)
            rgbs.append(rgb)
            infos.append(info)
        view = self._view
        views = tuple(view.engine.bundle.manifest["descriptor"].get("catalog_views") or ("full",))
        if embedder is not None:
            embs = embedder.embed_many(rgbs, views)
        else:
            with self._embed_lock:
                embs = view.engine.embedder.embed_many(rgbs, views)
        derived = {
            "concepts": [{"id": c.id, "name": c.name, "value": c.value} for c in embs[0].concepts],
            "width": embs[0].size[0],
            "height": embs[0].size[1],
            "format": infos[0].format,
            "content_sha256": hashlib.sha256(images[0]).hexdigest(),
        }
        pooled = np.concatenate([e.pooled for e in embs]).astype(np.float32)
        return self.put_pooled(item_id, pooled, clean, append=append, derived=derived)

    def put_pooled(
        self,
        item_id: str,
        pooled: np.ndarray,
        fields: Mapping[str, Any] | None = None,
        *,
        append: bool = False,
        derived: Mapping[str, Any] | None = None,
    ) -> Change:
        """Add an item from already-pooled model outputs (one row per photo/view).

        ``derived``: fields measured from the photo (concepts, size, format, hash); used
        when the item is created, ignored when ``append`` adds to an existing one.
        """
        check_id(item_id)
        clean = normalize_fields(fields)
        pooled = np.atleast_2d(np.asarray(pooled, np.float32))
        self._check_pooled(pooled)
        data = {"id": item_id, "fields": clean}
        if derived:
            data["derived"] = normalize_fields(derived)
        if append:
            data["append"] = True
        rec = self._commit("put", data, pooled)
        return Change(rec.seq, "put", (item_id,))

    def _check_pooled(self, pooled: np.ndarray) -> None:
        bundle = self._view.engine.bundle
        want = len(bundle.projection.mean) if bundle.projection is not None else bundle.dims
        if pooled.ndim != 2 or pooled.shape[1] != want or len(pooled) == 0:
            raise ValueError(f"pooled vectors must have shape (n>=1, {want}), got {pooled.shape}")
        if not np.all(np.isfinite(pooled)):
            raise ValueError("pooled vectors hold NaN or infinity")

    def update(self, item_id: str, fields: Mapping[str, Any]) -> Change:
        """Change some fields of an item, keeping its photos. KeyError if it does not exist."""
        clean = normalize_fields(fields)
        rec = self._commit("update", {"id": item_id, "fields": clean}, None, must_exist=item_id)
        return Change(rec.seq, "update", (item_id,))

    def delete(self, ids: str | Sequence[str]) -> Change | None:
        """Delete items (one journal record for all); ids that do not exist are ignored.

        Returns ``None`` when none of them existed (nothing was journaled).
        """
        wanted = [ids] if isinstance(ids, str) else list(ids)
        with self._write_lock:
            self._check_writable()
            present = [i for i in dict.fromkeys(wanted) if self._locate(i) is not None]
            if not present:
                return None
            rec = self._commit("delete", {"ids": present}, None)
        return Change(rec.seq, "delete", tuple(present))

    def _locate(self, item_id: str) -> tuple[str, int] | None:
        view = self._view
        return _Draft(
            view.engine, view.seq, self._buffers, view.hidden, view.alive, view.ids
        ).locate(item_id)

    def _commit(
        self, op: str, data: dict, blob: np.ndarray | None, must_exist: str | None = None
    ) -> JournalRecord:
        """Journal (fsync) then apply then publish, all under the write lock."""
        with self._write_lock:
            self._check_writable()
            if must_exist is not None and self._locate(must_exist) is None:
                raise KeyError(must_exist)
            assert self._journal is not None
            try:
                rec = self._journal.append(op, data, blob)
            except JournalError as exc:
                self._status.failed = str(exc)
                raise CatalogReadOnly(f"the journal failed: {exc}") from exc
            draft = _Draft.of(self._view, self._buffers)
            draft.apply(rec)
            self._view = draft.freeze()
            self._pending.append(rec)
        if self.needs_compaction():
            self._wake.set()
        return rec

    # -- compaction ---------------------------------------------------------------------
    @property
    def pending_changes(self) -> int:
        return self._view.seq - self.applied_seq

    def needs_compaction(self) -> bool:
        if self.slot is None or self.writable_reason() is not None:
            return False
        size = self._journal.size if self._journal is not None else 0
        return self.pending_changes > 0 and (
            self.pending_changes >= self.live_settings.compact_after_changes
            or size >= self.live_settings.compact_after_bytes
        )

    def compact(self) -> dict | None:
        """Fold base + changes into a new bundle generation and swap it in; see compaction."""
        from lensbox.device.live.compaction import compact

        return compact(self)

    def _compactor(self) -> None:
        from lensbox.device.live.compaction import lower_thread_priority

        lower_thread_priority(self.live_settings.compact_nice)
        while not self._stop.is_set():
            self._wake.wait(timeout=60.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            if not self.needs_compaction():
                continue
            try:
                self.compact()
            except CatalogClosed:
                break
            except Exception as exc:  # keep serving; retry later
                self._status.last_error = f"compaction failed: {exc}"
                log.exception(
                    "compaction of %s failed; retrying in %.0f s",
                    self.base_path,
                    self.live_settings.compact_retry_seconds,
                )
                self._stop.wait(self.live_settings.compact_retry_seconds)
                self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------
    def close(self, wait: float = 0.0) -> None:
        """Stop accepting changes (in-flight ones finish first); searches keep working."""
        with self._write_lock:
            self._closed = True
            self._release()
        self._stop.set()
        self._wake.set()
        if self._thread is not None and wait > 0:
            self._thread.join(wait)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot for /readyz (briefly takes the write lock, never searches)."""
        with self._write_lock:
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        view = self._view
        return {
            "bundle": str(self.base_path),
            "lineage": self.lineage,
            "applied_seq": self.applied_seq,
            "seq": view.seq,
            "items": self.count(),
            "base_items": view.base_rows,
            "deleted_base_items": len(view.hidden),
            "delta_items": len(view.alive),
            "pending_changes": self.pending_changes,
            "journal_bytes": self._journal.size if self._journal is not None else None,
            "writable": self.writable_reason() is None,
            "not_writable_because": self.writable_reason(),
            "compacting": self._status.compacting,
            "last_compaction": self._status.last_compaction,
            "last_error": self._status.last_error,
            "archived_journals": list(self._status.archived),
            "torn_bytes_dropped": self._status.torn_bytes_dropped,
        }

    def healthy(self) -> bool:
        """False once the journal failed (restart replays it) or the compactor died."""
        if self._status.failed:
            return False
        return not (self._thread is not None and not self._thread.is_alive() and not self._closed)


def dir_signature(path: Path) -> tuple[str, int, int] | None:
    """(dir, manifest inode, mtime): what BundleSlot.signature() reports for a slot."""
    try:
        st = os.stat(Path(path) / MANIFEST)
    except OSError:
        return None
    return (str(path), st.st_ino, st.st_mtime_ns)


def replay(
    engine: SearchEngine, applied_seq: int, records: list[JournalRecord]
) -> tuple[_View, _Buffers]:
    """The view of ``engine``'s bundle after ``records`` (those past ``applied_seq``)."""
    buffers = _Buffers(engine.bundle.dims)
    draft = _Draft(engine, applied_seq, buffers)
    for rec in records:
        if rec.seq > applied_seq:
            draft.apply(rec)
    return draft.freeze(), buffers


def _default_factory(engine: SearchEngine) -> EngineFactory:
    from lensbox.device.bundle.reader import open_bundle

    def factory(path: Path) -> SearchEngine:
        sha = engine.bundle.manifest["model"]["sha256"]
        return SearchEngine(open_bundle(path, sha), engine.embedder, engine.settings)

    return factory


# -- search internals ---------------------------------------------------------------------
def _ranked(
    view: _View,
    queries: np.ndarray,
    wanted: int,
    exact: bool | None,
    local: LocalFeatures | None = None,
    evidence: dict[int, Evidence] | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Merged (rows, raw scores) best first, and whether the base ranking was exhaustive."""
    engine = view.engine
    bundle = engine.bundle
    parts_rows, parts_scores = [], []
    exhaustive = True
    if len(bundle.vectors):
        use_exact = engine.use_exact() if exact is None else exact
        # Exact: every item (so totals count the whole catalog, as SearchEngine's do; the
        # exact path only runs below exact_below vectors). Annoy: enough candidates to
        # make up for tombstoned ones.
        want = None if use_exact else wanted + len(view.hidden)
        rows, scores = engine.rank(queries, want, use_exact, local, evidence)
        exhaustive = use_exact or len(rows) >= bundle.item_count
        if len(view.hidden_arr):
            keep = ~np.isin(rows, view.hidden_arr)
            rows, scores = rows[keep], scores[keep]
        parts_rows.append(np.asarray(rows, np.int64))
        parts_scores.append(np.asarray(scores, np.float32))
    if len(view.alive_arr):
        rows, scores = _delta_scores(view, queries)
        parts_rows.append(rows)
        parts_scores.append(scores)
    if not parts_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), True
    rows = np.concatenate(parts_rows)
    scores = np.concatenate(parts_scores)
    order = np.argsort(-scores, kind="stable")
    return rows[order], scores[order], exhaustive


def _delta_scores(view: _View, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact best score per live delta item (rows numbered after the base rows)."""
    keep = np.isin(view.vec_slot, view.alive_arr)
    vecs = dequantize_int8(view.vectors[keep], view.engine.bundle.int8_scale)
    slots = view.vec_slot[keep]
    best = (vecs @ queries.T).max(axis=1)
    starts = np.flatnonzero(np.r_[True, np.diff(slots) != 0])
    per_slot = np.maximum.reduceat(best, starts)
    return (view.base_rows + slots[starts]).astype(np.int64), per_slot.astype(np.float32)


def _items(view: _View, rows: Sequence[int]) -> list[Item]:
    base_n = view.base_rows
    base = [int(r) for r in rows if r < base_n]
    found = dict(zip(base, view.engine.bundle.items(base)))
    if len(found) != len(base):  # a row the bundle did not return: look each up
        found = {r: it for r in base for it in view.engine.bundle.items([r])}
    out = []
    for r in rows:
        r = int(r)
        out.append(found.get(r) if r < base_n else dict(view.slots[r - base_n]))
    return out
