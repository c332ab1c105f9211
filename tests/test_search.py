"""Search core: camera-like queries find their item; filters apply before paging."""

from __future__ import annotations

import numpy as np
import pytest

from lensbox.device.embedding.subject import Box
from lensbox.device.imaging import load_image
from lensbox.device.search.engine import SearchEngine, SearchSettings

from .conftest import SAMPLE_CATALOG, SAMPLE_QUERIES


@pytest.mark.parametrize("query", sorted(p.name for p in SAMPLE_QUERIES.glob("*.jpg")))
def test_camera_like_queries_find_their_item(catalog, query: str) -> None:
    expected = query.replace("-photo.jpg", "")
    res = catalog.search_image(load_image(SAMPLE_QUERIES / query), top_k=3)
    assert res.hits[0].id == expected, [(h.id, h.score) for h in res.hits]
    assert 0.0 <= res.hits[-1].score <= res.hits[0].score <= 1.0


def test_a_catalog_photo_scores_near_one_against_itself(catalog) -> None:
    res = catalog.search_image(load_image(SAMPLE_CATALOG / "rocket.jpg"), top_k=1)
    assert res.hits[0].id == "rocket" and res.hits[0].score > 0.95


def test_paging_is_consistent(catalog) -> None:
    q = catalog.embed_query(load_image(SAMPLE_QUERIES / "coffee-photo.jpg")).vectors
    full, total = catalog.search_vectors(q, top_k=10)
    page2, total2 = catalog.search_vectors(q, top_k=3, offset=3)
    assert total == total2 == 18
    assert [h.id for h in page2] == [h.id for h in full[3:6]]


def test_filters_apply_before_the_page_is_cut(catalog) -> None:
    q = catalog.embed_query(load_image(SAMPLE_QUERIES / "coffee-photo.jpg")).vectors
    cards, total = catalog.search_vectors(
        q, top_k=4, predicate=lambda it: it["id"].startswith("card")
    )
    assert total == 6 and len(cards) == 4
    assert all(h.id.startswith("card") for h in cards)
    scores = [h.score for h in cards]
    assert scores == sorted(scores, reverse=True)


def test_annoy_and_exact_rankings_agree_on_a_small_bundle(engine) -> None:
    q = engine.embed_query(load_image(SAMPLE_QUERIES / "astronaut-photo.jpg")).vectors
    exact_rows, exact_scores = engine.rank(q, 10, exact=True)
    ann_rows, ann_scores = engine.rank(q, 10, exact=False)
    assert list(ann_rows[:5]) == list(exact_rows[:5])
    np.testing.assert_allclose(ann_scores[:5], exact_scores[:5], atol=1e-5)


def test_region_crops_before_embedding(catalog) -> None:
    rgb = load_image(SAMPLE_CATALOG / "coffee.jpg")
    h, w = rgb.shape[:2]
    canvas = np.concatenate([load_image(SAMPLE_CATALOG / "rocket.jpg")[:h, :w], rgb], axis=1)
    res = catalog.search_image(canvas, top_k=1, region=Box(w, 0, w, h))
    assert res.hits[0].id == "coffee"
    with pytest.raises(ValueError, match="outside"):
        catalog.search_image(canvas, region=Box(5 * w, 0, 10, 10))


def test_settings_reject_unknown_views(engine) -> None:
    with pytest.raises(ValueError, match="unknown views"):
        SearchEngine(engine.bundle, engine.embedder, SearchSettings(query_views=("zoom",)))


@pytest.mark.slow
def test_annoy_on_a_whitened_bundle_searches_in_pca_space(tmp_path) -> None:
    """Whitened bundles index the top PCA directions of un-whitened vectors; the shortlist
    must still match exact."""
    from lensbox.device.live.catalog import open_catalog
    from lensbox.index_builder.build import BuildSettings, build_bundle

    settings = BuildSettings(
        cache_dir=None,
        workers=1,
        dims=16,
        min_photos_for_pca=16,
        catalog_views=("full", "center", "tl", "br"),
        index_dims=8,
        whiten_views=0,  # PCA-whitening: the one with a whitening to undo
    )
    build_bundle(SAMPLE_CATALOG, tmp_path / "w.lbx", settings, progress=False)
    cat = open_catalog(str(tmp_path / "w.lbx"), SearchSettings(exact_below=0), threads=1)
    eng = cat.engine
    assert eng.bundle.manifest["index"] == {
        **eng.bundle.manifest["index"],
        "space": "pca-reduced",
        "dims": 8,
    }
    assert eng.bundle.projection is not None
    scale = eng.bundle.projection.unwhiten_scale()
    assert scale is not None and scale.std() > 0  # whitening really is undone per axis
    ann = eng.bundle.ann_projection
    assert ann is not None and ann.matrix.shape == (16, 8)
    # the index favours the high-variance (leading) PCA axes once whitening is undone
    weight = np.abs(ann.matrix).sum(axis=1)
    assert weight[:4].mean() > weight[-4:].mean()
    q = eng.embed_query(load_image(SAMPLE_QUERIES / "rocket-photo.jpg")).vectors
    ann_rows, ann_scores = eng.rank(q, 5, exact=False)
    exact_rows, exact_scores = eng.rank(q, 5, exact=True)
    assert list(ann_rows[:5]) == list(exact_rows)
    np.testing.assert_allclose(ann_scores[:5], exact_scores, atol=1e-5)
    hits = cat.search_image(load_image(SAMPLE_QUERIES / "rocket-photo.jpg"), 1).hits
    assert hits[0].id == "rocket"


def test_exact_scan_scores_int8_blocks_without_a_float_copy(engine, monkeypatch) -> None:
    """The exact scan converts a few int8 rows at a time: same scores as the float32 copy
    it used to keep (and still keeps when exact_cache_mb allows), none kept by default."""
    from lensbox.device.embedding.descriptor import dequantize_int8
    from lensbox.device.search import engine as engine_module

    monkeypatch.setattr(engine_module, "EXACT_BLOCK", 7)  # several blocks, a short last one
    every_view = SearchEngine(engine.bundle, engine.embedder, SearchSettings(full_first=False))
    q = every_view.embed_query(load_image(SAMPLE_QUERIES / "coffee-photo.jpg")).vectors
    assert len(q) == 3
    blocked = SearchEngine(engine.bundle, engine.embedder, SearchSettings())
    copied = SearchEngine(engine.bundle, engine.embedder, SearchSettings(exact_cache_mb=128))
    floats = dequantize_int8(np.asarray(engine.bundle.vectors), engine.bundle.int8_scale)
    want = np.maximum.reduceat((floats @ q.T).max(axis=1), blocked._starts)
    np.testing.assert_allclose(blocked.exact_scores(q), want, atol=1e-5)
    np.testing.assert_allclose(copied.exact_scores(q), want, atol=1e-6)
    # One view (the cascade's first stage), asked twice (the second time remembered).
    for view in (0, 1, 0):
        one = q[view : view + 1].copy()
        want_one = np.maximum.reduceat((floats @ one.T)[:, 0], blocked._starts)
        np.testing.assert_allclose(blocked.exact_scores(one), want_one, atol=1e-5)
    assert blocked._float is None and copied._float is not None
    rows_b, scores_b = blocked.rank(q, None, exact=True)
    rows_c, scores_c = copied.rank(q, None, exact=True)
    assert list(rows_b) == list(rows_c)
    np.testing.assert_allclose(scores_b, scores_c, atol=1e-5)


def test_insert_ranked_orders_as_a_full_sort_would() -> None:
    """Merging a few rows into a ranking whose head alone is sorted gives the same head as
    sorting everything (ties: the existing row first), and every row is kept."""
    from lensbox.device.search.engine import insert_ranked

    rng = np.random.default_rng(7)
    for trial in range(200):
        n, k = int(rng.integers(0, 60)), int(rng.integers(0, 8))
        scores = rng.choice([0.1, 0.2, 0.5, 0.7, 0.9], n).astype(np.float32)  # many ties
        rows = np.arange(n, dtype=np.int64)
        full = np.argsort(-scores, kind="stable")
        ordered = int(rng.integers(0, n + 1))
        head = full[:ordered]  # the best `ordered`, in order; the rest shuffled after them
        rest = np.setdiff1d(np.arange(n), head)
        rng.shuffle(rest)
        part = np.concatenate([head, rest]).astype(np.int64)
        new_scores = rng.choice([0.1, 0.5, 0.7, 0.95], k).astype(np.float32)
        new_rows = np.arange(n, n + k, dtype=np.int64)
        got_rows, got_scores, now = insert_ranked(
            rows[part], scores[part], ordered, new_rows, new_scores
        )
        all_scores = np.concatenate([scores[part], new_scores])
        want = np.argsort(-all_scores, kind="stable")
        assert sorted(got_rows.tolist()) == list(range(n + k)), trial
        assert now >= ordered
        np.testing.assert_array_equal(got_scores[:now], all_scores[want][:now])
        if 0 < now < len(got_scores):
            assert got_scores[now:].max() <= got_scores[:now].min()


def test_a_page_is_the_same_when_only_its_head_is_sorted(engine) -> None:
    """An exact search sorts only the page it shows; a filter still walks all in order."""
    q = engine.embed_query(load_image(SAMPLE_QUERIES / "rocket-photo.jpg")).vectors
    whole_rows, whole_scores = engine.rank(q, None, exact=True)
    for head in (1, 3, 10):
        rows, scores = engine.rank(q, None, exact=True, head=head)
        assert len(rows) == len(whole_rows) and set(rows.tolist()) == set(whole_rows.tolist())
        np.testing.assert_array_equal(rows[:head], whole_rows[:head])
        np.testing.assert_array_equal(scores[:head], whole_scores[:head])
