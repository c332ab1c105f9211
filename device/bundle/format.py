"""The bundle's on-disk layout, in one place so writer and reader cannot drift apart.

A bundle is a directory::

    manifest.json        format name/version, model sha256, preprocessing, descriptor, counts
    items.sqlite         one row per catalog item (metadata, concepts)
    vectors.i8           int8 descriptors, shape (vectors, dims), memory-mapped
    vector_items.i32     item row of each vector (an item may have several vectors)
    projection.npz       whitening learned at build time (absent when too few photos)
    index.ann            Annoy index over the vectors (angular), in the space manifest
                         index.space names (see INDEX_SPACE_*)
    ann_projection.npz   the reduced PCA space index.ann holds (index.space "pca-reduced")
    build_report.json    what was skipped and why, timings
    thumbs.sqlite        a small JPEG per item, for showing hits (absent in older bundles)
"""

from __future__ import annotations

from typing import Any, TypedDict

FORMAT_NAME = "lensbox-bundle"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
ITEMS_DB = "items.sqlite"
VECTORS = "vectors.i8"
VECTOR_ITEMS = "vector_items.i32"
PROJECTION = "projection.npz"
ANNOY_INDEX = "index.ann"
ANN_PROJECTION = "ann_projection.npz"
BUILD_REPORT = "build_report.json"
THUMBNAILS = "thumbs.sqlite"

ITEM_COLUMNS = (
    "id",
    "source",
    "title",
    "page_url",
    "host",
    "category_id",
    "tags",
    "int_attrs",
    "str_attrs",
    "product_id",
    "custom_content",
    "adult",
    "concepts",
    "width",
    "height",
    "format",
    "content_sha256",
)
# Columns stored as JSON text.
JSON_COLUMNS = frozenset({"tags", "int_attrs", "str_attrs", "concepts"})


class Item(TypedDict):
    """One catalog item: the columns of ``items.sqlite`` (ITEM_COLUMNS, in that order), the
    JSON ones decoded. A cloud fallback hit's item has the same keys, None where the
    provider does not say."""

    id: str
    source: str | None  # the photo's path in the catalog, or a cloud hit's image URL
    title: str | None
    page_url: str | None
    host: str | None
    category_id: int | None
    tags: dict[str, str]
    int_attrs: dict[str, int]
    str_attrs: dict[str, str]
    product_id: str | None
    custom_content: str | None
    adult: bool | None
    concepts: list[dict[str, Any]]
    width: int | None
    height: int | None
    format: str | None
    content_sha256: str | None


ITEMS_SCHEMA = """
CREATE TABLE items (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    source TEXT,
    title TEXT,
    page_url TEXT,
    host TEXT,
    category_id INTEGER,
    tags TEXT NOT NULL DEFAULT '{}',
    int_attrs TEXT NOT NULL DEFAULT '{}',
    str_attrs TEXT NOT NULL DEFAULT '{}',
    product_id TEXT,
    custom_content TEXT,
    adult INTEGER NOT NULL DEFAULT 0,
    concepts TEXT NOT NULL DEFAULT '[]',
    width INTEGER,
    height INTEGER,
    format TEXT,
    content_sha256 TEXT
);
CREATE INDEX items_category ON items(category_id);
CREATE INDEX items_product ON items(product_id);
"""


# manifest["index"]["space"]: which vectors the Annoy index holds. "descriptor" (format 1's
# original): the stored descriptors; "pca": the descriptors with the whitening undone;
# "pca-reduced" (current builds): ann_projection.npz applied to the descriptors, giving
# manifest["index"]["dims"] dimensions (lensbox.device.bundle.annspace).
INDEX_SPACE_DESCRIPTOR = "descriptor"
INDEX_SPACE_PCA = "pca"
INDEX_SPACE_REDUCED = "pca-reduced"
INDEX_SPACES = (INDEX_SPACE_DESCRIPTOR, INDEX_SPACE_PCA, INDEX_SPACE_REDUCED)


class BundleError(Exception):
    """A bundle that cannot be used; the message says what to do about it."""
