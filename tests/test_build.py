"""`build_bundle`: folders and manifests in, whole bundles out, bad photos skipped."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lensbox.device.bundle import open_bundle
from lensbox.index_builder.build import BuildError, BuildSettings, build_bundle
from lensbox.index_builder.catalog import CatalogError, read_catalog

from .conftest import SAMPLE_CATALOG

FAST = BuildSettings(cache_dir=None, workers=1)


def _mini_catalog(tmp_path: Path, names=("coffee", "rocket", "chelsea-cat")) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in names:
        shutil.copy(SAMPLE_CATALOG / f"{name}.jpg", folder / f"{name}.jpg")
    return folder


def test_bad_photos_are_skipped_and_reported(tmp_path: Path) -> None:
    folder = _mini_catalog(tmp_path)
    (folder / "notes.png").write_bytes(b"this is text")
    good = (folder / "coffee.jpg").read_bytes()
    (folder / "half.jpg").write_bytes(good[: len(good) // 3])
    report = build_bundle(folder, tmp_path / "out.lbx", FAST, progress=False)
    assert report.items == 3
    skipped = {Path(s["path"]).name for s in report.skipped}
    assert skipped == {"notes.png", "half.jpg"}
    written = json.loads((tmp_path / "out.lbx" / "build_report.json").read_text())
    assert len(written["skipped"]) == 2


def test_manifest_metadata_and_several_photos_per_item(tmp_path: Path) -> None:
    manifest = tmp_path / "catalog.csv"
    manifest.write_text(
        "id,path,title,category_id,tags,product_id,int_attr,str_attr,adult\n"
        f"mug,{SAMPLE_CATALOG / 'coffee.jpg'},Coffee mug,3,colour=brown;size=m,P1,42,ceramic,0\n"
        f"mug,{SAMPLE_CATALOG / 'clock.jpg'},,,,,,,\n"
        f"ship,{SAMPLE_CATALOG / 'rocket.jpg'},Rocket,7,,P2,5,metal,1\n"
    )
    build_bundle(manifest, tmp_path / "m.lbx", FAST, progress=False)
    bundle = open_bundle(tmp_path / "m.lbx")
    assert bundle.item_count == 2 and len(bundle.vectors) == 3
    _, mug = bundle.item_by_id("mug")
    assert mug["title"] == "Coffee mug" and mug["category_id"] == 3
    assert mug["tags"] == {"colour": "brown", "size": "m"}
    assert mug["int_attrs"] == {"int_attr": 42} and mug["str_attrs"] == {"str_attr": "ceramic"}
    assert bundle.item_by_id("ship")[1]["adult"] is True
    assert list(bundle.vector_items) == [0, 0, 1]


@pytest.mark.slow
def test_rebuild_reuses_cached_embeddings(tmp_path: Path) -> None:
    folder = _mini_catalog(tmp_path)
    settings = BuildSettings(cache_dir=str(tmp_path / "cache"), workers=1)
    first = build_bundle(folder, tmp_path / "a.lbx", settings, progress=False)
    shutil.copy(SAMPLE_CATALOG / "clock.jpg", folder / "clock.jpg")
    second = build_bundle(folder, tmp_path / "b.lbx", settings, progress=False)
    assert (first.cached, first.embedded) == (0, 3)
    assert (second.cached, second.embedded) == (3, 1)
    a, b = open_bundle(tmp_path / "a.lbx"), open_bundle(tmp_path / "b.lbx")
    ra, rb = a.item_by_id("coffee")[0], b.item_by_id("coffee")[0]
    np.testing.assert_allclose(a.item_vectors(ra), b.item_vectors(rb), atol=0.05)


@pytest.mark.slow
def test_parallel_workers_match_a_single_worker(tmp_path: Path) -> None:
    folder = _mini_catalog(
        tmp_path,
        (
            "coffee",
            "rocket",
            "chelsea-cat",
            "clock",
            "coins",
            "astronaut",
            "camera",
            "brick",
            "card-00",
        ),
    )
    build_bundle(folder, tmp_path / "one.lbx", FAST, progress=False)
    build_bundle(
        folder, tmp_path / "two.lbx", BuildSettings(cache_dir=None, workers=2), progress=False
    )
    one, two = open_bundle(tmp_path / "one.lbx"), open_bundle(tmp_path / "two.lbx")
    np.testing.assert_array_equal(np.asarray(one.vectors), np.asarray(two.vectors))


def test_empty_and_missing_catalogs_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="empty"):
        build_bundle(tmp_path / "empty", tmp_path / "x.lbx", FAST, progress=False)
    with pytest.raises(BuildError, match="no such file"):
        build_bundle(tmp_path / "nope", tmp_path / "x.lbx", FAST, progress=False)
    with pytest.raises(BuildError, match="--trees"):
        build_bundle(SAMPLE_CATALOG, tmp_path / "x.lbx", replace(FAST, trees=0), progress=False)
    assert not (tmp_path / "x.lbx").exists()


@pytest.mark.slow
def test_all_photos_bad_fails_and_keeps_the_old_bundle(tmp_path: Path) -> None:
    folder = _mini_catalog(tmp_path)
    out = tmp_path / "keep.lbx"
    build_bundle(folder, out, FAST, progress=False)
    before = (out / "manifest.json").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(BuildError, match="none of the 1 photos"):
        build_bundle(bad, out, FAST, progress=False)
    assert (out / "manifest.json").read_bytes() == before
    assert open_bundle(out).item_count == 3
    assert not list(tmp_path.glob(".keep.lbx.*"))


def test_bad_manifest_rows_name_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "c.jsonl"
    manifest.write_text('{"path": "a.jpg"}\n{not json}\n')
    with pytest.raises(CatalogError, match=r"c.jsonl:2"):
        read_catalog(manifest)
    csv = tmp_path / "c.csv"
    csv.write_text("id,title\nx,no path here\n")
    with pytest.raises(CatalogError, match="no image path"):
        read_catalog(csv)


@pytest.mark.slow
def test_projection_is_learned_when_the_catalog_is_large_enough(tmp_path: Path) -> None:
    """By default from camera views of the catalog; ``whiten_views=0``: PCA-whitening."""
    settings = BuildSettings(
        cache_dir=None, workers=1, dims=8, min_photos_for_pca=16, catalog_views=("full", "center")
    )
    report = build_bundle(SAMPLE_CATALOG, tmp_path / "p.lbx", settings, progress=False)
    bundle = open_bundle(tmp_path / "p.lbx")
    assert report.projection == "learned-whiten" and bundle.dims == 8
    assert bundle.projection is not None and len(bundle.vectors) == 36
    assert bundle.manifest["descriptor"]["projection"] == "learned-whiten"
    plain = replace(settings, whiten_views=0)
    report = build_bundle(SAMPLE_CATALOG, tmp_path / "q.lbx", plain, progress=False)
    assert report.projection == "pca-whiten"
    assert open_bundle(tmp_path / "q.lbx").projection.whiten  # type: ignore[union-attr]


@pytest.mark.slow
def test_rebuilds_reuse_the_cached_camera_views(tmp_path: Path, monkeypatch) -> None:
    """The learned whitening's camera views are the slow part of a build: a rebuild renders
    none of them again and learns the same projection; a new photo adds only its own."""
    from lensbox.index_builder import workers

    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE_CATALOG, folder, ignore=shutil.ignore_patterns("clock.jpg"))
    settings = BuildSettings(
        cache_dir=str(tmp_path / "cache"), workers=1, dims=8, min_photos_for_pca=16
    )
    first = build_bundle(folder, tmp_path / "a.lbx", settings, progress=False)
    rendered: list[str] = []
    real = workers.embed_camera_views

    def counted(job: tuple):
        rendered.append(Path(job[0]).name)
        return real(job)

    monkeypatch.setattr(workers, "embed_camera_views", counted)
    build_bundle(folder, tmp_path / "b.lbx", settings, progress=False)
    assert first.projection == "learned-whiten" and rendered == []
    a, b = open_bundle(tmp_path / "a.lbx"), open_bundle(tmp_path / "b.lbx")
    assert a.projection is not None and b.projection is not None
    np.testing.assert_array_equal(a.projection.components, b.projection.components)
    shutil.copy(SAMPLE_CATALOG / "clock.jpg", folder / "clock.jpg")
    build_bundle(folder, tmp_path / "c.lbx", settings, progress=False)
    assert rendered == ["clock.jpg"]


def test_items_without_optional_fields_are_written(tmp_path: Path) -> None:
    """Synthetic or hand-made bundles give only an id; every other column has a default."""
    import sqlite3

    from lensbox.index_builder.writer import write_items_db

    write_items_db(tmp_path / "items.sqlite", [{"id": "a"}, {"id": "b", "adult": True}])
    rows = sqlite3.connect(tmp_path / "items.sqlite").execute(
        "SELECT id, adult, tags FROM items ORDER BY row"
    )
    assert list(rows) == [("a", 0, "{}"), ("b", 1, "{}")]


def test_manifest_columns_as_people_write_them(tmp_path: Path) -> None:
    """Category names, extra keys of every JSON type, and a clash with a plain integer id."""
    from lensbox.index_builder.catalog import assign_categories, extra_columns

    rows = [
        {"path": "a.jpg", "category_id": "toys", "price": 9.5, "new": True, "dims": [1, 2]},
        {"path": "b.jpg", "category": "games", "price": "", "str_attr": "x"},
        {"path": "c.jpg", "category_id": 2},
        {"path": "d.jpg", "category_id": "3"},
    ]
    manifest = tmp_path / "c.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    items = read_catalog(manifest)
    a, b, c, d = items
    assert a.str_attrs == {"price": "9.5", "new": "true", "dims": "[1, 2]"}
    assert b.str_attrs == {"str_attr": "x"} and extra_columns(items) == ["dims", "new", "price"]
    # "toys" was 2 in the previous bundle, but a row now uses 2 as a plain id: it moves
    table = assign_categories(items, previous={"games": 7, "toys": 2, "gone": 9})
    assert table == {"games": 7, "toys": 8}
    assert [it.category_id for it in items] == [8, 7, 2, 3]
    assert a.category == "toys" and c.category is None and d.category is None


def _die(path: str) -> dict:
    os._exit(3)  # a worker crashing in native code, as a broken runtime does


def test_a_crashing_worker_fails_the_build_instead_of_hanging(tmp_path: Path, monkeypatch) -> None:
    from lensbox.index_builder import workers

    folder = _mini_catalog(
        tmp_path,
        names=(
            "coffee",
            "rocket",
            "chelsea-cat",
            "clock",
            "coins",
            "camera",
            "brick",
            "gravel",
            "hubble",
        ),
    )
    monkeypatch.setattr(workers, "embed_file", _die)  # forked workers inherit it
    settings = BuildSettings(cache_dir=None, workers=2, calibrate=False)
    with pytest.raises(BuildError, match="worker process died"):
        build_bundle(folder, tmp_path / "out.lbx", settings, progress=False)
    assert not (tmp_path / "out.lbx").exists()
