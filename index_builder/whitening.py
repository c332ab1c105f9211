"""Learn the descriptor's projection from camera views of the catalog.

PCA-whitening fitted on the catalog alone learns how catalog photos differ from each other,
not how a camera changes one photo: a cluttered desk, tilt, glare and blur move a query's
global descriptor along directions the catalog never varies in, and whitening then
*amplifies* them. Here the builder renders camera views of a sample of its own catalog
photos (the same renderer calibration uses, with other seeds), embeds them as the device
embeds a query (its views, model and pooling), and learns a whitening that shrinks the
directions a view differs from its photo in (:meth:`Projection.fit_learned`).
Measured in docs/recognition.md.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from lensbox.device.embedding.descriptor import Projection
from lensbox.device.embedding.views import QUERY_VIEWS

SEED = 23  # not calibration's seed: thresholds are measured on views whitening never saw


@dataclass(frozen=True)
class WhiteningSettings:
    """BuildSettings.whitening() makes it: ``whiten_views`` and ``whiten_photos`` there."""

    views: int  # camera views per sampled catalog photo
    photos: int  # catalog photos sampled (the cost is views x photos x 3 model runs)
    shrinkage: float = 0.3


def _draw(content: str) -> int:
    """A photo's lot, from its content alone (sha256 hex): the same in every catalog."""
    return int(hashlib.sha256(f"{SEED}|{content}".encode()).hexdigest()[:15], 16)


def sample(contents: list[str], settings: WhiteningSettings) -> list[int]:
    """Indices of the catalog photos to render views of: those with the lowest lots.

    Drawn by content rather than by position, so adding or removing photos leaves the rest
    of the sample (and their cached views, index_builder/cache.py) as it was."""
    order = sorted(range(len(contents)), key=lambda i: (_draw(contents[i]), i))
    return sorted(order[: settings.photos])


def view_jobs(paths: list[str], contents: list[str], settings: WhiteningSettings) -> list[tuple]:
    """Arguments of ``workers.embed_camera_views``, one per sampled photo; the views' seed
    comes from the photo's content, so a photo is rendered the same way in any catalog."""
    return [
        (path, (SEED, _draw(content)), settings.views, QUERY_VIEWS)
        for path, content in zip(paths, contents, strict=True)
    ]


def pairs(
    photos: np.ndarray, views: Iterator[np.ndarray | None], progress: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """(every view row, the pooled photo it shows) from the sampled ``photos`` (N, C) and
    their ``views`` (count, V, C) each; None when too few photos could be rendered."""
    shown, own = [], []
    bar = tqdm(
        total=len(photos), desc="camera views", unit="photo", disable=not progress, file=sys.stderr
    )
    try:
        for photo, rendered in zip(photos, views, strict=True):
            bar.update(1)
            if rendered is None:
                continue
            rows = rendered.reshape(-1, rendered.shape[-1])
            shown.append(rows)
            own.append(np.repeat(photo[None], len(rows), axis=0))
    finally:
        bar.close()
    if len(shown) < 2:
        return None
    return np.concatenate(shown), np.concatenate(own)


def learn(
    pooled: np.ndarray,
    photos: np.ndarray,
    views: Iterator[np.ndarray | None],
    dims: int,
    settings: WhiteningSettings,
    progress: bool = True,
) -> Projection | None:
    """The learned projection of ``pooled`` (every catalog vector), from the sampled
    ``photos``' pooled full views and ``views``, their camera views, one entry per photo
    (read lazily, so rendering runs under the progress bar); None when the views could not
    be made (the caller falls back to PCA-whitening)."""
    found = pairs(photos, views, progress)
    if found is None:
        return None
    return Projection.fit_learned(pooled, found, dims, settings.shrinkage)
