"""A query's views embedded together equal each view embedded alone, on every runtime."""

from __future__ import annotations

import numpy as np
import pytest

from lensbox.device.embedding.descriptor import l2_normalise
from lensbox.device.embedding.embedder import Embedder
from lensbox.device.embedding.model import (
    TFLiteModel,
    input_table,
    lookup,
    preprocess,
    quantize_input,
    resize_input,
)
from lensbox.device.embedding.runtime import available_runtimes
from lensbox.device.embedding.views import QUERY_VIEWS, crop_views
from lensbox.device.imaging import load_image
from lensbox.models import MODEL_PATH

from .conftest import SAMPLE_QUERIES

RUNTIMES = available_runtimes()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_image(SAMPLE_QUERIES / "coffee-photo.jpg")


def test_the_input_table_is_preprocess_then_quantize_bit_for_bit(photo) -> None:
    model = TFLiteModel(MODEL_PATH, 1)
    detail = model._input
    views = [photo, photo[50:300, 100:500], photo[::3, ::2]]
    for view in views:
        expected = quantize_input(preprocess(view)[None], detail)
        pixels = resize_input(view)[None]
        np.testing.assert_array_equal(input_table(detail)[pixels], expected)
        np.testing.assert_array_equal(lookup(input_table(detail), pixels), expected)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pixels_and_float_input_give_the_same_outputs(runtime: str, photo) -> None:
    model = TFLiteModel(MODEL_PATH, 1, runtime)
    a = model.run(preprocess(photo)[None])
    b = model.run_pixels(resize_input(photo)[None])
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.logits, b.logits)
    with pytest.raises(TypeError):
        model.run_pixels(preprocess(photo)[None])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("pin_batches", [1, 2])
def test_views_batched_equal_views_one_by_one(runtime: str, pin_batches: int, photo) -> None:
    """The query's crops run as one batch (on a pinned interpreter or a resized one); each
    pooled view matches embedding that view's pixels alone."""
    embedder = Embedder(TFLiteModel(MODEL_PATH, 1, runtime, pin_batches=pin_batches))
    for _ in range(2):  # the second query reuses whatever the first allocated
        emb = embedder.embed(photo, QUERY_VIEWS)
        crops = crop_views(photo, QUERY_VIEWS, emb.subjects[0])
        alone = np.stack([embedder.embed(c, ("full",)).pooled[0] for c in crops])
        cosines = (l2_normalise(emb.pooled) * l2_normalise(alone)).sum(axis=1)
        assert cosines.min() >= 0.999, cosines


def test_pinned_and_resized_interpreters_agree(photo) -> None:
    pinned = Embedder(TFLiteModel(MODEL_PATH, 1, pin_batches=3))
    resized = Embedder(TFLiteModel(MODEL_PATH, 1, pin_batches=1))
    a = pinned.embed_many([photo, photo[:, ::-1]], QUERY_VIEWS)
    b = resized.embed_many([photo, photo[:, ::-1]], QUERY_VIEWS)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.pooled, y.pooled, atol=1e-5)
        assert x.subjects == y.subjects
