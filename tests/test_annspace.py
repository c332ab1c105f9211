"""The Annoy index in a reduced, un-whitened PCA space (issue 13): what the builder writes,
that the engine shortlists in the same space, that older bundles still serve, and that a
missing or damaged ``ann_projection.npz`` is refused before anything is mapped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lensbox.device.bundle import BundleError, open_bundle
from lensbox.device.bundle.annspace import AnnProjection, IndexSpace
from lensbox.device.bundle.format import (
    ANN_PROJECTION,
    ANNOY_INDEX,
    INDEX_SPACE_PCA,
    INDEX_SPACE_REDUCED,
    MANIFEST,
)
from lensbox.device.imaging import load_image
from lensbox.device.search.engine import (
    FIRST_STAGE_SHARE,
    LEGACY_CANDIDATES,
    LEGACY_SEARCH_K,
    OTHER_VIEW_SHARE,
    SearchEngine,
    SearchSettings,
    ann_defaults,
    index_trees,
    view_budgets,
)
from lensbox.index_builder.writer import write_index, write_manifest

from .conftest import SAMPLE_QUERIES

LENSBOX = [sys.executable, "-m", "lensbox.device.cli"]


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _queries(engine) -> list[np.ndarray]:
    return [engine.embed_query(load_image(p)).vectors for p in sorted(SAMPLE_QUERIES.glob("*.jpg"))]


# -- the projection itself ---------------------------------------------------------------------
def test_fit_keeps_the_directions_of_largest_unwhitened_variance() -> None:
    rng = np.random.default_rng(3)
    spread = np.array([5.0, 3.0, 1.0, 0.1, 0.1, 0.1], np.float32)
    x = rng.standard_normal((2000, 6)).astype(np.float32)  # "whitened": isotropic
    ann = AnnProjection.fit(x, 2, axis_scale=spread)
    assert ann.matrix.shape == (6, 2) and ann.dims == 2 and ann.input_dims == 6
    # the un-whitened space varies most along axes 0 and 1: the index keeps those
    weight = np.abs(ann.matrix) / np.abs(ann.matrix).sum(axis=0)
    assert set(np.argmax(weight, axis=0).tolist()) == {0, 1}
    z = ann.apply(x)
    assert z.dtype == np.float32 and z.shape == (2000, 2)
    assert z[:, 0].std() / z[:, 1].std() == pytest.approx(5.0 / 3.0, rel=0.15)


def test_a_scaled_query_lands_where_the_unit_one_does() -> None:
    """Query views are scaled by their weight; the index space must not care."""
    x = np.random.default_rng(9).standard_normal((300, 6)).astype(np.float32) + 2.0
    ann = AnnProjection.fit(x, 3)
    np.testing.assert_allclose(ann.apply(0.85 * x[:5]), ann.apply(x[:5]), atol=1e-5)


def test_fit_on_int8_vectors_matches_fit_on_their_float_values() -> None:
    rng = np.random.default_rng(4)
    q = rng.integers(-100, 100, (500, 8)).astype(np.int8)
    a = AnnProjection.fit(q, 3, int8_scale=200.0)
    b = AnnProjection.fit(q.astype(np.float32) / 200.0, 3)
    np.testing.assert_allclose(np.abs(a.apply(q / 200.0)), np.abs(b.apply(q / 200.0)), atol=1e-4)


def test_fit_needs_no_more_than_one_vector_and_clamps_dims() -> None:
    one = AnnProjection.fit(np.ones((1, 4), np.float32), 10)
    assert one.dims == 4 and np.all(np.isfinite(one.matrix))
    empty = AnnProjection.fit(np.zeros((0, 4), np.float32), 2)
    assert empty.apply(np.ones((3, 4))).shape == (3, 2)


def test_save_and_load_round_trip_and_refuse_a_foreign_file(tmp_path: Path) -> None:
    ann = AnnProjection.fit(np.random.default_rng(5).standard_normal((50, 8)), 3)
    ann.save(tmp_path / "a.npz")
    back = AnnProjection.load(tmp_path / "a.npz", 8, 3)
    np.testing.assert_array_equal(back.matrix, ann.matrix)
    with pytest.raises(ValueError, match="shapes"):
        AnnProjection.load(tmp_path / "a.npz", 8, 4)
    np.savez(tmp_path / "nan.npz", mean=ann.mean, matrix=ann.matrix * np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        AnnProjection.load(tmp_path / "nan.npz", 8, 3)


def test_one_mapping_for_index_and_queries() -> None:
    """IndexSpace is what the writer and the engine both call; each bundle kind maps the
    way its index was built."""
    x = np.random.default_rng(6).standard_normal((4, 6)).astype(np.float32)
    ann = AnnProjection.fit(x, 2)
    np.testing.assert_array_equal(IndexSpace(ann).apply(x), ann.apply(x))
    scale = np.arange(1, 7, dtype=np.float32)
    np.testing.assert_array_equal(IndexSpace(axis_scale=scale).apply(x), x * scale)
    np.testing.assert_array_equal(IndexSpace().apply(x), x)


# -- built bundles -----------------------------------------------------------------------------
def test_build_writes_the_reduced_space_and_checksums_it(sample_bundle: Path) -> None:
    manifest = _manifest(sample_bundle)
    assert manifest["index"]["space"] == INDEX_SPACE_REDUCED
    assert 1 <= manifest["index"]["dims"] <= manifest["descriptor"]["dims"]
    assert ANN_PROJECTION in manifest["checksums"]
    assert manifest["index"]["trees"] == index_trees(manifest["counts"]["vectors"])
    bundle = open_bundle(sample_bundle)
    assert bundle.ann_projection is not None
    assert bundle.index.f == bundle.index_dims == manifest["index"]["dims"]
    bundle.index.unload()


def test_annoy_top_hits_equal_exact_top_hits_on_a_built_bundle(engine) -> None:
    ann_engine = SearchEngine(engine.bundle, engine.embedder, SearchSettings(exact_below=0))
    assert not ann_engine.use_exact()
    for q in _queries(engine):
        exact_rows, exact_scores = engine.rank(q, 5, exact=True)
        ann_rows, ann_scores = ann_engine.rank(q, 5, exact=False)
        assert list(ann_rows[:5]) == list(exact_rows[:5])
        np.testing.assert_allclose(ann_scores[:5], exact_scores[:5], atol=1e-5)


def test_candidates_and_search_k_follow_the_catalog_size_unless_set(engine) -> None:
    n = len(engine.bundle.vectors)
    assert SearchEngine(engine.bundle, None).ann_params() == ann_defaults(n)
    small, big = ann_defaults(100_000), ann_defaults(1_000_000)
    assert big[0] >= small[0] and all(k > c for c, k in (small, big))
    fixed = SearchEngine(engine.bundle, None, SearchSettings(candidates=7, search_k=70))
    assert fixed.ann_params() == (7, 70)


def test_the_lead_view_gets_the_budget_and_the_others_a_share() -> None:
    budgets = view_budgets(3, 1, 3000, 50_000)
    other = (round(3000 * OTHER_VIEW_SHARE), round(50_000 * OTHER_VIEW_SHARE))
    assert budgets == [other, (3000, 50_000), other]
    assert view_budgets(1, 0, 40, 400) == [(40, 400)]
    # Annoy's own search_k (legacy bundles): every view alike, as before
    assert view_budgets(3, 1, 100, -1) == [(100, -1)] * 3


def test_larger_catalogs_get_more_trees_and_a_deeper_search() -> None:
    assert index_trees(1_000_000) > index_trees(100_000) >= 1
    (c_small, k_small), (c_big, k_big) = ann_defaults(100_000), ann_defaults(1_000_000)
    assert c_big > c_small and k_big > k_small


class _Lookups:
    """The bundle's Annoy index, recording (candidates, search_k) of every lookup."""

    def __init__(self, index) -> None:
        self.index, self.calls = index, []

    def get_nns_by_vector(self, vector, n, search_k):
        self.calls.append((n, search_k))
        return self.index.get_nns_by_vector(vector, n, search_k)


def test_annoy_spends_the_budget_on_the_centre_crop_and_the_first_stage_a_share(engine) -> None:
    from dataclasses import replace

    spy = _Lookups(engine.bundle.index)
    bundle = replace(engine.bundle, index=spy)
    settings = SearchSettings(exact_below=0, candidates=40, search_k=400)
    ann = SearchEngine(bundle, engine.embedder, settings)
    query = _queries(engine)[0]
    assert len(query) == len(settings.query_views)
    ann.rank(query, 5, exact=False)
    lead = settings.query_views.index("center")
    assert spy.calls[lead] == (40, 400)
    assert [c for i, c in enumerate(spy.calls) if i != lead] == [(5, 20)] * (len(query) - 1)
    spy.calls.clear()
    rgb = load_image(SAMPLE_QUERIES / "coffee-photo.jpg")
    ann.settled(engine.embedder.embed(rgb, ("full",), None).pooled[0])
    assert spy.calls == [(round(40 * FIRST_STAGE_SHARE), round(400 * FIRST_STAGE_SHARE))]


def _make_legacy(path: Path, space: str | None) -> None:
    """Rewrite a bundle as an older lensbox built it: no ann_projection.npz, index.ann in
    the full descriptor space (``space`` pca, or no space key at all)."""
    manifest = _manifest(path)
    (path / ANN_PROJECTION).unlink()
    manifest["index"].pop("dims")
    if space is None:
        manifest["index"].pop("space")
    else:
        manifest["index"]["space"] = space
    write_index(path, np.fromfile(path / "vectors.i8", np.int8).reshape(-1, 1280), manifest, None)
    write_manifest(path, manifest)


@pytest.mark.parametrize("space", [INDEX_SPACE_PCA, None], ids=["pca", "no-space-key"])
def test_an_older_bundle_without_the_projection_file_still_serves(
    copy: Path, engine, space: str | None
) -> None:
    assert engine.bundle.dims == 1280  # the sample catalog is too small for PCA
    _make_legacy(copy, space)
    old = SearchEngine(open_bundle(copy), engine.embedder, SearchSettings(exact_below=0))
    assert old.bundle.ann_projection is None and old.bundle.index_dims == 1280
    assert old.ann_params() == (LEGACY_CANDIDATES, LEGACY_SEARCH_K)
    for q in _queries(engine):
        assert old.rank(q, 3, exact=False)[0][0] == engine.rank(q, 3, exact=True)[0][0]
    from lensbox.device.live.catalog import LiveCatalog

    hits = LiveCatalog(old, None).search_image(load_image(SAMPLE_QUERIES / "rocket-photo.jpg"), 1)
    hits = hits.hits
    assert hits[0].id == "rocket"
    old.bundle.index.unload()


# -- damaged or missing projection files -------------------------------------------------------
@pytest.mark.parametrize("checksums", [True, False], ids=["checksummed", "unchecksummed"])
@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong-shape"])
def test_a_missing_or_damaged_projection_file_is_refused(
    copy: Path, damage: str, checksums: bool
) -> None:
    part = copy / ANN_PROJECTION
    if damage == "missing":
        part.unlink()
    elif damage == "garbage":
        part.write_bytes(np.random.default_rng(8).bytes(part.stat().st_size))
    else:
        ann = AnnProjection.load(part, 1280, _manifest(copy)["index"]["dims"])
        AnnProjection(ann.mean, ann.matrix[:, :-1].copy()).save(part)
    if not checksums:
        manifest = _manifest(copy)
        manifest.pop("checksums")
        (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"ann_projection\.npz (is|is listed|is corrupt)") as err:
        open_bundle(copy)
    assert "rebuild" in str(err.value) or "copy" in str(err.value)


def test_a_manifest_without_index_dims_is_refused(copy: Path) -> None:
    manifest = _manifest(copy)
    manifest["index"].pop("dims")
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"index\.dims is missing"):
        open_bundle(copy)


def test_an_unknown_index_space_is_refused(copy: Path) -> None:
    manifest = _manifest(copy)
    manifest["index"]["space"] = "hnsw"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"index\.space is invalid"):
        open_bundle(copy)


def test_deploy_refuses_a_bundle_whose_projection_file_is_gone(copy: Path, tmp_path: Path) -> None:
    (copy / ANN_PROJECTION).unlink()
    res = subprocess.run(
        [*LENSBOX, "deploy", str(copy), "--to", str(tmp_path / "slot")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert ANN_PROJECTION in res.stderr and "Traceback" not in res.stderr


def test_compaction_keeps_the_base_index_space(copy: Path, engine, tmp_path: Path) -> None:
    """The live catalog's compaction rebuilds index.ann through write_index with the base
    bundle's projection: same space, same file."""
    from lensbox.device.live.catalog import LiveCatalog, LiveSettings
    from lensbox.device.live.slot import BundleSlot

    slot = BundleSlot(tmp_path / "bundles" / "default")
    slot.install_copy(copy)
    base = SearchEngine(open_bundle(slot.current()), engine.embedder, SearchSettings())
    cat = LiveCatalog(
        base, tmp_path / "journal" / "j", slot=slot, settings=LiveSettings(background=False)
    )
    cat.put("extra", (SAMPLE_QUERIES / "coffee-photo.jpg").read_bytes())
    cat.delete("rocket")
    assert cat.compact() is not None
    new = slot.current()
    assert (new / ANN_PROJECTION).read_bytes() == (copy / ANN_PROJECTION).read_bytes()
    assert _manifest(new)["index"] == _manifest(copy)["index"]
    bundle = open_bundle(new)
    eng = SearchEngine(bundle, engine.embedder, SearchSettings(exact_below=0))
    q = eng.embed_query(load_image(SAMPLE_QUERIES / "coffee-photo.jpg")).vectors
    assert eng.rank(q, 3, exact=False)[0][0] == eng.rank(q, 3, exact=True)[0][0]
    assert (new / ANNOY_INDEX).stat().st_size > 0
    cat.close()
