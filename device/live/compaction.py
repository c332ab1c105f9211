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
    BUILD_REPORT,
    ITEMS_DB,
    PROJECTION,
    THUMBNAILS,
    VECTOR_ITEMS,
    VECTORS,
)
from lensbox.device.bundle.reader import Item, open_bundle
from lensbox.device.live.items import as_item

if TYPE_CHECKING:
    from lensbox.device.live.catalog import LiveCatalog
    from lensbox.device.live.slot import BundleSlot
    from lensbox.device.live.view import View

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


def snapshot_content(view: View, lineage: str, seq: int) -> dict[str, Any]:
    """Everything the new bundle holds, read from an immutable view (no locks needed)."""
    bundle = view.engine.bundle
    n_rows = bundle.item_count
    keep_rows = np.setdiff1d(np.arange(n_rows, dtype=np.int64), view.hidden_arr)
    items: list[Item] = []
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
    items += [as_item(view.slots[int(s)]) for s in alive.tolist()]
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
        "ann_projection": bundle.ann_projection,
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
    from lensbox.device.embedding.descriptor import Projection
    from lensbox.device.features.store import copy_local_index
    from lensbox.index_builder.writer import write_index, write_items_db, write_manifest

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
    # The base's index space, kept (descriptors do not move, so neither does the space).
    write_index(tmp, content["vectors"], manifest, projection, content.get("ann_projection"))
    report = {
        "compacted_from": str(base),
        "applied_seq": manifest["live"]["applied_seq"],
        "items": manifest["counts"]["items"],
        "vectors": manifest["counts"]["vectors"],
    }
    (tmp / BUILD_REPORT).write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_manifest(tmp, manifest)  # records the new parts' checksums


def stage(view: View, lineage: str, seq: int, slot: BundleSlot) -> Path:
    """Write the bundle ``view`` holds (changes up to ``seq``) into a staging dir of
    ``slot`` and check it opens; the caller commits it (or removes it)."""
    content = snapshot_content(view, lineage, seq)
    staged = slot.stage(lambda tmp: write_content(tmp, content))
    try:
        check = open_bundle(staged)  # refuse to swap in anything that does not open
        check.index.unload()
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def compact(cat: LiveCatalog) -> dict | None:
    """Run one compaction of ``cat``; returns a small report, or None if nothing to do.

    The catalog takes the locks, swaps the new generation in and replays what came
    meanwhile (:meth:`LiveCatalog.fold`); this module writes the bundle (:func:`stage`)."""
    return cat.fold(lambda view, seq: stage(view, cat.lineage, seq, cat.slot))
