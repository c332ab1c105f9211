"""Coordinates between a reduced-scale decode and the full image map both ways."""

from __future__ import annotations

import numpy as np

from lensbox.device.embedding.subject import Box
from lensbox.device.features.local import LocalFeatures, LocalSettings
from lensbox.device.imaging.frames import (
    ORB_MARGIN,
    box_to_decoded,
    box_to_full,
    local_to_full,
    pipeline_sides,
)


def test_a_box_maps_to_the_same_place_and_back() -> None:
    scale, decoded, full = (0.25, 0.25), (1000, 750), (4000, 3000)
    box = Box(500, 400, 2200, 1600)
    inner = box_to_decoded(box, scale, decoded)
    assert inner == Box(125, 100, 550, 400)
    assert box_to_full(inner, scale, full) == box


def test_boxes_grow_outward_and_stay_inside() -> None:
    scale = (1000 / 4001, 750 / 3001)  # libjpeg rounds odd sizes up
    inner = box_to_decoded(Box(3, 3, 4001, 3001), scale, (1000, 750))
    assert inner.x == 0 and inner.y == 0
    assert inner.x + inner.width <= 1000 and inner.y + inner.height <= 750
    back = box_to_full(Box(10, 10, 20, 20), scale, (4001, 3001))
    assert abs(back.x - 40) <= 1 and abs(back.width - 80) <= 1


def test_keypoints_map_to_full_resolution_pixels() -> None:
    local = LocalFeatures(
        np.array([[10.0, 20.0], [999.0, 749.0]], np.float32),
        np.zeros((2, 32), np.uint8),
        (1000, 750),
    )
    out = local_to_full(local, (0.25, 0.25), (4000, 3000))
    assert out is not None and out.size == (4000, 3000)
    np.testing.assert_allclose(out.xy, [[40, 80], [3996, 2996]])
    assert local_to_full(None, (0.25, 0.25), (4000, 3000)) is None


def test_the_sides_come_from_the_local_feature_settings() -> None:
    assert pipeline_sides() == (ORB_MARGIN * LocalSettings().max_side, 224)
    assert pipeline_sides(LocalSettings(max_side=1024)) == (ORB_MARGIN * 1024, 224)
    assert pipeline_sides(LocalSettings(max_side=100)) == (max(ORB_MARGIN * 100, 224), 224)
    assert ORB_MARGIN >= 1
