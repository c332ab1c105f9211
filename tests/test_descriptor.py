"""The descriptor's projection: PCA-whitening vs whitening learned from camera views."""

from __future__ import annotations

import numpy as np

from lensbox.device.embedding.descriptor import Projection, l2_normalise


def _items_and_views(rng: np.random.Generator, items: int = 60, views: int = 4):
    """Items that differ in 8 "content" dims and, as catalog photos shot on different
    backdrops do, in 8 "scene" dims too; a camera view keeps the content and changes the
    scene (clutter, light). Only pairs of photo and view say which dims are the scene's."""
    content = rng.standard_normal((items, 8))
    scene = rng.standard_normal((items, 8))
    photos = np.hstack([content, scene]) + 3.0  # pooled activations are positive
    shots = []
    for _ in range(views):
        moved = scene + 1.5 * rng.standard_normal(scene.shape)
        shots.append(np.hstack([content + 0.1 * rng.standard_normal(content.shape), moved]) + 3)
    return photos, np.stack(shots, axis=1)  # (items, 16), (items, views, 16)


def _recall(projection: Projection, photos: np.ndarray, queries: np.ndarray) -> float:
    catalog = projection.apply(photos)
    hits = 0
    for row, shots in enumerate(queries):
        hits += int(np.sum(np.argmax(projection.apply(shots) @ catalog.T, axis=1) == row))
    return hits / queries.shape[0] / queries.shape[1]


def test_whitening_learned_from_camera_views_ignores_what_a_camera_changes() -> None:
    rng = np.random.default_rng(4)
    photos, train = _items_and_views(rng)
    _, test = _items_and_views(np.random.default_rng(4), views=8)  # same items, new views
    test = test[:, 4:]  # views the projection did not learn from
    pairs = (train.reshape(-1, 16), np.repeat(photos, train.shape[1], axis=0))
    learned = Projection.fit_learned(photos, pairs, dims=12)
    pca = Projection.fit(photos, dims=12)
    assert _recall(learned, photos, test) >= 0.9
    assert _recall(learned, photos, test) > _recall(pca, photos, test) + 0.2


def test_a_learned_projection_keeps_the_catalogs_spread_for_the_tree_index() -> None:
    """Learned components are not divided by the catalog's spread: Annoy's space needs no
    un-whitening, and the first output dims are the ones items differ in most."""
    rng = np.random.default_rng(5)
    photos, views = _items_and_views(rng)
    pairs = (views.reshape(-1, 16), np.repeat(photos, views.shape[1], axis=0))
    learned = Projection.fit_learned(photos, pairs, dims=6)
    assert not learned.whiten and learned.unwhiten_scale() is None
    spread = (l2_normalise(photos) - learned.mean) @ learned.components
    assert np.all(np.diff(spread.var(axis=0)) <= 1e-9)
    assert learned.apply(photos).shape == (len(photos), 6)
