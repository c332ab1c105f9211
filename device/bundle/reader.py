"""Open a bundle read-only and refuse one this code or this model cannot serve."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex

from lensbox.device.bundle.annspace import AnnProjection, IndexSpace
from lensbox.device.bundle.checksums import verify_checksums
from lensbox.device.bundle.format import (
    ANN_PROJECTION,
    ANNOY_INDEX,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_SPACE_PCA,
    INDEX_SPACE_REDUCED,
    INDEX_SPACES,
    ITEM_COLUMNS,
    ITEMS_DB,
    JSON_COLUMNS,
    MANIFEST,
    PROJECTION,
    VECTOR_ITEMS,
    VECTORS,
    BundleError,
    Item,
)
from lensbox.device.embedding.descriptor import Projection, dequantize_int8


def row_to_item(row: sqlite3.Row | tuple, columns: tuple[str, ...] = ITEM_COLUMNS) -> Item:
    item: Any = dict(zip(columns, row))
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
    # The reduced space index.ann holds (None: a bundle from before index.space pca-reduced).
    ann_projection: AnnProjection | None = None

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
        return dequantize_int8(self.vectors[mask], self.int8_scale)

    @cached_property
    def index_axis_scale(self) -> np.ndarray | None:
        """Factors applied to a vector before it meets the Annoy index (None: as stored)."""
        return index_axis_scale(self.manifest, self.projection)

    @cached_property
    def index_space(self) -> IndexSpace:
        """Maps query descriptors into the Annoy index's space (as the writer mapped the
        stored ones)."""
        return IndexSpace(self.ann_projection, self.index_axis_scale)

    @property
    def index_dims(self) -> int:
        return index_dims(self.manifest)

    @cached_property
    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def index_axis_scale(manifest: dict, projection: Projection | None) -> np.ndarray | None:
    """The per-dimension scale of the Annoy space named in ``manifest`` (see format.py)."""
    if manifest["index"].get("space") != INDEX_SPACE_PCA or projection is None:
        return None
    return projection.unwhiten_scale()


def index_dims(manifest: dict) -> int:
    """Dimensions of the vectors in index.ann (the descriptor's unless reduced)."""
    if manifest["index"].get("space") == INDEX_SPACE_REDUCED:
        return int(manifest["index"]["dims"])
    return int(manifest["descriptor"]["dims"])


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


def _number(value: Any, kind: type, lo: float, hi: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return False
    return math.isfinite(value) and lo <= value <= hi


def check_manifest(path: Path, manifest: Any) -> None:
    """The manifest fields a device relies on, with their types and ranges (BundleError)."""
    problems: list[str] = []

    def need(section: str, key: str, ok) -> None:
        sub = manifest.get(section)
        if not isinstance(sub, dict) or key not in sub:
            problems.append(f"{section}.{key} is missing")
        elif not ok(sub[key]):
            problems.append(f"{section}.{key} is invalid ({sub[key]!r:.40})")

    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: the manifest is not a JSON object; rebuild the bundle")
    need("model", "sha256", lambda v: isinstance(v, str))
    need("descriptor", "dims", lambda v: _number(v, int, 1, MAX_DIMS))
    need("descriptor", "int8_scale", lambda v: _number(v, float, 1e-6, 1e9))
    need("descriptor", "pooling", lambda v: isinstance(v, str))
    need("index", "metric", lambda v: v in ANNOY_NODE_HEADER)
    need("index", "trees", lambda v: _number(v, int, 1, 10_000))
    index = manifest.get("index")
    if isinstance(index, dict) and "space" in index:
        need("index", "space", lambda v: v in INDEX_SPACES)
        if index["space"] == INDEX_SPACE_REDUCED:
            need("index", "dims", lambda v: _number(v, int, 1, MAX_DIMS))
    need("counts", "items", lambda v: _number(v, int, 0, MAX_COUNT))
    need("counts", "vectors", lambda v: _number(v, int, 0, MAX_COUNT))
    if problems:
        raise BundleError(
            f"{path}: bad manifest: {'; '.join(problems)}; rebuild the bundle with `lensbox build`"
        )
    counts = manifest["counts"]
    if counts["vectors"] < counts["items"]:
        raise BundleError(
            f"{path}: bad manifest: counts.vectors ({counts['vectors']}) is below counts.items "
            f"({counts['items']}); rebuild the bundle"
        )


# Bytes before the vector in one Annoy node (annoylib.h): n_descendants + children[2] for
# angular; n_descendants + a + children[2] (or dot_factor) for the others.
ANNOY_NODE_HEADER = {"angular": 12, "euclidean": 16, "manhattan": 16, "dot": 16, "hamming": 16}
MAX_DIMS = 4096
MAX_COUNT = 2**31 - 2


def check_annoy_file(path: Path, dims: int, metric: str, items: int, full: bool = True) -> None:
    """Check ``index.ann`` is a whole Annoy forest over ``items`` vectors of ``dims``
    *without* letting Annoy map it: every child reference must point inside the file and
    every leaf at an item, so a torn or foreign file cannot crash the process in native
    code (a segfault at the first query, on every restart). ``full=False``: only the size
    and the roots (enough for a file whose sha256 matched the build's)."""
    name = path.name
    header = ANNOY_NODE_HEADER[metric]
    node_bytes = header + 4 * dims
    size = path.stat().st_size
    if size == 0 or size % node_bytes:
        raise BundleError(
            f"{path.parent}: {name} is {size} bytes, not a whole number of {dims}-d index "
            "nodes; the file is truncated or foreign: rebuild the bundle"
        )
    n_nodes = size // node_bytes
    if n_nodes <= items:
        raise BundleError(
            f"{path.parent}: {name} holds {n_nodes} nodes, too few for {items} vectors; "
            "rebuild the bundle"
        )
    stride = node_bytes // 4
    child = 1 if header == 12 else 2  # int32 offset of children[] in a node
    leaf_max = stride - child  # Annoy's K: item ids a leaf node can hold
    nodes = np.memmap(path, dtype=np.int32, mode="r", shape=(n_nodes, stride))
    try:
        if int(nodes[-1, 0]) != items:
            raise BundleError(
                f"{path.parent}: {name} indexes {int(nodes[-1, 0])} vectors, the bundle "
                f"holds {items}; rebuild the bundle"
            )
        if not full:
            return
        step = max(1, (16 * 1024 * 1024) // node_bytes)
        for lo in range(0, n_nodes, step):
            block = np.asarray(nodes[lo : lo + step])
            nd = block[:, 0].astype(np.int64)
            rows = np.arange(lo, lo + len(block))
            is_item = rows < items
            if np.any(nd[is_item] != 1) or np.any((nd[~is_item] < 1) | (nd[~is_item] > items)):
                raise BundleError(f"{path.parent}: {name} is corrupt (bad node); rebuild it")
            kids = block[:, child : child + leaf_max].astype(np.int64)
            small = ~is_item & (nd <= leaf_max)
            if np.any(small):
                used = np.arange(leaf_max)[None, :] < nd[small][:, None]
                ids = kids[small][used]
                if np.any((ids < 0) | (ids >= items)):
                    raise BundleError(f"{path.parent}: {name} is corrupt (bad leaf); rebuild it")
            big = ~is_item & (nd > leaf_max)
            refs = kids[big][:, :2]
            if np.any((refs < 0) | (refs >= n_nodes)):
                raise BundleError(f"{path.parent}: {name} is corrupt (bad child); rebuild it")
    finally:
        del nodes


def _check_items_db(path: Path, items: int, thorough: bool = False) -> None:
    """items.sqlite opens, has the items table, and rows 0..items-1 exactly (``thorough``:
    and every page is sound, for a file no checksum vouches for)."""
    uri = f"file:{(path / ITEMS_DB).as_posix()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            n, lo, hi = conn.execute("SELECT COUNT(*), MIN(row), MAX(row) FROM items").fetchone()
            conn.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items LIMIT 1").fetchall()
            if thorough:
                (verdict,) = conn.execute("PRAGMA quick_check(1)").fetchone()
                if verdict != "ok":
                    raise sqlite3.DatabaseError(verdict)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BundleError(
            f"{path}: the bundle is damaged: {ITEMS_DB} cannot be read ({exc}); "
            "rebuild it with `lensbox build` or deploy it again"
        ) from exc
    if n != items or (items and (lo != 0 or hi != items - 1)):
        raise BundleError(
            f"{path}: the bundle is damaged: {ITEMS_DB} has {n} items, the manifest says "
            f"{items}; rebuild it with `lensbox build` or deploy it again"
        )


def _check_vectors(
    path: Path, vectors: np.ndarray, vector_items: np.ndarray, items: int, scale: float
) -> None:
    if len(vector_items) and (
        int(vector_items.min()) < 0
        or int(vector_items.max()) >= items
        or np.any(np.diff(vector_items) < 0)
    ):
        raise BundleError(
            f"{path}: {VECTOR_ITEMS} names items outside 0..{items - 1} or is out of order; "
            "rebuild the bundle"
        )
    # Stored descriptors are unit vectors times int8_scale (rounding adds at most a few
    # percent, clipping only shortens them): random bytes are far longer, a zero-filled
    # file far shorter. 8192 rows at a time: the float copy of a block is transient, but
    # it sets the daemon's peak RSS (64 MB at 65536 rows of 256 dims).
    step = 8192
    short = 0
    for lo in range(0, len(vectors), step):
        block = np.asarray(vectors[lo : lo + step], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1) / scale
        short += int(np.count_nonzero(norms < 0.5))
        if np.any(norms > 1.25) or short > len(vectors) // 2:
            raise BundleError(
                f"{path}: {VECTORS} does not hold unit descriptors at int8 scale {scale:g}; "
                "the file is corrupt, rebuild the bundle"
            )


def open_bundle(
    path: str | Path, model_sha256: str | None = None, *, verify: bool = True
) -> Bundle:
    """Open ``path``; with ``model_sha256``, refuse a bundle built with another model.

    Everything is checked *before* a file is mapped (``verify``: also the sha256 of each
    part when the manifest records them): the manifest's fields, each part's size against
    the counts, the parts against each other, and the Annoy file's structure. A bundle that
    fails raises :class:`BundleError`, never a crash."""
    path = Path(path)
    manifest = read_manifest(path)
    check_manifest(path, manifest)
    built_with = manifest["model"]["sha256"]
    if model_sha256 is not None and built_with != model_sha256:
        raise BundleError(
            f"{path}: built with model sha256 {built_with[:12]}…, but this device runs "
            f"{model_sha256[:12]}…; vectors would not match. Rebuild the bundle with this "
            "lensbox version, or install the model the bundle was built with"
        )
    dims = int(manifest["descriptor"]["dims"])
    count = int(manifest["counts"]["vectors"])
    items = int(manifest["counts"]["items"])
    for name in (VECTORS, VECTOR_ITEMS, ITEMS_DB, ANNOY_INDEX):
        if not (path / name).is_file():
            raise BundleError(f"{path}: {name} is missing; the bundle is incomplete, rebuild it")
    expected = count * dims
    if (path / VECTORS).stat().st_size != expected:
        raise BundleError(f"{path}: {VECTORS} has the wrong size (expected {expected} bytes)")
    if (path / VECTOR_ITEMS).stat().st_size != count * 4:
        raise BundleError(f"{path}: {VECTOR_ITEMS} does not match {VECTORS}; rebuild the bundle")
    verified = verify and verify_checksums(path, manifest)
    if verified:
        listed = manifest["checksums"]
        parts = (VECTORS, VECTOR_ITEMS, ITEMS_DB, ANNOY_INDEX, PROJECTION, ANN_PROJECTION)
        unlisted = [n for n in parts if (path / n).is_file() and n not in listed]
        if unlisted:
            raise BundleError(
                f"{path}: {', '.join(unlisted)} not covered by the manifest's checksums; "
                "rebuild the bundle"
            )
    _check_items_db(path, items, thorough=not verified)
    vectors = (
        np.memmap(path / VECTORS, dtype=np.int8, mode="r", shape=(count, dims))
        if count
        else np.zeros((0, dims), np.int8)
    )
    vector_items = np.fromfile(path / VECTOR_ITEMS, dtype=np.int32)
    if len(vector_items) != count:
        raise BundleError(f"{path}: {VECTOR_ITEMS} does not match {VECTORS}; rebuild the bundle")
    if count and items == 0:
        raise BundleError(f"{path}: bad manifest: vectors without items; rebuild the bundle")
    _check_vectors(path, vectors, vector_items, items, float(manifest["descriptor"]["int8_scale"]))
    metric = manifest["index"]["metric"]
    ann_dims = index_dims(manifest)
    ann_projection = _load_ann_projection(path, manifest, dims)
    if count:
        # the node-by-node scan only where no checksum vouches for the file
        check_annoy_file(path / ANNOY_INDEX, ann_dims, metric, count, full=not verified)
    projection = None
    if (path / PROJECTION).is_file():
        try:
            projection = Projection.load(path / PROJECTION)
        except Exception as exc:  # a torn npz: zipfile, pickle-free numpy, key errors
            raise BundleError(f"{path}: {PROJECTION} is unreadable ({exc}); rebuild it") from exc
        if projection.dims != dims:
            raise BundleError(
                f"{path}: {PROJECTION} gives {projection.dims}-d descriptors, the manifest "
                f"says {dims}; rebuild the bundle"
            )
    index = AnnoyIndex(ann_dims, metric)
    if count and not index.load(str(path / ANNOY_INDEX), prefault=False):
        raise BundleError(f"{path}: cannot load {ANNOY_INDEX}; rebuild the bundle")
    if count and index.get_n_items() != count:
        index.unload()
        raise BundleError(f"{path}: {ANNOY_INDEX} does not match {VECTORS}; rebuild the bundle")
    return Bundle(path, manifest, vectors, vector_items, projection, index, ann_projection)


def _load_ann_projection(path: Path, manifest: dict, dims: int) -> AnnProjection | None:
    """The reduced index space a bundle names (None for older bundles), or BundleError."""
    if manifest["index"].get("space") != INDEX_SPACE_REDUCED:
        return None
    part = path / ANN_PROJECTION
    if not part.is_file():
        raise BundleError(
            f"{path}: {ANN_PROJECTION} is missing (the manifest's index needs it); the "
            "bundle is incomplete, copy or rebuild it"
        )
    try:
        return AnnProjection.load(part, dims, index_dims(manifest))
    except Exception as exc:  # a torn npz: zipfile, pickle-free numpy, key errors, shapes
        raise BundleError(
            f"{path}: {ANN_PROJECTION} is unusable ({exc}); copy or rebuild the bundle"
        ) from exc
