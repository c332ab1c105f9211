"""The export's parity check measures the device's own embedding path.

models/export_model.py once carried its own resize, scaling and GeM pooling "to stand
alone", so the parity figures in MODEL_CARD.md described a copy of the path, not the path.
Now it calls the device's functions; these tests run its ``measure`` step (the part that
runs the int8 model, on every runtime asked for) and check it computes exactly what the
device's Embedder computes for the same photos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensbox.device.embedding import descriptor, model
from lensbox.device.embedding.embedder import Embedder
from lensbox.device.embedding.model import TFLiteModel
from lensbox.device.embedding.runtime import available_runtimes
from lensbox.device.imaging import load_image
from lensbox.models import MODEL_PATH, export_model

from .conftest import SAMPLE_CATALOG

PHOTOS = ("chelsea-cat", "coffee", "rocket", "astronaut")


def test_the_export_uses_the_device_functions_not_copies() -> None:
    assert export_model.preprocess is model.preprocess
    assert export_model.pool is descriptor.pool
    assert export_model.quantize_input is model.quantize_input
    assert export_model.dequantize_output is model.dequantize_output
    assert export_model.SIZE == model.INPUT_SIZE and export_model.GEM_P == descriptor.GEM_P


@pytest.mark.slow
@pytest.mark.parametrize("runtime", [r for r in available_runtimes() if r in export_model.RUNTIMES])
def test_measure_equals_what_the_device_embeds(runtime: str, tmp_path) -> None:
    photos = [load_image(SAMPLE_CATALOG / f"{name}.jpg") for name in PHOTOS]
    reference = tmp_path / "reference.npz"
    # What the export stores for the torch reference: the device's preprocess of each photo.
    np.savez(reference, inputs=np.stack([model.preprocess(p) for p in photos]))
    out = tmp_path / "measured.npz"
    export_model.measure(MODEL_PATH, reference, runtime, out, threads=2)
    measured = np.load(out)

    embedder = Embedder(TFLiteModel(MODEL_PATH, num_threads=2, runtime=runtime), pooling="gem")
    device_gem = np.stack([embedder.embed(p).pooled[0] for p in photos])
    np.testing.assert_allclose(measured["gem"], device_gem, rtol=1e-6, atol=1e-6)

    avg = Embedder(TFLiteModel(MODEL_PATH, num_threads=2, runtime=runtime), pooling="avg")
    device_avg = np.stack([avg.embed(p).pooled[0] for p in photos])
    np.testing.assert_allclose(measured["avg"], device_avg, rtol=1e-6, atol=1e-6)

    facts = json.loads(str(measured["facts"]))
    assert facts["runtime"] == runtime and facts["batch"]["works"]
    assert measured["logits"].shape == (len(PHOTOS), 1000)


def test_compare_reads_agreement_from_the_pooled_descriptors() -> None:
    """compare() on the pooled outputs: identical descriptors give cosine 1 and full top-1."""
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 6, (5, 7, 7, 16)).astype(np.float32)
    logits = rng.normal(size=(5, 10)).astype(np.float32)
    ref = {**export_model.pooled(features), "logits": logits}
    same = export_model.compare(ref, ref, np.ones(5, bool))
    assert same["gem_cosine_min"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    noisy = {**export_model.pooled(features[::-1]), "logits": logits[::-1]}
    differ = export_model.compare(ref, noisy, np.ones(5, bool))
    assert differ["gem_cosine_min"] < 1.0 and differ["top1_agreement"] < 1.0
