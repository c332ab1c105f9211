"""Recognition on camera photos: local features, the visual-word channel, verification.

The real-photo test reads smvs-dvd from ../shared (never copied into the repo) and uses
only the two cameras the parameters were *not* chosen on (e63, palm).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from lensbox.device.bundle.format import MANIFEST
from lensbox.device.features.local import LocalSettings, extract
from lensbox.device.features.store import FILES, open_local_index
from lensbox.device.imaging.decode import load_image
from lensbox.device.live.catalog import open_catalog
from lensbox.device.search.calibration import Calibration
from lensbox.device.search.engine import open_engine
from lensbox.index_builder.build import BuildSettings, build_bundle

from .api_support import free_port, wait_ready
from .conftest import ROOT, SAMPLE_CATALOG, SAMPLE_QUERIES

SMVS = ROOT.parent / "shared" / "data" / "smvs-dvd"
HELD_OUT = ("e63", "palm")


def _global_only(engine):
    settings = engine.settings
    return replace(settings, rerank=replace(settings.rerank, verify=0))


@pytest.fixture(scope="module")
def smvs_subset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Path, str]]]:
    if not (SMVS / "groundtruth.json").is_file():
        pytest.skip(f"dev data not found at {SMVS} (it lives in ../shared, never in the repo)")
    truth = json.loads((SMVS / "groundtruth.json").read_text())
    refs = sorted((SMVS / "reference").glob("*.jpg"))[:30]
    work = tmp_path_factory.mktemp("smvs")
    catalog = work / "covers"
    catalog.mkdir()
    for ref in refs:
        (catalog / ref.name).symlink_to(ref)
    wanted = {r.stem for r in refs}
    queries = [
        (SMVS / q, Path(r).stem)
        for q, r in sorted(truth.items())
        if Path(r).stem in wanted and q.split("/")[1] in HELD_OUT
    ]
    out = work / "covers.lbx"
    build_bundle(catalog, out, BuildSettings(cache_dir=None, workers=1), progress=False)
    return out, queries


@pytest.mark.slow
def test_verification_corrects_the_global_ranking_on_real_phone_photos(smvs_subset) -> None:
    bundle, queries = smvs_subset
    catalog = open_catalog(str(bundle), threads=2)
    engine = catalog.engine
    assert engine.local is not None
    full_settings = engine.settings
    corrected, right_global, right_full = [], 0, 0
    for path, truth in queries:
        rgb = load_image(path)
        engine.settings = _global_only(engine)
        plain = catalog.search_image(rgb, top_k=3).hits
        engine.settings = full_settings
        verified = catalog.search_image(rgb, top_k=3).hits
        right_global += plain[0].id == truth
        right_full += verified[0].id == truth
        if plain[0].id != truth and verified[0].id == truth:
            corrected.append(verified[0])
    n = len(queries)
    assert n == 60
    # The global descriptor alone is wrong on many of these photos; verification fixes most.
    assert right_full >= right_global + 0.2 * n, (right_global, right_full)
    assert right_full >= 0.75 * n
    assert corrected, "no photo where verification corrected the global ranking"
    hit = corrected[0]
    assert hit.inliers is not None and hit.inliers >= engine.settings.rerank.match.min_inliers
    assert hit.region is not None and len(hit.region) == 4
    assert hit.verdict in ("match", "weak")


def test_the_bundle_holds_local_features_and_a_calibration(sample_bundle: Path) -> None:
    manifest = json.loads((sample_bundle / MANIFEST).read_text())
    local = manifest["local"]
    assert local["detector"] == "orb" and local["photos"] == 18
    assert 0 < local["bytes_per_photo"] <= 64 * 1024  # the budget per catalog photo
    cal = manifest["calibration"]
    assert 0.0 <= cal["weak"] <= cal["match"] <= 1.0 and cal["samples"] == 18
    for name, _ in FILES.values():
        assert (sample_bundle / name).is_file()


@pytest.fixture()
def always_verify(engine, catalog):
    """The sample photos are clear global answers that the cascade would not verify: the
    sample catalog with its ranker (``engine``) set to verify them."""
    base = engine.settings
    engine.settings = replace(base, rerank=replace(base.rerank, confident=2.0))
    yield catalog
    engine.settings = base


def test_the_cascade_answers_a_clear_global_match_without_verifying(engine, catalog) -> None:
    rgb = load_image(SAMPLE_QUERIES / "coffee-photo.jpg")
    assert engine.settings.rerank.confident < 1.0  # on by default
    base, calibration = engine.settings, engine.calibration
    try:
        engine.settings = replace(base, rerank=replace(base.rerank, confident=0.0, margin=0.0))
        engine.calibration = Calibration(match=0.3, weak=0.2)
        top = catalog.search_image(rgb, top_k=1).hits[0]
        assert top.id == "coffee" and top.inliers is None and top.verdict == "match"
        # A clear lead below the bundle's "match" threshold is still verified: an answer the
        # cascade gives is always a match.
        engine.calibration = Calibration(match=0.99, weak=0.5)
        top = catalog.search_image(rgb, top_k=1).hits[0]
        assert top.id == "coffee" and top.inliers is not None and top.inliers >= 12
        engine.settings = replace(base, rerank=replace(base.rerank, confident=2.0))
        engine.calibration = calibration
        top = catalog.search_image(rgb, top_k=1).hits[0]
        assert top.id == "coffee" and top.inliers is not None and top.inliers >= 12
    finally:
        engine.settings, engine.calibration = base, calibration


def test_the_cascade_first_stage_stops_on_the_full_frame_when_it_is_clear(engine, catalog) -> None:
    """A clear full-frame answer costs one model run: no crops, no keypoints. A catalog
    photo searched as itself is that clear, unless the margin asked for cannot be met."""
    base, calibration = engine.settings, engine.calibration
    catalog_photo = load_image(SAMPLE_CATALOG / "coffee.jpg")
    try:
        engine.calibration = Calibration(match=0.3, weak=0.2)
        query = engine.embed_query(catalog_photo)
        assert query.views == ("full",) and query.vectors.shape[0] == 1 and query.local is None
        top = catalog.search_vectors(query.vectors, top_k=1, local=query.local)[0][0]
        assert top.id == "coffee" and top.verdict == "match" and top.inliers is None
        # Not clear enough (the margin cannot be met): every view, keypoints for verification.
        engine.settings = replace(base, rerank=replace(base.rerank, margin=1.5))
        query = engine.embed_query(catalog_photo)
        assert query.views == base.query_views and query.local is not None
        assert query.vectors.shape[0] == len(base.query_views)
        # The stage switched off: every view too, whatever the answer.
        engine.settings = replace(base, full_first=False)
        assert engine.embed_query(catalog_photo).views == base.query_views
    finally:
        engine.settings, engine.calibration = base, calibration


def test_a_query_the_first_stage_settles_through_annoy_is_not_scanned_again(
    engine, catalog, monkeypatch
) -> None:
    """Above FIRST_STAGE_SCAN vectors the first stage screens with Annoy; the search that
    follows a settled query ranks by that shortlist (re-ranked exactly) instead of scanning
    the catalog. A query that goes on is still scanned exactly."""
    import lensbox.device.search.engine as engine_module

    monkeypatch.setattr(engine_module, "FIRST_STAGE_SCAN", 0)  # the sample catalog is small
    scans: list[int] = []
    scan = engine._scan
    monkeypatch.setattr(engine, "_scan", lambda q: scans.append(len(q)) or scan(q))
    monkeypatch.setattr(engine, "calibration", Calibration(match=0.3, weak=0.2))
    assert engine.use_exact()
    query = engine.embed_query(load_image(SAMPLE_CATALOG / "coffee.jpg"))
    assert query.views == ("full",)
    hits, total = catalog.search_vectors(query.vectors, top_k=3, local=query.local)
    assert hits[0].id == "coffee" and hits[0].verdict == "match" and not scans
    assert total == engine.bundle.item_count  # the shortlist holds every item here
    exact = engine.rank(query.vectors, 3, exact=True)
    assert [h.row for h in hits] == exact[0][:3].tolist()
    # A photo the first stage does not settle: every view, and an exact scan.
    base = engine.settings
    monkeypatch.setattr(engine, "settings", replace(base, rerank=replace(base.rerank, margin=1.5)))
    query = engine.embed_query(load_image(SAMPLE_QUERIES / "coffee-photo.jpg"))
    assert len(query.views) > 1
    catalog.search_vectors(query.vectors, top_k=3, local=query.local)
    assert scans == [len(query.views)]


def test_a_sample_photo_is_verified_and_called_a_match(always_verify) -> None:
    catalog = always_verify
    res = catalog.search_image(load_image(SAMPLE_QUERIES / "coffee-photo.jpg"), top_k=3)
    top = res.hits[0]
    assert top.id == "coffee" and top.verdict == "match"
    assert top.inliers is not None and top.inliers >= 12
    xs = [x for x, _ in top.region]
    ys = [y for _, y in top.region]
    width, height = res.query.size
    # The outline lies on the photo, around its middle (the query put the item there).
    assert 0 <= min(xs) < width / 2 < max(xs) <= width * 1.05
    assert 0 <= min(ys) < height / 2 < max(ys) <= height * 1.05


def test_an_object_not_in_the_catalog_is_not_a_match(engine, catalog) -> None:
    rng = np.random.default_rng(1)
    frame = np.full((480, 640, 3), 120, np.uint8)
    for _ in range(60):
        x, y = int(rng.integers(620)), int(rng.integers(460))
        colour = rng.integers(0, 256, 3).tolist()
        cv2.circle(frame, (x, y), int(rng.integers(5, 40)), colour, -1)
    top = catalog.search_image(frame, top_k=1).hits[0]
    assert top.verdict in ("weak", "none")
    assert top.inliers is None or top.inliers < engine.settings.rerank.match.min_inliers


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((300, 400, 3), 200, np.uint8),
        np.zeros((31, 4000, 3), np.uint8),
    ],
    ids=["1x1", "flat-colour", "thin-strip"],
)
def test_images_without_keypoints_rank_by_the_global_descriptor(engine, catalog, image) -> None:
    assert len(extract(image, engine.local.settings, 1000)) == 0
    res = catalog.search_image(image, top_k=3)
    assert len(res.hits) == 3 and all(h.inliers is None for h in res.hits)


def test_keypoints_are_capped_on_a_huge_busy_photo() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    settings = LocalSettings()
    found = extract(noise, settings, settings.query_features)
    assert 0 < len(found) <= settings.query_features
    assert found.xy[:, 0].max() <= 4000 and found.xy[:, 1].max() <= 3000  # original pixels


@pytest.mark.slow
def test_a_bundle_built_without_local_features_still_serves(tmp_path: Path) -> None:
    out = tmp_path / "plain.lbx"
    settings = BuildSettings(cache_dir=None, workers=1, local_features=0)
    build_bundle(ROOT / "examples" / "sample-catalog", out, settings, progress=False)
    assert "local" not in json.loads((out / MANIFEST).read_text())
    catalog = open_catalog(str(out), threads=1)
    assert catalog.engine.local is None
    hits = catalog.search_image(load_image(SAMPLE_QUERIES / "rocket-photo.jpg"), top_k=3).hits
    assert hits[0].id == "rocket" and hits[0].inliers is None and hits[0].verdict


def test_damaged_feature_files_fall_back_to_global_ranking(
    sample_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "copy.lbx"
    shutil.copytree(sample_bundle, copy)
    desc = copy / FILES["desc"][0]
    desc.write_bytes(desc.read_bytes()[:1000])  # truncated
    manifest = json.loads((copy / MANIFEST).read_text())
    with caplog.at_level(logging.WARNING, logger="lensbox.features"):
        assert open_local_index(copy, manifest, manifest["counts"]["items"]) is None
    assert "local features unusable" in caplog.text
    (copy / FILES["inv_photos"][0]).unlink()
    assert open_local_index(copy, manifest, manifest["counts"]["items"]) is None


def test_a_truncated_feature_file_is_refused_with_a_clear_message(
    sample_bundle: Path, tmp_path: Path
) -> None:
    from lensbox.device.bundle.format import BundleError

    copy = tmp_path / "copy.lbx"
    shutil.copytree(sample_bundle, copy)
    xy = copy / FILES["xy"][0]
    xy.write_bytes(xy.read_bytes()[:-8])
    with pytest.raises(BundleError, match=r"local\.xy\.f32"):
        open_engine(str(copy), threads=1)


def test_lensbox_serve_reports_verdict_inliers_and_region(
    sample_bundle: Path, tmp_path: Path
) -> None:
    """The path `lensbox serve` runs (live catalog, interpreter pool), in its own process."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "LENSBOX__SEARCH__CONFIDENT": "2"}  # verify even a clear answer
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lensbox.device.cli",
                "serve",
                str(sample_bundle),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        data = (SAMPLE_QUERIES / "card-04-photo.jpg").read_bytes()
        body = requests.post(f"{url}/v1/search", data=data, timeout=30).json()
        top = body["hits"][0]
        assert top["id"] == "card-04" and top["verdict"] == "match", body
        assert top["inliers"] >= 12 and len(top["region"]) == 4
        assert body["hits"][1]["verdict"] in ("weak", "none")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_compaction_keeps_verification_under_the_new_rows(sample_bundle: Path, tmp_path: Path):
    """Compaction renumbers rows (a deleted item's go away): the keypoints must follow."""
    from lensbox.device.live.catalog import LiveCatalog, LiveSettings
    from lensbox.device.live.slot import BundleSlot

    slot = BundleSlot(tmp_path / "bundles" / "default")
    slot.install_copy(sample_bundle)
    base = open_engine(str(slot.current()), threads=1)
    cat = LiveCatalog(
        base,
        tmp_path / "journal" / "default.journal",
        slot=slot,
        settings=LiveSettings(background=False),
    )
    try:
        cat.delete(["astronaut", "brick"])  # rows before coffee and rocket: they shift
        assert cat.compact() is not None
        engine = cat.engine  # the compacted bundle's
        assert engine.bundle.path != base.bundle.path
        assert engine.local is not None and (engine.local.photo_items == -1).sum() == 2
        engine.settings = replace(base.settings, rerank=replace(base.settings.rerank, confident=2))
        for name in ("coffee", "rocket"):
            rgb = load_image(SAMPLE_QUERIES / f"{name}-photo.jpg")
            top = cat.search_image(rgb, top_k=1).hits[0]
            assert top.id == name and top.inliers is not None and top.inliers >= 12
    finally:
        cat.close()


def test_verifying_on_threads_finds_what_one_by_one_finds(always_verify) -> None:
    """Candidates are checked two at a time; the stop rule still reads them in order, so
    the evidence (which items were checked, their inliers) is the sequential run's."""
    engine = always_verify.engine  # ranking internals: the catalog's ranker
    rgb = load_image(SAMPLE_QUERIES / "card-04-photo.jpg")
    query = engine.embed_query(rgb)
    rows, _ = engine.rank(query.vectors, None, exact=True)
    base = engine.settings

    def evidence(workers: int, stop_inliers: int) -> dict[int, int]:
        rerank = replace(base.rerank, workers=workers, stop_inliers=stop_inliers, patience=1)
        engine.settings = replace(base, rerank=rerank)
        return {row: ev.inliers for row, ev in engine.verify(rows, query.local).items()}

    try:
        every = {w: evidence(w, stop_inliers=10_000) for w in (1, 2, 3)}  # all checked
        early = {w: evidence(w, stop_inliers=20) for w in (1, 2, 3)}  # stops after two
    finally:
        engine.settings = base
    assert len(every[1]) == min(base.rerank.verify, engine.bundle.item_count)
    assert len(early[1]) == 2 and max(early[1].values()) >= 12
    for found in (every, early):
        assert found[2] == found[1] and found[3] == found[1]


def test_when_no_candidate_verifies_verification_looks_further(always_verify) -> None:
    """None of the first ``verify`` candidates verified well: up to ``verify_more`` further
    ones are checked, so an item both channels rank low is still found (smvs: 15 of 39
    wrong answers were such items). A candidate that verifies well ends the checks as
    before, and ``verify_more`` 0 is the old fixed budget."""
    engine = always_verify.engine  # ranking internals: the catalog's ranker
    query = engine.embed_query(load_image(SAMPLE_QUERIES / "coffee-photo.jpg"))
    rows, _ = engine.rank(query.vectors, None, exact=True)
    coffee = int(rows[0])
    assert engine.bundle.items([coffee])[0]["id"] == "coffee"
    buried = np.r_[rows[1:], rows[:1]]  # the item last in the global ranking
    base = engine.settings

    def evidence(order: np.ndarray, verify_more: int) -> dict:
        rerank = replace(base.rerank, words=False, verify=5, verify_more=verify_more)
        engine.settings = replace(base, rerank=rerank)
        return engine.verify(order, query.local)

    try:
        fixed = evidence(buried, verify_more=0)
        further = evidence(buried, verify_more=30)
        first = evidence(rows, verify_more=30)
    finally:
        engine.settings = base
    assert len(fixed) == 5 and coffee not in fixed
    assert not any(ev.inliers >= base.rerank.stop_inliers for ev in fixed.values())
    assert further[coffee].verified and further[coffee].inliers >= base.rerank.stop_inliers
    assert list(further)[:5] == list(fixed)  # the first five as before, then further
    deep = list(further.values())[5:]  # deep in the list only a clear verification counts
    assert deep and all(ev.inliers >= base.rerank.stop_inliers for ev in deep)
    assert list(first) == [int(r) for r in rows[: 1 + base.rerank.patience]]


def _held_up(backdrop: str, item: str) -> np.ndarray:
    """A kiosk photo: ``item``'s catalog photo held up in the middle of the frame, in front
    of ``backdrop``'s catalog photo filling the frame (a poster or shelf behind the counter)."""
    frame = cv2.resize(load_image(SAMPLE_CATALOG / f"{backdrop}.jpg"), (640, 480))
    front = load_image(SAMPLE_CATALOG / f"{item}.jpg")
    w = 300
    h = front.shape[0] * w // front.shape[1]
    x, y = (640 - w) // 2, (480 - h) // 2
    frame[y : y + h, x : x + w] = cv2.resize(front, (w, h), interpolation=cv2.INTER_AREA)
    return frame


def test_the_item_held_up_wins_over_the_backdrop_it_hides(always_verify) -> None:
    """The poster behind the item verifies with more inliers than the item itself, but none
    of them lies in the middle of the frame, where the item hides it: it is marked
    ``behind`` and ranks by its global score alone, so the item held up comes first."""
    engine = always_verify.engine
    photo = _held_up("astronaut", "coffee")
    query = engine.embed_query(photo)
    rows, _ = engine.rank(query.vectors, None, exact=True)
    found = {
        engine.bundle.items([r])[0]["id"]: ev for r, ev in engine.verify(rows, query.local).items()
    }
    poster, item = found["astronaut"], found["coffee"]
    assert poster.verified and poster.inliers > item.inliers and poster.behind
    assert item.verified and not item.behind
    hits = always_verify.search_image(photo, top_k=3).hits
    assert [h.id for h in hits[:2]] == ["coffee", "astronaut"]
    assert hits[1].inliers == poster.inliers and hits[1].verdict != "match"
    # A photo of the item alone is never its own backdrop.
    alone = always_verify.search_image(load_image(SAMPLE_QUERIES / "coffee-photo.jpg"), top_k=1)
    top = engine.verify(np.array([alone.hits[0].row]), alone.query.local)
    assert alone.hits[0].id == "coffee" and not top[alone.hits[0].row].behind


def test_only_an_outline_filling_the_frame_with_an_empty_middle_is_a_backdrop() -> None:
    from lensbox.device.features.verify import Verification, behind

    w, h = 640, 480
    frame = [(-10.0, -10.0), (650.0, -10.0), (650.0, 490.0), (-10.0, 490.0)]
    ring = np.array([(x, y) for x in range(0, 640, 40) for y in range(0, 480, 40)], np.float32)
    ring = ring[(np.abs(ring[:, 0] - 320) > 140) | (np.abs(ring[:, 1] - 240) > 110)]
    middle = np.array([[320, 240], [300, 230], [340, 250]], np.float32)
    small = [(100.0, 100.0), (500.0, 100.0), (500.0, 380.0), (100.0, 380.0)]  # 36% of it
    aside = [(-300.0, 0.0), (300.0, 0.0), (300.0, 480.0), (-300.0, 480.0)]  # misses the middle

    def check(region, points) -> bool:
        return behind(Verification(len(points), len(points), region, points), (w, h))

    assert check(frame, ring)
    assert check(frame, np.r_[ring, middle[:2]])  # two stray inliers in the middle: still
    assert not check(frame, np.r_[ring, middle])
    assert not check(small, ring) and not check(aside, ring)
    assert not check(None, ring) and not behind(Verification(40, 40, frame), (w, h))


def test_query_views_lean_on_the_centre_crop(engine) -> None:
    """The full frame and subject guess are blended 70% toward the centre crop (the camera
    is aimed at the item; the full frame also sees whatever lies around it), so a photo of
    the item alone still scores near 1, and no view is changed without a centre crop."""
    from lensbox.device.search.engine import lean_on_centre

    rgb = load_image(SAMPLE_QUERIES / "coffee-photo.jpg")
    assert engine.settings.query_views == ("full", "center", "subject")
    plain = engine.embed_query(rgb, views=("full", "subject"))  # no centre: unchanged
    assert np.allclose(np.linalg.norm(plain.vectors, axis=1), 1.0, atol=1e-4)
    leaned = engine.embed_query(rgb).vectors
    full, centre = plain.vectors[0], leaned[1]
    assert np.allclose(leaned[0], 0.3 * full + 0.7 * centre, atol=1e-5)
    assert np.allclose(leaned[2], 0.3 * plain.vectors[1] + 0.7 * centre, atol=1e-5)
    same = np.stack([full, full, full])
    assert np.allclose(lean_on_centre(same, ("full", "center", "subject"), 0.6), same, atol=1e-6)


def test_a_homography_that_throws_the_item_far_off_the_photo_is_not_plausible() -> None:
    from lensbox.device.features.verify import _corners, _plausible

    size, ref = (640, 480), (300, 400)
    near = np.array([[0.8, 0.05, 100], [-0.05, 0.8, 40], [0, 0, 1]], np.float64)
    assert _plausible(near, _corners(near, ref), size)
    # Off the edge a little (a cover half out of frame) is fine; many photos away is not.
    edge = near.copy()
    edge[0, 2] = 500
    assert _plausible(edge, _corners(edge, ref), size)
    far = near.copy()
    far[0, 2], far[1, 2] = 24937, -15391
    assert not _plausible(far, _corners(far, ref), size)
