"""LiveCatalog over a real bundle built from the sample catalog with the real model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from lensbox.device.bundle.reader import open_bundle
from lensbox.device.imaging import load_image
from lensbox.device.live.catalog import (
    CatalogClosed,
    CatalogReadOnly,
    LiveCatalog,
    LiveSettings,
)
from lensbox.device.live.journal import read_journal
from lensbox.device.live.slot import BundleSlot
from lensbox.device.search.engine import SearchEngine, SearchSettings

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ROOT / "examples" / "sample-queries"
CATALOG = ROOT / "examples" / "sample-catalog"


@pytest.fixture()
def slot(tmp_path, sample_bundle) -> BundleSlot:
    s = BundleSlot(tmp_path / "bundles" / "default")
    s.install_copy(sample_bundle)
    return s


def _engine(path: Path, engine, **settings) -> SearchEngine:
    return SearchEngine(open_bundle(path), engine.embedder, SearchSettings(**settings))


def _open(slot, engine, tmp_path, background=False, **kw) -> LiveCatalog:
    settings = LiveSettings(background=background, **kw)
    return LiveCatalog(
        _engine(slot.current(), engine),
        tmp_path / "journal" / "default.journal",
        slot=slot,
        settings=settings,
    )


def _as_built(engine: SearchEngine, queries, top_k=10, offset=0, predicate=None, min_score=0.0):
    """A page straight from the engine's ranking of its bundle (no overlay, no merge): the
    reference the catalog's merged ranking must equal when nothing changed."""
    from lensbox.device.search.results import page_hits

    evidence: dict = {}

    def ranking(exact, whole):
        # Every row in order, whatever the page needs: the catalog, which sorts only the
        # head a page shows, must give the same page.
        use_exact = engine.use_exact() if exact is None else exact
        wanted = None if use_exact else offset + top_k
        rows, scores = engine.rank(queries, wanted, use_exact, None, evidence)
        return rows, scores, use_exact or len(rows) >= engine.bundle.item_count

    return page_hits(
        ranking,
        engine.bundle.items,
        lambda hits: engine.annotate(hits, evidence),
        top_k,
        offset,
        predicate,
        min_score,
    )


def _photo(name: str) -> bytes:
    return (QUERIES / name).read_bytes()


def _ids(hits) -> list[str]:
    return [h.id for h in hits]


def test_added_item_is_found_at_once_and_survives_a_restart(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path)
    query = cat.embed_query(load_image(QUERIES / "rocket-photo.jpg")).vectors
    before, total_before = cat.search_vectors(query, 3)
    change = cat.put(
        "kiosk-rocket",
        _photo("rocket-photo.jpg"),
        {"title": "Rocket (kiosk)", "category_id": 7, "int_attrs": {"int_attr": 3}},
    )
    hits, total = cat.search_vectors(query, 3)
    # The very photo: its full view matches exactly, blended 70% toward the centre crop's
    # similarity (lean_on_centre), so first at over 0.8 rather than at 1 (this query
    # was embedded with every view; the cascade's first stage would answer it at 1.0).
    assert change.seq == 1 and hits[0].id == "kiosk-rocket" and hits[0].score > 0.8
    assert total == total_before + 1
    assert _ids(hits)[1:] == _ids(before)[:2]
    item = cat.get("kiosk-rocket")
    assert item["title"] == "Rocket (kiosk)" and item["int_attrs"] == {"int_attr": 3}
    assert item["format"] == "JPEG" and item["width"] > 0 and len(item["content_sha256"]) == 64
    assert item["concepts"] and {"id", "name", "value"} <= set(item["concepts"][0])
    cat.close()
    again = _open(slot, engine, tmp_path)
    hits2, _ = again.search_vectors(query, 3)
    assert [(h.id, h.score) for h in hits2] == [(h.id, h.score) for h in hits]
    assert again.get("kiosk-rocket") == item


def test_deleted_base_item_vanishes_even_from_annoy_results(slot, engine, tmp_path):
    journal = tmp_path / "journal" / "default.journal"
    cat = LiveCatalog(
        _engine(slot.current(), engine, exact_below=0),
        journal,
        slot=slot,
        settings=LiveSettings(background=False),
    )
    query = cat.embed_query(load_image(QUERIES / "coffee-photo.jpg")).vectors
    in_index = cat.bundle.index_space.apply(query[0]).tolist()  # the index's own space
    assert cat.bundle.index.get_nns_by_vector(in_index, 1)  # ANN path is in use
    hits, total = cat.search_vectors(query, 5)
    assert hits[0].id == "coffee"
    row = cat.item_by_id("coffee")[0]
    assert cat.delete("coffee").ids == ("coffee",)
    assert row in cat.bundle.index.get_nns_by_vector(in_index, 18)  # still in Annoy
    after, total_after = cat.search_vectors(query, 5)
    assert "coffee" not in _ids(after) and _ids(after) == _ids(hits)[1:] + _ids(after)[4:]
    assert total_after == total - 1
    assert cat.get("coffee") is None and "coffee" not in cat
    assert cat.delete(["coffee", "no-such-item"]) is None  # nothing left to delete
    assert cat.stats()["seq"] == 1


def test_update_changes_fields_and_keeps_the_photos(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path)
    query = cat.embed_query(load_image(QUERIES / "chelsea-cat-photo.jpg")).vectors
    top = cat.search_vectors(query, 1)[0][0]
    cat.update("chelsea-cat", {"title": "Chelsea", "tags": {"room": "hall"}})
    hit = cat.search_vectors(query, 1)[0][0]
    assert (hit.id, hit.score) == (top.id, top.score)
    assert hit.item["title"] == "Chelsea" and hit.item["tags"] == {"room": "hall"}
    with pytest.raises(KeyError):
        cat.update("no-such-item", {"title": "x"})
    with pytest.raises(ValueError, match="unknown item field 'colour'"):
        cat.update("chelsea-cat", {"colour": "grey"})
    with pytest.raises(ValueError, match="category_id must be an integer"):
        cat.put("x", _photo("coffee-photo.jpg"), {"category_id": "seven"})
    assert cat.stats()["seq"] == 1  # refused changes were never journaled


def test_a_live_catalog_is_the_catalog_that_serves(slot, engine, tmp_path):
    """The one Catalog protocol (device/search/catalog.py) describes what LiveCatalog offers."""
    from lensbox.device.search.catalog import Catalog

    cat = _open(slot, engine, tmp_path)
    assert isinstance(cat, Catalog) and isinstance(LiveCatalog(engine, None), Catalog)
    assert not isinstance(engine, Catalog)  # an engine ranks; it holds no items of its own


def test_replacing_and_appending_photos(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path)
    coffee = cat.embed_query(load_image(QUERIES / "coffee-photo.jpg")).vectors
    rocket = cat.embed_query(load_image(QUERIES / "rocket-photo.jpg")).vectors
    cat.put("thing", _photo("coffee-photo.jpg"), {"title": "v1"})
    cat.put("thing", _photo("rocket-photo.jpg"), {"title": "v2"})  # same id: replaces
    assert _ids(cat.search_vectors(rocket, 1)[0]) == ["thing"]
    assert "thing" not in _ids(cat.search_vectors(coffee, 1)[0])
    sha_v2 = cat.get("thing")["content_sha256"]
    cat.put("thing", _photo("coffee-photo.jpg"), append=True)  # a second photo, same item
    assert len(cat.item_vectors("thing")) == 2 and cat.get("thing")["title"] == "v2"
    assert cat.get("thing")["content_sha256"] == sha_v2  # still described by its first photo
    assert _ids(cat.search_vectors(coffee, 1)[0]) == ["thing"]
    assert _ids(cat.search_vectors(rocket, 1)[0]) == ["thing"]
    hits, _ = cat.search_vectors(coffee, 30)
    assert _ids(hits).count("thing") == 1


def test_paging_and_filters_match_a_compacted_bundle(slot, engine, tmp_path):
    """Merged base + delta - tombstones must rank, filter and page exactly as a bundle
    holding the same items does (the compacted one, ranked by its own SearchEngine)."""
    cat = _open(slot, engine, tmp_path)
    cat.put("new-cat", _photo("chelsea-cat-photo.jpg"), {"category_id": 1})
    cat.put("new-card", _photo("card-02-photo.jpg"), {"category_id": 2})
    cat.put("new-astro", _photo("astronaut-photo.jpg"), {"category_id": 1})
    cat.delete(["card-02", "hubble"])
    cat.update("card-04", {"category_id": 2})
    queries = [
        cat.embed_query(load_image(QUERIES / n)).vectors
        for n in ("card-02-photo.jpg", "chelsea-cat-photo.jpg", "coffee-photo.jpg")
    ]
    cases = [
        (5, 0, None, 0.0),
        (4, 3, None, 0.0),
        (10, 15, None, 0.0),
        (3, 1, None, 0.3),
        (5, 0, lambda it: it["category_id"] == 2, 0.0),
        (2, 1, lambda it: it["category_id"] in (1, 2), 0.0),
    ]
    live = [[cat.search_vectors(q, k, o, p, m) for (k, o, p, m) in cases] for q in queries]
    report = cat.compact()
    assert report is not None and report["items"] == 18 + 3 - 2
    plain = _engine(slot.current(), engine)
    for q, results in zip(queries, live):
        for (k, o, p, m), (hits, total) in zip(cases, results):
            ref_hits, ref_total = _as_built(plain, q, k, o, p, m)
            assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in ref_hits]
            assert total == ref_total
            assert [h.item for h in hits] == [h.item for h in ref_hits]


def test_compaction_swaps_bundle_and_truncates_journal(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path)
    first = slot.current()
    cat.put("a", _photo("coffee-photo.jpg"))
    cat.delete("rocket")
    report = cat.compact()
    second = slot.current()
    assert second != first and report["applied_seq"] == 2
    assert open_bundle(second).manifest["live"]["applied_seq"] == 2
    assert open_bundle(second).item_count == 18
    journal = read_journal(cat.journal_path)
    assert journal.header["base_seq"] == 2 and journal.records == []
    assert first.is_dir()  # the previous generation stays for in-flight requests
    cat.put("b", _photo("rocket-photo.jpg"))
    cat.compact()
    assert not first.exists() and slot.current() != second
    assert sorted(p.name for p in slot.root.iterdir() if "@g" in p.name)[-2:] == [
        second.name,
        slot.current().name,
    ]
    assert cat.compact() is None  # nothing new


def test_background_compaction_and_changes_meanwhile(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path, background=True, compact_after_changes=3, compact_nice=19)
    for i in range(3):
        cat.put(f"bg-{i}", _photo("coffee-photo.jpg"), {"title": str(i)})
    deadline = time.monotonic() + 20
    while cat.stats()["applied_seq"] < 3 and time.monotonic() < deadline:
        cat.put(f"more-{int(time.monotonic() * 1e6)}", _photo("rocket-photo.jpg"))
        time.sleep(0.02)
    stats = cat.stats()
    assert stats["applied_seq"] >= 3, stats
    if hasattr(os, "getpriority") and cat._thread.native_id:
        assert os.getpriority(os.PRIO_PROCESS, cat._thread.native_id) == 19  # low priority
    assert stats["pending_changes"] == stats["seq"] - stats["applied_seq"]
    assert stats["last_compaction"]["applied_seq"] == stats["applied_seq"]
    cat.close(wait=5)
    again = _open(slot, engine, tmp_path)
    assert again.count() == cat.count() and again.stats()["seq"] == stats["seq"]


def test_journal_replay_tolerates_a_torn_tail(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path)
    cat.put("kept", _photo("coffee-photo.jpg"))
    cat.close()
    with open(cat.journal_path, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x12\x34\x56\x78partial-record")
    again = _open(slot, engine, tmp_path)
    assert "kept" in again and again.stats()["torn_bytes_dropped"] == 22
    again.put("after", _photo("rocket-photo.jpg"))
    again.close()
    assert "after" in _open(slot, engine, tmp_path)


def test_one_writer_per_journal_and_read_only_replicas(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path)
    cat.put("shared", _photo("coffee-photo.jpg"))
    with pytest.raises(CatalogReadOnly, match="in use by another"):
        _open(slot, engine, tmp_path)
    reader = LiveCatalog(
        _engine(slot.current(), engine),
        cat.journal_path,
        slot=slot,
        settings=LiveSettings(background=False),
        read_only=True,
    )
    assert "shared" in reader
    with pytest.raises(CatalogReadOnly):
        reader.delete("shared")
    cat.close()
    with pytest.raises(CatalogClosed):
        cat.put("late", _photo("coffee-photo.jpg"))
    assert "shared" in cat  # a closed catalog still answers searches


def test_a_new_deploy_archives_the_old_journal(slot, engine, tmp_path, sample_bundle):
    cat = _open(slot, engine, tmp_path)
    cat.put("only-in-old", _photo("coffee-photo.jpg"))
    cat.close()
    slot.install_copy(sample_bundle)  # the same bundle again is still a new deployment
    fresh = _open(slot, engine, tmp_path)
    assert "only-in-old" not in fresh and fresh.count() == 18
    archived = fresh.stats()["archived_journals"]
    assert len(archived) == 1 and Path(archived[0]).is_file()
    assert fresh.lineage != cat.lineage


def test_lookups_for_the_api(slot, engine, tmp_path):
    cat = _open(slot, engine, tmp_path)
    cat.put("p1/a.jpg", _photo("coffee-photo.jpg"), {"product_id": "p1"})
    cat.put("p1/b.jpg", _photo("rocket-photo.jpg"), {"product_id": "p1"})
    assert sorted(cat.find_ids("p1")) == ["p1/a.jpg", "p1/b.jpg"]
    cat.delete(cat.find_ids("p1"))
    assert cat.find_ids("p1") == []
    rows = dict(cat.all_items())
    assert len(rows) == cat.count() == 18
    vec = cat.item_vectors("rocket")
    assert vec.shape == (1, cat.bundle.dims)
    assert cat.search_vectors(vec, 1)[0][0].id == "rocket"
    with pytest.raises(ValueError, match="pooled vectors must have shape"):
        cat.put_pooled("bad", np.zeros((1, 7), np.float32))
    res = cat.search_image(load_image(QUERIES / "coffee-photo.jpg"), top_k=2)
    assert res.hits[0].id == "coffee" and set(res.timings) == {"embed_ms", "search_ms"}
    q1 = cat.embed_query(load_image(QUERIES / "coffee-photo.jpg"))
    q2 = cat.embed_query(load_image(QUERIES / "coffee-photo.jpg"), embedder=engine.embedder)
    np.testing.assert_allclose(q1.vectors, q2.vectors, atol=1e-6)


@pytest.mark.parametrize("exact_below", [0, 20000])
def test_without_changes_results_equal_the_bundle_as_built(slot, engine, tmp_path, exact_below):
    plain = _engine(slot.current(), engine, exact_below=exact_below)
    cat = LiveCatalog(plain, tmp_path / "j", slot=slot, settings=LiveSettings(background=False))
    as_built = LiveCatalog(plain, None)
    query = cat.embed_query(load_image(QUERIES / "card-04-photo.jpg")).vectors
    for args in [(5, 0, None, 0.0), (3, 4, None, 0.2), (4, 1, lambda it: "card" in it["id"], 0.0)]:
        ref_hits, ref_total = _as_built(plain, query, *args)
        for catalog in (cat, as_built):
            hits, total = catalog.search_vectors(query, *args)
            assert [(h.id, h.score, h.row, h.verdict) for h in hits] == [
                (h.id, h.score, h.row, h.verdict) for h in ref_hits
            ]
            assert total == ref_total


def test_without_a_journal_the_bundle_as_built_is_read_only(slot, engine, tmp_path):
    """journal_path=None: no lock file, no journal read or written, no compactor; a journal
    lying next to the bundle is not replayed."""
    writer = _open(slot, engine, tmp_path)
    writer.put("only-in-journal", _photo("coffee-photo.jpg"))
    before = sorted(p for p in tmp_path.rglob("*"))
    cat = LiveCatalog(_engine(slot.current(), engine), None)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, no lock
    assert cat.journal_path is None and cat._thread is None and cat._lock_fd < 0
    assert "only-in-journal" not in cat and cat.count() == 18
    assert cat.writable_reason() == "no journal (the bundle as built)"
    assert not cat.needs_compaction() and cat.stats()["journal_bytes"] is None
    with pytest.raises(CatalogReadOnly, match="no journal"):
        cat.put("x", _photo("rocket-photo.jpg"))
    with pytest.raises(CatalogReadOnly):
        cat.delete("coffee")
    with pytest.raises(ValueError, match="without a journal"):
        LiveCatalog(_engine(slot.current(), engine), None, slot=slot)
    res = cat.search_image(load_image(QUERIES / "coffee-photo.jpg"), top_k=2)
    assert res.hits[0].id == "coffee" and set(res.timings) == {"embed_ms", "search_ms"}
    cat.close()
    writer.close()
