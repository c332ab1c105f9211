"""The overlay a live catalog keeps over its base bundle: an immutable :class:`View` that
searches read without locks, the :class:`Draft` a writer applies journal records to, and
the append-only :class:`Buffers` of delta descriptors.

Readers never lock: each search reads one immutable :class:`View` reference, and writers
publish a new view with a single attribute assignment. A request that started on the old
view finishes on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lensbox.device.embedding.descriptor import quantize_int8
from lensbox.device.embedding.embedder import describe
from lensbox.device.live.items import blank_item, scrub_record
from lensbox.device.live.journal import JournalError, JournalRecord
from lensbox.device.search.engine import SearchEngine


@dataclass(frozen=True)
class View:
    engine: SearchEngine
    seq: int
    hidden: frozenset  # base rows deleted or superseded
    hidden_arr: np.ndarray
    vectors: np.ndarray  # (n, D) int8 delta descriptors (a slice of the growing buffer)
    vec_slot: np.ndarray  # (n,) int32 owning slot, non-decreasing
    slots: list[dict[str, Any]]  # shared, append-only: slot -> item record (live/items.py)
    alive: frozenset
    alive_arr: np.ndarray
    ids: Mapping[str, int]  # live delta id -> slot

    @property
    def base_rows(self) -> int:
        return self.engine.bundle.item_count


class Draft:
    """Mutable copy of a view's sets plus the shared append-only buffers; freeze() publishes."""

    def __init__(
        self, engine: SearchEngine, seq: int, buffers: Buffers, hidden=(), alive=(), ids=None
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
    def of(cls, view: View, buffers: Buffers) -> Draft:
        return cls(view.engine, view.seq, buffers, view.hidden, view.alive, view.ids)

    def freeze(self) -> View:
        n = self.buf.n
        return View(
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

    def item_and_vectors(self, item_id: str) -> tuple[dict[str, Any], np.ndarray] | None:
        where = self.locate(item_id)
        if where is None:
            return None
        kind, n = where
        if kind == "delta":
            lo, hi = np.searchsorted(self.buf.vec_slot[: self.buf.n], [n, n + 1])
            return dict(self.buf.slots[n]), np.array(self.buf.vectors[lo:hi])
        bundle = self.engine.bundle
        lo, hi = np.searchsorted(bundle.vector_items, [n, n + 1])
        return dict(bundle.items([n])[0]), np.array(bundle.vectors[lo:hi])

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

    def add(self, item: dict[str, Any], vectors: np.ndarray) -> None:
        self.remove(item["id"])
        slot = self.buf.append(item, vectors)
        self.alive.add(slot)
        self.ids[item["id"]] = slot

    def apply(self, rec: JournalRecord) -> None:
        """Apply one journal record. Total and deterministic: replay gives the same state."""
        data = scrub_record(rec.data) if rec.op in ("put", "update") else rec.data
        if rec.op == "put":
            assert rec.blob is not None, "a put record carries its descriptors"
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


class Buffers:
    """Append-only delta storage; published views hold slices, so growth never moves them."""

    def __init__(self, dims: int) -> None:
        self.vectors = np.zeros((64, dims), np.int8)
        self.vec_slot = np.zeros(64, np.int32)
        self.n = 0
        self.slots: list[dict[str, Any]] = []

    def append(self, item: dict[str, Any], vectors: np.ndarray) -> int:
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


def replay(
    engine: SearchEngine, applied_seq: int, records: list[JournalRecord]
) -> tuple[View, Buffers]:
    """The view of ``engine``'s bundle after ``records`` (those past ``applied_seq``)."""
    buffers = Buffers(engine.bundle.dims)
    draft = Draft(engine, applied_seq, buffers)
    for rec in records:
        if rec.seq > applied_seq:
            draft.apply(rec)
    return draft.freeze(), buffers
