"""Shared fixtures: one real bundle built from the bundled sample catalog per test session.

Building it runs the real TFLite model and writes a real Annoy index, so every test above
the foundation exercises the same path a user's `lensbox build` takes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CATALOG = ROOT / "examples" / "sample-catalog"
SAMPLE_QUERIES = ROOT / "examples" / "sample-queries"
UKBENCH = ROOT.parent / "shared" / "data" / "ukbench-1000"


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lensbox.index_builder.build import BuildSettings, build_bundle

    out = tmp_path_factory.mktemp("bundles") / "sample.lbx"
    build_bundle(SAMPLE_CATALOG, out, BuildSettings(cache_dir=None, workers=1), progress=False)
    return out


@pytest.fixture
def copy(sample_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the sample bundle that a test may damage."""
    dst = tmp_path / "copy.lbx"
    shutil.copytree(sample_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def engine(sample_bundle: Path):
    from lensbox.device.search.engine import open_engine

    return open_engine(str(sample_bundle), threads=1)


@pytest.fixture(scope="session")
def catalog(engine):
    """The sample bundle as built (no journal): what a search goes through; ``engine`` is
    its ranker."""
    from lensbox.device.live.catalog import LiveCatalog

    return LiveCatalog(engine, None)


@pytest.fixture(scope="session")
def embedder(engine):
    return engine.embedder


@pytest.fixture(scope="session")
def ukbench() -> Path:
    if not (UKBENCH / "images").is_dir():
        pytest.skip(f"dev data not found at {UKBENCH} (it lives in ../shared, never in the repo)")
    return UKBENCH


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample catalog with the metadata the API tests filter on (tests/api_support.py)."""
    from tests.api_support import metadata_bundle

    return metadata_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def images():
    """A local HTTP host serving sample photos, for queries by URL."""
    from tests.api_support import ImageHost

    host = ImageHost()
    yield host
    host.close()
