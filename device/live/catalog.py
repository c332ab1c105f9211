"""LiveCatalog: a loaded bundle that takes additions, updates and deletions while serving.

A bundle's Annoy index is immutable, so changes live beside it until compaction:

* **delta segment** — items added (or changed) since the bundle was built: their int8
  descriptors sit in memory and are searched exactly, so a new item is findable at once;
* **tombstones** — base rows that were deleted or superseded: filtered out of every result
  even though Annoy still returns them.

Every change is first appended to the journal and fsync'd (:mod:`.journal`); only then is it
applied in memory and acknowledged. On start the journal is replayed over the bundle.
A background compaction folds everything into a new bundle generation (:mod:`.compaction`).

Readers never lock: each search reads one immutable :class:`~.view.View` reference, and
writers publish a new view with a single attribute assignment. A request that started on
the old view finishes on it.

This module holds the catalog's state and locks (journal, write lock, compaction swap);
the overlay is :mod:`.view`, the merge of base and delta rankings :mod:`.merge`, which
journal belongs to which bundle :mod:`.lineage`, and writing a compacted bundle
:mod:`.compaction` (which hands it back through :meth:`LiveCatalog.fold`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.bundle.reader import Item
from lensbox.device.embedding.descriptor import dequantize_int8
from lensbox.device.features.local import LocalFeatures
from lensbox.device.features.rerank import Evidence
from lensbox.device.live.items import as_item, check_id, normalize_fields
from lensbox.device.live.journal import (
    JournalError,
    JournalRecord,
    JournalWriter,
    read_journal,
    write_journal_file,
)
from lensbox.device.live.lineage import bundle_lineage, dir_signature
from lensbox.device.live.merge import items_of, ranked
from lensbox.device.live.view import Draft, View, replay
from lensbox.device.search.engine import (
    Hit,
    QueryEmbedding,
    SearchEngine,
    SearchResult,
    SearchSettings,
    open_engine,
)
from lensbox.device.search.results import Predicate, page_hits

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
    """Search + live changes over one bundle: the one
    :class:`~lensbox.device.search.catalog.Catalog` (the engine only ranks; paging, filters
    and hits are here).

    ``engine``: a SearchEngine on the base bundle (open it on the resolved generation dir).
    ``journal_path``: this instance's journal file; ``None``: the bundle as built, read-only
    (no lock file, no journal read or written, no compaction: :func:`open_catalog`).
    ``slot``: where compactions install new bundles (``None``: no compaction).
    ``engine_factory(path)`` opens a compacted bundle; by default it reuses ``engine``'s
    embedder and settings.
    """

    def __init__(
        self,
        engine: SearchEngine,
        journal_path: str | Path | None,
        *,
        slot: Any = None,
        settings: LiveSettings | None = None,
        engine_factory: EngineFactory | None = None,
        embed_lock: Any = None,
        read_only: bool = False,
    ) -> None:
        if journal_path is None and slot is not None:
            raise ValueError("a catalog without a journal cannot compact into a slot")
        self.live_settings = settings or LiveSettings()
        self.journal_path = None if journal_path is None else Path(journal_path)
        self.slot = slot
        self.read_only = read_only or journal_path is None
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
        journal = self.journal_path
        if journal is not None and not self.read_only:
            self._take_lock(journal)
        try:
            records = self._open_journal(journal) if journal is not None else []
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
    def _take_lock(self, journal: Path) -> None:
        import fcntl

        journal.parent.mkdir(parents=True, exist_ok=True)
        lock = journal.with_name(f".{journal.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise CatalogReadOnly(
                f"{journal} is in use by another lensbox process; open this one "
                "read-only (state.read_only = true) or stop the other"
            ) from exc
        self._lock_fd = fd

    def _release(self) -> None:
        if self._journal is not None:
            self._journal.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _open_journal(self, journal: Path) -> list[JournalRecord]:
        """Read the journal that belongs to this bundle; archive one that does not."""
        contents = read_journal(journal)
        usable = (
            contents is not None
            and contents.header.get("lineage") == self.lineage
            and int(contents.header["base_seq"]) <= self.applied_seq
        )
        if contents is not None and not usable:
            self._archive(journal, contents)
            contents = None
        if self.read_only:
            return [r for r in contents.records if r.seq > self.applied_seq] if contents else []
        if contents is None:
            write_journal_file(journal, self.lineage, self.applied_seq, 0)
            contents = read_journal(journal)
            assert contents is not None
        if contents.torn_bytes:
            log.warning(
                "journal %s: dropped a torn last record (%d bytes, never acknowledged)",
                journal,
                contents.torn_bytes,
            )
            self._status.torn_bytes_dropped = contents.torn_bytes
        self._journal = JournalWriter(journal, contents)
        return [r for r in contents.records if r.seq > self.applied_seq]

    def _archive(self, journal: Path, contents: Any) -> None:
        pending = len([r for r in contents.records if r.seq > int(contents.header["base_seq"])])
        if self.read_only:
            log.warning("journal %s belongs to another bundle; ignored (read-only)", journal)
            return
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        aside = journal.with_name(f"{journal.name}.archived-{stamp}")
        n = 0
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{journal.name}.archived-{stamp}-{n}")
        os.replace(journal, aside)
        log.warning(
            "bundle %s starts a new catalog (lineage %s); the previous journal with %d "
            "uncompacted change(s) was archived as %s",
            self.base_path,
            self.lineage,
            pending,
            aside,
        )
        self._status.archived.append(str(aside))
        old = sorted(journal.parent.glob(f"{journal.name}.archived-*"))
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
        """The engine's SearchSettings (read-only here: change ``engine.settings``); live
        ones: ``live_settings``."""
        return self._view.engine.settings

    def embed_query(
        self, rgb: np.ndarray, region=None, views=None, embedder=None
    ) -> QueryEmbedding:
        """As :meth:`SearchEngine.embed_query`. With ``embedder`` (e.g. one the caller leased
        from an interpreter pool) that one runs the model, unlocked; the bundle's projection
        is applied either way, so the descriptor always matches the bundle being searched."""
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
        """Embed then search, timing both steps (``embed_ms``, ``search_ms``)."""
        t0 = time.perf_counter()
        query = self.embed_query(rgb, region)
        t1 = time.perf_counter()
        hits, total = self.search_vectors(
            query.vectors, top_k, offset, predicate, local=query.local
        )
        t2 = time.perf_counter()
        return SearchResult(
            hits, total, query, {"embed_ms": (t1 - t0) * 1e3, "search_ms": (t2 - t1) * 1e3}
        )

    def search_vectors(
        self,
        queries: np.ndarray,
        top_k: int = 10,
        offset: int = 0,
        predicate: Predicate | None = None,
        min_score: float = 0.0,
        local: LocalFeatures | None = None,
        verify: int | None = None,
    ) -> tuple[list[Hit], int]:
        """A page of hits and how many matched (:func:`~lensbox.device.search.results.page_hits`,
        the one place that pages and filters), over base + delta - tombstones (the base
        bundle's items verified with ``local``, the query's keypoints; items added live rank
        by their global descriptor, as they have no stored keypoints). ``verify``: this
        query's verification budget instead of ``[search] verify`` (0: none)."""
        view = self._view
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        wanted = offset + top_k
        evidence: dict[int, Evidence] = {}

        def ranking(exact: bool | None, whole: bool) -> tuple[np.ndarray, np.ndarray, bool]:
            return ranked(view, queries, wanted, exact, local, evidence, whole, verify)

        return page_hits(
            ranking,
            lambda rows: items_of(view, rows),
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
            return view.base_rows + slot, as_item(view.slots[slot])
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

    def all_items(self, chunk: int = 2000) -> Iterator[tuple[int, Item]]:
        """(row, item) for every live item: base rows not deleted, then the delta."""
        view = self._view
        bundle = view.engine.bundle
        for start in range(0, view.base_rows, chunk):
            rows = [
                r for r in range(start, min(view.base_rows, start + chunk)) if r not in view.hidden
            ]
            yield from zip(rows, bundle.items(rows))
        for slot in sorted(view.alive):
            yield view.base_rows + slot, as_item(view.slots[slot])

    def count(self) -> int:
        view = self._view
        return view.base_rows - len(view.hidden) + len(view.alive)

    # -- writing ------------------------------------------------------------------------
    def writable_reason(self) -> str | None:
        if self._closed:
            return "closed"
        if self.journal_path is None:
            return "no journal (the bundle as built)"
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
        from lensbox.device.imaging.decode import DEFAULT_LIMITS, decode_reduced
        from lensbox.device.imaging.frames import pipeline_sides

        check_id(item_id)
        clean = normalize_fields(fields)
        if isinstance(images, (bytes, bytearray, memoryview)):
            images = [bytes(images)]
        if not images:
            raise ValueError("at least one photo is needed")
        limits = limits or DEFAULT_LIMITS
        view = self._view
        # Decoded as the builder decodes catalog photos (and the daemon queries).
        local = view.engine.local
        long_side, short_side = pipeline_sides(local.settings if local is not None else None)
        decoded = [
            decode_reduced(
                data, limits, f"{item_id}[{n}]", long_side=long_side, short_side=short_side
            )
            for n, data in enumerate(images)
        ]
        rgbs = [d.rgb for d in decoded]
        views = tuple(view.engine.bundle.manifest["descriptor"].get("catalog_views") or ("full",))
        if embedder is not None:
            embs = embedder.embed_many(rgbs, views)
        else:
            with self._embed_lock:
                embs = view.engine.embedder.embed_many(rgbs, views)
        derived = {
            "concepts": [{"id": c.id, "name": c.name, "value": c.value} for c in embs[0].concepts],
            "width": decoded[0].size[0],
            "height": decoded[0].size[1],
            "format": decoded[0].info.format,
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
        data: dict[str, Any] = {"id": item_id, "fields": clean}
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
        return Draft(
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
            draft = Draft.of(self._view, self._buffers)
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

    def fold(self, stage: Callable[[View, int], Path]) -> dict | None:
        """Install a compaction: ``stage(view, seq)`` writes the bundle of ``view`` (changes
        up to ``seq``) into a staging dir of the slot, unlocked; then, under the write lock,
        it becomes the slot's next generation, the changes that came meanwhile are replayed
        onto it and the journal is rewritten to hold only those. None: nothing to fold."""
        if self.slot is None:
            raise RuntimeError("this catalog has no bundle slot to compact into")
        with self._compact_lock:
            with self._write_lock:
                self._check_writable()
                view, seq, base_path = self._view, self._view.seq, self.base_path
                if seq <= self.applied_seq:
                    return None
                self._status.compacting = True
            started = time.perf_counter()
            staged = None
            try:
                staged = stage(view, seq)
                with self._write_lock:
                    if self._closed:
                        raise CatalogClosed("catalog closed during compaction")
                    target = self.slot.commit(staged, expect_current=base_path)
                    staged = None
                    engine = self._engine_factory(target)
                    pending = [r for r in self._pending if r.seq > seq]
                    self._view, self._buffers = replay(engine, seq, pending)
                    self.base_path, self.applied_seq, self._pending = target.resolve(), seq, pending
                    self.signature = dir_signature(self.base_path)
                    try:
                        assert self._journal is not None
                        self._journal.rewrite(seq, pending)
                    except OSError as exc:  # the old generation stays valid for the new bundle
                        log.warning(
                            "journal %s not truncated (%s); will retry next compaction",
                            self.journal_path,
                            exc,
                        )
                    bundle = engine.bundle
                    report = {
                        "bundle": str(target),
                        "applied_seq": seq,
                        "items": bundle.item_count,
                        "vectors": len(bundle.vectors),
                        "carried_over": len(pending),
                        "seconds": round(time.perf_counter() - started, 3),
                    }
                    self._status.last_compaction = report
            finally:
                self._status.compacting = False
                if staged is not None:
                    shutil.rmtree(staged, ignore_errors=True)
        self.slot.prune(keep=[target, base_path])
        log.info("compacted %s -> %s", base_path.name, target.name, extra={"compaction": report})
        return report

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


def _default_factory(engine: SearchEngine) -> EngineFactory:
    from lensbox.device.bundle.reader import open_bundle

    def factory(path: Path) -> SearchEngine:
        sha = engine.bundle.manifest["model"]["sha256"]
        return SearchEngine(open_bundle(path, sha), engine.embedder, engine.settings)

    return factory


def open_catalog(
    bundle_path: str,
    settings: SearchSettings | None = None,
    threads: int = 2,
    runtime: str = "auto",
    model_path: str | None = None,
) -> LiveCatalog:
    """The bundle at ``bundle_path`` as built, read-only (no journal, no lock, no compaction):
    what the CLI, the standalone kiosk, the builder's calibration and the benchmarks search.
    The daemon's catalogs, which take changes, come from :mod:`.manager`."""
    return LiveCatalog(open_engine(bundle_path, settings, threads, runtime, model_path), None)
