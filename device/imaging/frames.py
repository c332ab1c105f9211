"""Pixel coordinates between a reduced-scale decode and the full image.

:func:`~lensbox.device.imaging.decode.decode_reduced` may hand out pixels at 1/2, 1/4 or 1/8
of the photo's size; everything a caller reports or is given (regions, subject boxes,
keypoints, the image size) stays in full-resolution pixels. These map between the two.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from lensbox.device.embedding.subject import Box
from lensbox.device.features.local import LocalFeatures, LocalSettings

if TYPE_CHECKING:
    from lensbox.device.imaging.decode import DecodedImage
    from lensbox.device.search.engine import QueryEmbedding


def box_to_decoded(box: Box, scale: tuple[float, float], decoded: tuple[int, int]) -> Box:
    """A full-resolution box -> the decoded image's pixels, grown outward to whole pixels
    (so the crop never loses an edge) and clipped to ``decoded`` = (width, height)."""
    sx, sy = scale
    x0, y0 = math.floor(box.x * sx), math.floor(box.y * sy)
    x1 = math.ceil((box.x + box.width) * sx)
    y1 = math.ceil((box.y + box.height) * sy)
    return Box(x0, y0, x1 - x0, y1 - y0).clip(*decoded)


def box_to_full(box: Box, scale: tuple[float, float], full: tuple[int, int]) -> Box:
    """A box in the decoded image's pixels -> full-resolution pixels, clipped to ``full``."""
    sx, sy = scale
    x0, y0 = round(box.x / sx), round(box.y / sy)
    x1, y1 = round((box.x + box.width) / sx), round((box.y + box.height) / sy)
    return Box(x0, y0, x1 - x0, y1 - y0).clip(*full)


def local_to_full(
    local: LocalFeatures | None, scale: tuple[float, float], size: tuple[int, int]
) -> LocalFeatures | None:
    """Keypoints found on decoded pixels -> full-resolution pixels of an image of ``size``
    (the whole image's or a region's), as if they had been found there."""
    if local is None:
        return None
    sx, sy = scale
    xy = (local.xy / np.array([sx, sy], np.float32)).astype(np.float32)
    return LocalFeatures(xy, local.desc, (int(size[0]), int(size[1])))


# The long side kept is this many times the local features' max_side: ORB then still shrinks
# the pixels itself (INTER_AREA) by 2x or more, and finds 95% of the keypoints a full decode
# gives (13-21% differ at 1x: libjpeg's scaled IDCT is not an area average), so bundles built
# from full decodes keep verifying as before. Measured in docs/benchmarks.md, section 2.
ORB_MARGIN = 2


def pipeline_sides(local: LocalSettings | None = None) -> tuple[int, int]:
    """(long, short) sides a photo keeps when decoded at a reduced scale, for catalog and
    query photos alike: ``ORB_MARGIN`` times the local features' ``max_side`` (the default
    settings' when the bundle has none), never less than the model's input; and the model's
    input size."""
    from lensbox.device.embedding.model import INPUT_SIZE

    max_side = (local or LocalSettings()).max_side
    return max(ORB_MARGIN * max_side, INPUT_SIZE), INPUT_SIZE


def query_to_full(
    emb: QueryEmbedding, decoded: DecodedImage, region: Box | None = None
) -> QueryEmbedding:
    """A query embedded from ``decoded``'s pixels (cropped to ``region`` mapped with
    :func:`box_to_decoded`) -> its subject boxes, size and keypoints in full-resolution
    pixels, with ``region`` (full-resolution, clipped) as its region."""
    if not decoded.reduced:
        return emb
    size = (region.width, region.height) if region is not None else decoded.size
    scale = decoded.scale
    return replace(
        emb,
        subjects=[box_to_full(b, scale, size) for b in emb.subjects],
        size=size,
        region=region,
        local=local_to_full(emb.local, scale, size),
    )
