"""Compaction: base bundle - tombstones + delta -> a new bundle generation, swapped in live.

The stored int8 vectors are reused as they are (same projection, same int8 scale), so
scores do not move; only the Annoy index is rebuilt. The order of durable steps is what
makes a power cut at any instant safe (base + journal always equals the acknowledged set):

1. the new bundle is written to a staging dir and fsync'd (the slot still names the old);
2. under the catalog's write lock: rename it to the next generation and flip the slot
   symlink (fsync'd). The new manifest records ``live.applied_seq``: replay skips records
   up to it, so the *old* journal is still correct for the *new* bundle;
3. only then is the journal rewritten as a new generation holding just the records after
   ``applied_seq`` (written aside, fsync'd, renamed).

The heavy part (1) runs in the compactor thread at low CPU priority and yields between
chunks; searches and changes continue meanwhile (changes are replayed onto the new bundle
in step 2).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lensbox.device.bundle.format import (
    ANNOY_INDEX,
    BUILD_REPORT,
    ITEMS_DB,
    PROJECTION,
    THUMBNAILS,
    VECTOR_ITEMS,
    VECTORS,
)
from lensbox.device.bundle.reader import open_bundle

if TYPE_CHECKING:
    from lensbox.device.live.catalog import LiveCatalog, _View

log = logging.getLogger("lensbox.live")


def lower_thread_priority(nice: int) -> None:
    """Raise this thread's niceness (Linux threads are tasks with their own priority)."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, max(current, nice)))
    except (AttributeError, OSError):  # not Linux, or not permitted: yields still help
        pass


def _yield() -> None:
    time.sleep(0.001)


def snapshot_content(view: _View, lineage: str, seq: int) -> dict[str, Any]:
    """Everything the new bundle holds, read from an immutable view (no locks needed)."""
    bundle = view.engine.bundle
    n_rows = bundle.item_count
    keep_rows = np.setdiff1d(np.arange(n_rows, dtype=np.int64), view.hidden_arr)
    items: list[dict] = []
    for start in range(0, len(keep_rows), 500):
        items += bundle.items(keep_rows[start : start + 500].tolist())
        _yield()
    if len(items) != len(keep_rows):
        raise RuntimeError(f"{bundle.path}: {len(keep_rows) - len(items)} item rows unreadable")
    vi = np.asarray(bundle.vector_items, np.int64)
    vec_mask = ~np.isin(vi, view.hidden_arr)
    new_row = np.full(max(n_rows, 1), -1, np.int64)
    new_row[keep_rows] = np.arange(len(keep_rows))
    base_vectors = np.asarray(bundle.vectors[vec_mask], np.int8)
    base_owner = new_row[vi[vec_mask]]
    alive = view.alive_arr
    d_mask = np.isin(view.vec_slot, alive)
    d_slots = view.vec_slot[d_mask].astype(np.int64)
    slot_row = {int(s): len(items) + i for i, s in enumerate(alive.tolist())}
    items += [dict(view.slots[int(s)]) for s in alive.tolist()]
    d_owner = np.array([slot_row[int(s)] for s in d_slots], np.int64)
    vectors = np.concatenate([base_vectors, np.asarray(view.vectors[d_mask], np.int8)])
    owners = np.concatenate([base_owner, d_owner]).astype(np.int32)
    manifest = copy.deepcopy(bundle.manifest)
    views = manifest["descriptor"].get("catalog_views") or ["full"]
    manifest["counts"] = {
        "items": len(items),
        "photos": len(vectors) // max(1, len(views)),
        "vectors": len(vectors),
        "skipped": 0,
    }
    manifest["live"] = {
        "lineage": lineage,
        "applied_seq": int(seq),
        "compacted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "compacted_from": Path(bundle.path).name,
    }
    local = view.engine.local
    if local is None:  # none, or damaged: the new bundle ranks by the global descriptor
        manifest.pop("local", None)
    return {
        "manifest": manifest,
        "items": items,
        "vectors": vectors,
        "owners": owners,
        "base": Path(bundle.path),
        # Base photos keep their keypoints under their new rows; items added on the box
        # have none (they rank by the global descriptor), removed items' photos get -1.
        "local_items": None if local is None else _remap(new_row, local.photo_items),
    }


def _remap(new_row: np.ndarray, photo_items: np.ndarray) -> np.ndarray:
    """New item row of each photo; -1 stays -1 (removed by an earlier compaction)."""
    items = np.asarray(photo_items, np.int64)
    return np.where(items >= 0, new_row[np.clip(items, 0, None)], -1)


def write_content(tmp: Path, content: dict[str, Any]) -> None:
    """Write a bundle directory (the manifest last); the staging dir is fsync'd by the slot."""
    from lensbox.device.bundle.reader import index_axis_scale
    from lensbox.device.embedding.descriptor import Projection
    from lensbox.device.features.store import copy_local_index
    from lensbox.index_builder.writer import build_annoy, write_items_db, write_manifest

    manifest = content["manifest"]
    write_items_db(tmp / ITEMS_DB, content["items"])
    _yield()
    content["vectors"].astype(np.int8).tofile(tmp / VECTORS)
    content["owners"].astype(np.int32).tofile(tmp / VECTOR_ITEMS)
    base: Path = content["base"]
    if (base / PROJECTION).is_file():
        shutil.copyfile(base / PROJECTION, tmp / PROJECTION)
    if (base / THUMBNAILS).is_file():  # keyed by item id + photo hash: stale rows go unused
        shutil.copyfile(base / THUMBNAILS, tmp / THUMBNAILS)
    if content.get("local_items") is not None:
        copy_local_index(base, tmp, content["local_items"])
    projection = Projection.load(tmp / PROJECTION) if (tmp / PROJECTION).is_file() else None
    build_annoy(
        content["vectors"],
        manifest["descriptor"]["int8_scale"],
        manifest["index"]["trees"],
        tmp / ANNOY_INDEX,
        axis_scale=index_axis_scale(manifest, projection),
    )
    report = {
        "compacted_from": str(base),
        "applied_seq": manifest["live"]["applied_seq"],
        "items": manifest["counts"]["items"],
        "vectors": manifest["counts"]["vectors"],
    }
    (tmp / BUILD_REPORT).write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_manifest(tmp, manifest)  # records the new parts' checksums


def compact(cat: LiveCatalog) -> dict | None:
    """Run one compaction of ``cat``; returns a small report, or None if nothing to do."""
    from lensbox.device.live.catalog import CatalogClosed, dir_signature, replay

    if cat.slot is None:
        raise RuntimeError("this catalog has no bundle slot to compact into")
    with cat._compact_lock:
        with cat._write_lock:
            cat._check_writable()
            view, seq, base_path = cat._view, cat._view.seq, cat.base_path
            if seq <= cat.applied_seq:
                return None
            cat._status.compacting = True
        started = time.perf_counter()
        staged = None
        try:
            content = snapshot_content(view, cat.lineage, seq)
            staged = cat.slot.stage(lambda tmp: write_content(tmp, content))
            check = open_bundle(staged)  # refuse to swap in anything that does not open
            check.index.unload()
            with cat._write_lock:
                if cat._closed:
                    raise CatalogClosed("catalog closed during compaction")
                target = cat.slot.commit(staged, expect_current=base_path)
                staged = None
                engine = cat._engine_factory(target)
                pending = [r for r in cat._pending if r.seq > seq]
                new_view, buffers = replay(engine, seq, pending)
                cat._view, cat._buffers = new_view, buffers
                cat.base_path, cat.applied_seq, cat._pending = target.resolve(), seq, pending
                cat.signature = dir_signature(cat.base_path)
                try:
                    assert cat._journal is not None
                    cat._journal.rewrite(seq, pending)
                except OSError as exc:  # the old generation stays valid for the new bundle
                    log.warning(
                        "journal %s not truncated (%s); will retry next compaction",
                        cat.journal_path,
                        exc,
                    )
                report = {
                    "bundle": str(target),
                    "applied_seq": seq,
                    "items": content["manifest"]["counts"]["items"],
                    "vectors": content["manifest"]["counts"]["vectors"],
                    "carried_over": len(pending),
                    "seconds": round(time.perf_counter() - started, 3),
                }
                cat._status.last_compaction = report
        finally:
            cat._status.compacting = False
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
        cat.slot.prune(keep=[target, base_path])
        log.info("compacted %s -> %s", base_path.name, target.name, extra={"compaction": report})
        return report
