"""The shipped int8 model loads and agrees on every installed runtime."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lensbox.device.embedding.descriptor import gem_pool, l2_normalise
from lensbox.device.embedding.embedder import Embedder, top_concepts
from lensbox.device.embedding.model import TFLiteModel, file_sha256, preprocess
from lensbox.device.embedding.runtime import available_runtimes, resolve_runtime
from lensbox.device.imaging import load_image
from lensbox.models import LABELS_PATH, MODEL_PATH

from .conftest import SAMPLE_CATALOG

RUNTIMES = available_runtimes()


def test_both_runtimes_present_when_required() -> None:
    """CI sets LENSBOX_REQUIRE_BOTH_RUNTIMES so the parity test below cannot silently shrink."""
    if os.environ.get("LENSBOX_REQUIRE_BOTH_RUNTIMES") != "1":
        pytest.skip(
            "set LENSBOX_REQUIRE_BOTH_RUNTIMES=1 to require ai-edge-litert and tflite-runtime"
        )
    assert set(RUNTIMES) >= {"ai-edge-litert", "tflite-runtime"}


def test_unknown_runtime_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown runtime"):
        resolve_runtime("tensorflow")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_image(SAMPLE_CATALOG / f"{n}.jpg") for n in ("chelsea-cat", "coffee", "rocket")]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_model_runs_and_names_what_it_sees(runtime: str, photos) -> None:
    model = TFLiteModel(MODEL_PATH, num_threads=1, runtime=runtime)
    out = model.run(np.stack([preprocess(p) for p in photos]))
    assert out.features.shape == (3, 7, 7, 1280)
    assert out.logits.shape == (3, 1000)
    labels = LABELS_PATH.read_text().splitlines()
    cat = [c.name for c in top_concepts(out.logits[0], labels)]
    assert any("cat" in name for name in cat), cat


def test_runtimes_give_the_same_numbers(photos) -> None:
    """Same descriptors and classes on both runtimes, so a bundle built on one serves the other.

    Not bit-exact: ai-edge-litert runs int8 convolutions through XNNPACK, tflite-runtime 2.14
    through its own kernels, and the two round a few activations differently (both agree
    bit for bit with XNNPACK off; see MODEL_CARD.md).
    """
    if len(RUNTIMES) < 2:
        pytest.skip(f"only {RUNTIMES} installed")
    batch = np.stack([preprocess(p) for p in photos])
    outs = [TFLiteModel(MODEL_PATH, 1, rt).run(batch) for rt in RUNTIMES]
    ref = l2_normalise(gem_pool(outs[0].features))
    for other in outs[1:]:
        cosines = (l2_normalise(gem_pool(other.features)) * ref).sum(axis=1)
        assert cosines.min() > 0.99, cosines
        assert (other.logits.argmax(1) == outs[0].logits.argmax(1)).all()


def test_batch_equals_one_by_one(photos) -> None:
    model = TFLiteModel(MODEL_PATH, num_threads=1)
    batch = np.stack([preprocess(p) for p in photos])
    together = model.run(batch)
    for i in range(len(photos)):
        alone = model.run(batch[i : i + 1])
        np.testing.assert_allclose(alone.features[0], together.features[i], atol=1e-4)


def test_embedding_is_deterministic_and_normalised(photos) -> None:
    emb = Embedder(TFLiteModel(MODEL_PATH, 1))
    a = emb.embed(photos[0], ("full", "center", "subject"))
    b = emb.embed(photos[0], ("full", "center", "subject"))
    assert a.pooled.shape == (3, 1280)
    np.testing.assert_array_equal(a.pooled, b.pooled)
    assert a.subjects and a.subjects[0].area > 0


def test_model_card_hash_matches_the_file() -> None:
    card = (MODEL_PATH.parent / "MODEL_CARD.md").read_text()
    assert file_sha256(MODEL_PATH) in card


@pytest.mark.slow
def test_a_bundle_built_on_one_runtime_serves_on_the_other(tmp_path) -> None:
    if len(RUNTIMES) < 2:
        pytest.skip(f"only {RUNTIMES} installed")
    from lensbox.device.live.catalog import open_catalog
    from lensbox.index_builder.build import BuildSettings, build_bundle

    from .conftest import SAMPLE_QUERIES

    settings = BuildSettings(cache_dir=None, workers=1, runtime=RUNTIMES[-1])
    build_bundle(SAMPLE_CATALOG, tmp_path / "x.lbx", settings, progress=False)
    catalog = open_catalog(str(tmp_path / "x.lbx"), threads=1, runtime=RUNTIMES[0])
    hits = catalog.search_image(load_image(SAMPLE_QUERIES / "coffee-photo.jpg"), top_k=1).hits
    assert hits[0].id == "coffee"
