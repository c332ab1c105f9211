"""Write a bundle directory: everything into a staging directory, then one rename."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from lensbox.device.bundle.annspace import AnnProjection, IndexSpace
from lensbox.device.bundle.atomic import staged_directory
from lensbox.device.bundle.checksums import bundle_checksums
from lensbox.device.bundle.format import (
    ANN_PROJECTION,
    ANNOY_INDEX,
    BUILD_REPORT,
    INDEX_SPACE_REDUCED,
    ITEM_COLUMNS,
    ITEMS_DB,
    ITEMS_SCHEMA,
    JSON_COLUMNS,
    MANIFEST,
    PROJECTION,
    THUMBNAILS,
    VECTOR_ITEMS,
    VECTORS,
)
from lensbox.device.bundle.reader import index_axis_scale
from lensbox.device.bundle.thumbnails import write_thumbnails
from lensbox.device.embedding.descriptor import Projection
from lensbox.device.features.local import LocalFeatures, LocalSettings
from lensbox.device.features.store import write_local_index


@dataclass
class BundleContent:
    """What a bundle holds, ready to be written; ``items`` are rows in item-row order."""

    manifest: dict
    items: list[dict]
    vectors: np.ndarray  # (V, D) int8, grouped by item row
    vector_items: np.ndarray  # (V,) int32, non-decreasing
    projection: Projection | None
    report: dict
    # (item id, sha256 of the photo, JPEG) per item; see lensbox.device.bundle.thumbnails
    thumbnails: list[tuple[str, str, bytes]] | None = None
    # Local features of each photo and the item row it belongs to (None: not stored).
    local: tuple[list[LocalFeatures], list[int], LocalSettings] | None = None


def _item_values(item: dict) -> tuple:
    """Column values in ITEM_COLUMNS order; dict/list columns as sorted JSON text."""
    empty: dict[str, list] = {"concepts": []}
    return tuple(
        json.dumps(item.get(c) or empty.get(c, {}), sort_keys=True)
        if c in JSON_COLUMNS
        else int(bool(item.get(c)))
        if c == "adult"
        else item.get(c)
        for c in ITEM_COLUMNS
    )


def write_items_db(path: Path, items: list[dict]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(ITEMS_SCHEMA)
        cols = ("row", *ITEM_COLUMNS)
        sql = f"INSERT INTO items ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        conn.executemany(sql, [(row, *_item_values(item)) for row, item in enumerate(items)])
        conn.commit()
    finally:
        conn.close()


def build_annoy(
    vectors: np.ndarray,
    scale: float,
    trees: int,
    path: Path,
    seed: int = 42,
    space: IndexSpace | None = None,
) -> None:
    """Annoy index over the int8 ``vectors`` / ``scale`` mapped by ``space`` (the same
    :meth:`IndexSpace.apply` the engine maps queries with; None: as stored)."""
    space = space or IndexSpace()
    dims = space.projection.dims if space.projection is not None else vectors.shape[1]
    index = AnnoyIndex(dims, "angular")
    index.set_seed(seed)
    step = 16384
    for start in range(0, len(vectors), step):
        block = space.apply(np.asarray(vectors[start : start + step], np.float32) / scale)
        for i, vec in enumerate(block.tolist(), start):
            index.add_item(i, vec)
    index.build(trees, n_jobs=1)
    index.save(str(path))
    index.unload()


def write_index(
    directory: Path,
    vectors: np.ndarray,
    manifest: dict,
    projection: Projection | None,
    ann: AnnProjection | None = None,
) -> None:
    """``index.ann`` over ``vectors`` in the space ``manifest["index"]`` names, and for the
    reduced space its ``ann_projection.npz``: ``ann``, or learned from ``vectors`` when None
    (the builder learns it; compaction passes the base bundle's so the space stays put)."""
    spec = manifest["index"]
    scale = float(manifest["descriptor"]["int8_scale"])
    unwhiten = index_axis_scale(manifest, projection)
    if spec.get("space") == INDEX_SPACE_REDUCED:
        if ann is None:
            ann = AnnProjection.fit(
                vectors, spec["dims"], projection.unwhiten_scale() if projection else None, scale
            )
        spec["dims"] = ann.dims
        ann.save(directory / ANN_PROJECTION)
        space = IndexSpace(ann)
    else:
        space = IndexSpace(axis_scale=unwhiten)
    build_annoy(vectors, scale, spec["trees"], directory / ANNOY_INDEX, space=space)


def write_bundle(
    output: Path, content: BundleContent, finish: Callable[[Path], dict] | None = None
) -> None:
    """Write ``content`` to ``output`` atomically (old bundle kept until the new one is whole).

    ``finish`` runs on the complete staged bundle before it is renamed into place (the
    builder's calibration searches it); what it returns is merged into the manifest.
    """
    with staged_directory(output) as tmp:
        if content.local is not None:
            features, rows, settings = content.local
            content.manifest["local"] = write_local_index(tmp, features, np.asarray(rows), settings)
        write_items_db(tmp / ITEMS_DB, content.items)
        content.vectors.astype(np.int8).tofile(tmp / VECTORS)
        content.vector_items.astype(np.int32).tofile(tmp / VECTOR_ITEMS)
        if content.projection is not None:
            content.projection.save(tmp / PROJECTION)
        write_index(tmp, content.vectors, content.manifest, content.projection)
        if content.thumbnails:
            write_thumbnails(tmp / THUMBNAILS, content.thumbnails)
        (tmp / BUILD_REPORT).write_text(json.dumps(content.report, indent=2), encoding="utf-8")
        write_manifest(tmp, content.manifest)
        if finish is not None:  # reads the bundle only: the checksums stay valid
            content.manifest.update(finish(tmp))
            (tmp / MANIFEST).write_text(json.dumps(content.manifest, indent=2), encoding="utf-8")


def write_manifest(directory: Path, manifest: dict) -> None:
    """Record the sha256 of every file already in ``directory`` in ``manifest["checksums"]``
    and write the manifest: call it last, once every other part is written. The device
    checks them before it maps anything (reader.open_bundle)."""
    manifest["checksums"] = bundle_checksums(directory)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
