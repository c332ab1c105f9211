"""Embed photos in worker processes, each with its own interpreter.

Processes rather than threads: decoding and pooling hold the GIL, and one interpreter per
process lets each use a single XNNPACK thread without contention.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.embedding.embedder import Embedder
from lensbox.device.embedding.model import TFLiteModel
from lensbox.device.features.local import LocalSettings, extract
from lensbox.device.imaging.decode import ImageError, decode_reduced, load_reduced
from lensbox.device.imaging.frames import local_to_full, pipeline_sides
from lensbox.index_builder.calibrate import camera_view
from lensbox.index_builder.catalog import UNSUPPORTED_SUFFIXES

_EMBEDDER: Embedder | None = None
_VIEWS: tuple[str, ...] = ("full",)
_LOCAL: LocalSettings | None = None


def init_worker(
    model_path: str,
    threads: int,
    runtime: str,
    pooling: str,
    views: tuple,
    local: LocalSettings | None = None,
) -> None:
    global _EMBEDDER, _VIEWS, _LOCAL
    _EMBEDDER = Embedder(TFLiteModel(model_path, threads, runtime), pooling)
    _VIEWS = tuple(views)
    _LOCAL = local


def content_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def embed_file(path: str) -> dict[str, Any]:
    """Embed one photo; errors come back as data so one bad file never ends the build."""
    assert _EMBEDDER is not None, "init_worker was not called"
    try:
        data = Path(path).read_bytes()
        long_side, short_side = pipeline_sides(_LOCAL)
        decoded = decode_reduced(data, source=path, long_side=long_side, short_side=short_side)
        emb = _EMBEDDER.embed(decoded.rgb, _VIEWS)
        local = (
            local_to_full(
                extract(decoded.rgb, _LOCAL, _LOCAL.catalog_features), decoded.scale, decoded.size
            )
            if _LOCAL is not None
            else None
        )
    except ImageError as exc:
        if Path(path).suffix.lower() in UNSUPPORTED_SUFFIXES:
            kind = Path(path).suffix.lower().lstrip(".").upper()
            return {
                "path": path,
                "error": f"{path}: {kind} photos are not supported; convert them to JPEG "
                "(e.g. `heif-convert photo.heic photo.jpg`, or export as JPEG)",
                "code": "unsupported_format",
            }
        return {"path": path, "error": str(exc), "code": exc.code}
    except OSError as exc:
        return {"path": path, "error": f"{path}: cannot read ({exc.strerror or exc})", "code": "io"}
    except Exception as exc:
        return {"path": path, "error": f"{path}: {type(exc).__name__}: {exc}", "code": "error"}
    return {
        "path": path,
        "pooled": emb.pooled,
        "concepts": [asdict(c) for c in emb.concepts],
        "width": decoded.size[0],
        "height": decoded.size[1],
        "format": decoded.info.format,
        "local": local,
    }


def embed_camera_views(job: tuple[str, tuple[int, ...], int, tuple[str, ...]]) -> np.ndarray | None:
    """The pooled query views, (count, views, C), of ``count`` camera views of one catalog
    photo (the builder's learned whitening, index_builder/whitening.py); the photo is
    decoded as a catalog photo is. None when it cannot be read (it was reported already)."""
    assert _EMBEDDER is not None, "init_worker was not called"
    path, seed, count, views = job
    long_side, short_side = pipeline_sides(_LOCAL)
    try:
        rgb = load_reduced(path, long_side=long_side, short_side=short_side).rgb
    except (ImageError, OSError):
        return None
    shots = [camera_view(rgb, np.random.default_rng([*seed, n])) for n in range(count)]
    return np.stack([e.pooled for e in _EMBEDDER.embed_many(shots, views)])
