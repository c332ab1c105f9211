"""Open a bundle read-only and refuse one this code or this model cannot serve."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex

from lensbox.device.bundle.format import (
    ANNOY_INDEX,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_SPACE_PCA,
    ITEM_COLUMNS,
    ITEMS_DB,
    JSON_COLUMNS,
    MANIFEST,
    PROJECTION,
    VECTOR_ITEMS,
    VECTORS,
    BundleError,
)
from lensbox.device.embedding.descriptor import Projection

Item = dict[str, Any]


def row_to_item(row: sqlite3.Row | tuple, columns: tuple[str, ...] = ITEM_COLUMNS) -> Item:
    item = dict(zip(columns, row))
    for col in JSON_COLUMNS & item.keys():
        item[col] = json.loads(item[col]) if item[col] else ({} if col != "concepts" else [])
    item["adult"] = bool(item.get("adult"))
    return item


@dataclass
class Bundle:
    """A loaded bundle: manifest, memory-mapped vectors, Annoy index, item metadata."""

    path: Path
    manifest: dict
    vectors: np.ndarray  # (V, D) int8, memory-mapped
    vector_items: np.ndarray  # (V,) int32
    projection: Projection | None
    index: AnnoyIndex

    def __post_init__(self) -> None:
        self._local = threading.local()

    @property
    def dims(self) -> int:
        return int(self.manifest["descriptor"]["dims"])

    @property
    def int8_scale(self) -> float:
        return float(self.manifest["descriptor"]["int8_scale"])

    @property
    def item_count(self) -> int:
        return int(self.manifest["counts"]["items"])

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            uri = f"file:{(self.path / ITEMS_DB).as_posix()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._local.conn = conn
        return conn

    def items(self, rows: list[int]) -> list[Item]:
        """Metadata for item rows, in the order asked."""
        if not rows:
            return []
        cols = ", ".join(("row", *ITEM_COLUMNS))
        found: dict[int, Item] = {}
        for start in range(0, len(rows), 500):
            chunk = [int(r) for r in rows[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            for rec in self._db().execute(
                f"SELECT {cols} FROM items WHERE row IN ({marks})", chunk
            ):
                found[rec[0]] = row_to_item(rec[1:])
        return [found[r] for r in rows if r in found]

    def item_by_id(self, item_id: str) -> tuple[int, Item] | None:
        cols = ", ".join(("row", *ITEM_COLUMNS))
        rec = self._db().execute(f"SELECT {cols} FROM items WHERE id = ?", (item_id,)).fetchone()
        return (rec[0], row_to_item(rec[1:])) if rec else None

    def item_vectors(self, row: int) -> np.ndarray:
        """Dequantized descriptors of one item (all its views / photos)."""
        mask = self.vector_items == row
        return self.vectors[mask].astype(np.float32) / self.int8_scale

    @cached_property
    def index_axis_scale(self) -> np.ndarray | None:
        """Factors applied to a vector before it meets the Annoy index (None: as stored)."""
        return index_axis_scale(self.manifest, self.projection)

    @cached_property
    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def index_axis_scale(manifest: dict, projection: Projection | None) -> np.ndarray | None:
    """The per-dimension scale of the Annoy space named in ``manifest`` (see format.py)."""
    if manifest["index"].get("space") != INDEX_SPACE_PCA or projection is None:
        return None
    return projection.unwhiten_scale()


def read_manifest(path: Path) -> dict:
    manifest_path = Path(path) / MANIFEST
    if not Path(path).exists():
        raise BundleError(
            f"{path}: no such bundle; build one with `lensbox build PHOTOS -o {path}`"
        )
    if not manifest_path.is_file():
        raise BundleError(
            f"{path}: not a lensbox bundle (no {MANIFEST}); rebuild it with `lensbox build`"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(
            f"{manifest_path}: unreadable manifest ({exc}); rebuild the bundle"
        ) from exc
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path}: not a lensbox bundle (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version}, "
            f"this lensbox reads version {FORMAT_VERSION}; "
            "rebuild it with this version's `lensbox build` (or upgrade lensbox on the device)"
        )
    return manifest


def _check_items_db(path: Path, expected: int) -> None:
    """Refuse a damaged or mismatched items.sqlite now, not with a traceback mid-search.

    Counting the rows walks the whole table b-tree, so a truncated or overwritten file is
    found here (milliseconds for 100k items)."""
    uri = f"file:{(path / ITEMS_DB).as_posix()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            (count,) = conn.execute("SELECT count(*) FROM items").fetchone()
            conn.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BundleError(
            f"{path}: the bundle is damaged: {ITEMS_DB} cannot be read ({exc}); "
            "rebuild it with `lensbox build` or deploy it again"
        ) from exc
    if count != expected:
        raise BundleError(
            f"{path}: the bundle is damaged: {ITEMS_DB} has {count} items, the manifest "
            f"says {expected}; rebuild it with `lensbox build` or deploy it again"
        )


def open_bundle(path: str | Path, model_sha256: str | None = None) -> Bundle:
    """Open ``path``; with ``model_sha256``, refuse a bundle built with another model."""
    path = Path(path)
    manifest = read_manifest(path)
    built_with = manifest["model"]["sha256"]
    if model_sha256 is not None and built_with != model_sha256:
        raise BundleError(
            f"{path}: built with model sha256 {built_with[:12]}…, but this device runs "
            f"{model_sha256[:12]}…; vectors would not match. Rebuild the bundle with this "
            "lensbox version, or install the model the bundle was built with"
        )
    dims = int(manifest["descriptor"]["dims"])
    count = int(manifest["counts"]["vectors"])
    for name in (VECTORS, VECTOR_ITEMS, ITEMS_DB, ANNOY_INDEX):
        if not (path / name).is_file():
            raise BundleError(f"{path}: {name} is missing; the bundle is incomplete, rebuild it")
    expected = count * dims
    if (path / VECTORS).stat().st_size != expected:
        raise BundleError(f"{path}: {VECTORS} has the wrong size (expected {expected} bytes)")
    _check_items_db(path, int(manifest["counts"]["items"]))
    vectors = (
        np.memmap(path / VECTORS, dtype=np.int8, mode="r", shape=(count, dims))
        if count
        else np.zeros((0, dims), np.int8)
    )
    vector_items = np.fromfile(path / VECTOR_ITEMS, dtype=np.int32)
    if len(vector_items) != count:
        raise BundleError(f"{path}: {VECTOR_ITEMS} does not match {VECTORS}; rebuild the bundle")
    index = AnnoyIndex(dims, manifest["index"]["metric"])
    if count and not index.load(str(path / ANNOY_INDEX), prefault=False):
        raise BundleError(f"{path}: cannot load {ANNOY_INDEX}; rebuild the bundle")
    projection = Projection.load(path / PROJECTION) if (path / PROJECTION).is_file() else None
    return Bundle(path, manifest, vectors, vector_items, projection, index)
