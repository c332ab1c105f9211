"""The reader refuses bundles it cannot serve, and says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lensbox.device.bundle import BundleError, open_bundle
from lensbox.device.bundle.format import MANIFEST, VECTORS


@pytest.fixture
def bundle_copy(sample_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.lbx"
    shutil.copytree(sample_bundle, dst)
    return dst


def _edit_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    manifest.update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_opens_a_fresh_bundle(sample_bundle: Path) -> None:
    bundle = open_bundle(sample_bundle)
    assert bundle.item_count == 18
    assert bundle.vectors.shape == (18, bundle.dims)
    _row, item = bundle.item_by_id("coffee")
    assert item["source"].endswith("coffee.jpg") and item["concepts"]


def test_refuses_another_format_version(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, format_version=99)
    with pytest.raises(BundleError, match="rebuild"):
        open_bundle(bundle_copy)


def test_refuses_another_model(bundle_copy: Path) -> None:
    with pytest.raises(BundleError, match="Rebuild the bundle"):
        open_bundle(bundle_copy, model_sha256="0" * 64)


def test_refuses_an_incomplete_bundle(bundle_copy: Path) -> None:
    (bundle_copy / VECTORS).write_bytes(b"\x00" * 7)
    with pytest.raises(BundleError, match="wrong size"):
        open_bundle(bundle_copy)


def test_refuses_what_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        open_bundle(tmp_path / "missing.lbx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="not a lensbox bundle"):
        open_bundle(tmp_path / "empty")


def test_the_item_type_names_every_items_column() -> None:
    """Item (the TypedDict code reads items through) and the items table agree."""
    from lensbox.device.bundle.format import ITEM_COLUMNS, Item

    assert tuple(Item.__annotations__) == ITEM_COLUMNS
