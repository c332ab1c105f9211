"""The hard case on real photos: one view of each object indexed, other views as queries.

Reads ../shared/data/ukbench-1000 (evaluation data, never copied into the repo). The floor
asserted here is far below what the benchmark measures; it catches a broken path (a
preprocessing mismatch between build and query drops recall to chance), not a regression
of a point or two.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lensbox.device.imaging import load_image
from lensbox.device.live.catalog import open_catalog
from lensbox.index_builder.build import BuildSettings, build_bundle

OBJECTS = 40


@pytest.fixture(scope="module")
def ukbench_catalog(ukbench: Path, tmp_path_factory: pytest.TempPathFactory):
    catalog = tmp_path_factory.mktemp("uk") / "catalog"
    catalog.mkdir()
    for obj in range(OBJECTS):
        shutil.copy(ukbench / "images" / f"ukbench{4 * obj:05d}.jpg", catalog / f"obj{obj:03d}.jpg")
    out = catalog.parent / "uk.lbx"
    build_bundle(catalog, out, BuildSettings(cache_dir=None, workers=2), progress=False)
    return open_catalog(str(out), threads=1)


@pytest.mark.slow
def test_other_views_find_their_object(ukbench_catalog, ukbench: Path) -> None:
    correct = total = 0
    for obj in range(OBJECTS):
        for view in (1, 2, 3):
            rgb = load_image(ukbench / "images" / f"ukbench{4 * obj + view:05d}.jpg")
            hits = ukbench_catalog.search_image(rgb, top_k=1).hits
            correct += hits[0].id == f"obj{obj:03d}"
            total += 1
    chance = 1 / OBJECTS
    assert correct / total > max(0.6, 10 * chance), f"recall@1 {correct}/{total}"
