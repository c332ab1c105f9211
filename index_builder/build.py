"""`lensbox build`: catalog -> embeddings (cached, in parallel) -> PCA -> int8 -> bundle."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lensbox.device import __version__
from lensbox.device.bundle.atomic import UnsafeTargetError, check_replaceable
from lensbox.device.bundle.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_SPACE_REDUCED,
    MANIFEST,
)
from lensbox.device.bundle.thumbnails import make_thumbnail
from lensbox.device.embedding.descriptor import (
    GEM_P,
    Projection,
    choose_int8_scale,
    quantize_int8,
)
from lensbox.device.embedding.embedder import describe
from lensbox.device.embedding.model import INPUT_SIZE, PREPROCESSING, file_sha256
from lensbox.device.embedding.views import validate_views
from lensbox.device.features.local import LocalFeatures, LocalSettings
from lensbox.device.search.engine import index_trees
from lensbox.index_builder import whitening, workers
from lensbox.index_builder.cache import (
    CachedEmbedding,
    EmbeddingCache,
    as_stored,
    default_cache_dir,
)
from lensbox.index_builder.calibrate import calibrate
from lensbox.index_builder.catalog import (
    CatalogError,
    CatalogItem,
    assign_categories,
    extra_columns,
    read_catalog,
)
from lensbox.index_builder.writer import BundleContent, write_bundle


@dataclass(frozen=True)
class BuildSettings:
    """Everything that shapes a bundle; recorded in its manifest."""

    model_path: str | None = None  # None: the model shipped with lensbox
    dims: int = 256
    pooling: str = "gem"
    whiten: bool = True
    catalog_views: tuple[str, ...] = ("full",)
    trees: int | None = None  # None: by catalog size (engine.index_trees)
    # Dimensions of the space the Annoy index is built in: the top PCA directions of the
    # un-whitened descriptors (lensbox.device.bundle.annspace; docs/benchmarks.md section 4).
    index_dims: int = 48
    workers: int = 0  # 0: one per CPU core
    threads_per_worker: int = 1
    runtime: str = "auto"
    cache_dir: str | None = field(default_factory=lambda: str(default_cache_dir()))
    # Fewest vectors to learn a projection from; below it the raw GeM vector is used. With
    # fewer vectors than ``dims`` the projection keeps one less than the vector count
    # (learned whitening) or 2/3 of it (PCA-whitening, which the catalog alone estimates).
    min_photos_for_pca: int = 64
    # One small JPEG per item in the bundle (thumbs.sqlite, ~5 KB each) to show hits.
    thumbnails: bool = True
    # ORB keypoints kept per catalog photo for verification and the visual-word channel
    # (40 bytes each; 0 leaves local features out and search uses the global vector only).
    local_features: int = 1000
    local_max_side: int = 640
    # Measure the verdict thresholds on camera views of the catalog (index_builder/calibrate).
    calibrate: bool = True
    # Learn the whitening from this many camera views of each of up to ``whiten_photos``
    # catalog photos (index_builder/whitening.py); 0: PCA-whitening of the catalog alone.
    whiten_views: int = 12
    whiten_photos: int = 500

    def local(self) -> LocalSettings | None:
        if self.local_features <= 0:
            return None
        return LocalSettings(max_side=self.local_max_side, catalog_features=self.local_features)

    def whitening(self) -> whitening.WhiteningSettings | None:
        if not self.whiten or self.whiten_views <= 0 or self.whiten_photos <= 0:
            return None
        return whitening.WhiteningSettings(views=self.whiten_views, photos=self.whiten_photos)

    def resolved_model(self) -> Path:
        if self.model_path:
            return Path(self.model_path)
        from lensbox.models import MODEL_PATH

        return MODEL_PATH


@dataclass
class BuildReport:
    items: int = 0
    photos: int = 0
    vectors: int = 0
    skipped: list[dict] = field(default_factory=list)
    cached: int = 0
    embedded: int = 0
    seconds: float = 0.0
    projection: str = "none"
    # Catalog category names -> the integer ids the bundle gives them (manifest "categories").
    categories: dict[str, int] = field(default_factory=dict)
    # Manifest columns with no field of their own, kept as string attributes.
    extra_columns: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.photos / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.items} items ({self.photos} photos, {self.vectors} vectors), "
            f"{len(self.skipped)} skipped, {self.cached} from cache, {self.seconds:.1f} s, "
            f"{self.images_per_second:.1f} images/s"
        )


class BuildError(Exception):
    """The build as a whole failed (nothing was written)."""


def _embed_all(
    paths: list[str], settings: BuildSettings, model: Path, model_sha: str, progress: bool
) -> tuple[dict[str, dict], int]:
    """Embed every photo, from cache where possible; returns results by path, cache hits."""
    cache = EmbeddingCache(Path(settings.cache_dir) if settings.cache_dir else None)
    local = settings.local()
    results: dict[str, dict] = {}
    todo: list[str] = []
    keys: dict[str, tuple[str, str | None]] = {}
    contents: dict[str, str] = {}
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            todo.append(path)  # the worker reports the error with its reason
            continue
        content = contents[path] = workers.content_sha256(data)
        keys[path] = (
            cache.key(model_sha, settings.pooling, settings.catalog_views, content, local),
            cache.local_key(local, content) if local is not None else None,
        )
        hit = cache.get(keys[path][0])
        local_key = keys[path][1]
        local_hit = cache.get_local(local_key) if local_key else None
        if hit is None or (local is not None and local_hit is None):
            todo.append(path)
        else:
            results[path] = {"path": path, **asdict(hit), "local": local_hit}
    hits = len(results)
    bar = tqdm(
        total=len(paths),
        initial=hits,
        desc="embedding",
        unit="img",
        disable=not progress,
        file=sys.stderr,
    )
    try:
        outputs = _map_workers(workers.embed_file, todo, _worker_init(settings, model), settings)
        _collect(outputs, results, keys, cache, bar)
    finally:
        bar.close()
        cache.close()
    for path, content in contents.items():
        results[path]["content"] = content  # the learned whitening samples photos by it
    return results, hits


def _worker_init(settings: BuildSettings, model: Path) -> tuple:
    """Arguments of ``workers.init_worker``."""
    return (
        str(model),
        settings.threads_per_worker,
        settings.runtime,
        settings.pooling,
        settings.catalog_views,
        settings.local(),
    )


def _map_workers(
    fn: Callable[[Any], Any], jobs: list, init: tuple, settings: BuildSettings
) -> Iterator:
    """``fn`` over ``jobs`` in worker processes (``workers.init_worker(*init)`` in each), in
    order; a few jobs, or one worker, run in this process."""
    n_workers = settings.workers or os.cpu_count() or 1
    if n_workers == 1 or len(jobs) < 8:
        workers.init_worker(*init)
        yield from map(fn, jobs)
        return
    # An executor, not mp.Pool: a worker that dies (a runtime crashing in native code)
    # breaks the build with an error instead of being replaced forever (a hang).
    ctx = mp.get_context("spawn" if sys.platform == "darwin" else "fork")
    try:
        with ProcessPoolExecutor(
            n_workers, mp_context=ctx, initializer=workers.init_worker, initargs=init
        ) as pool:
            yield from pool.map(fn, jobs, chunksize=4)
    except BrokenProcessPool as exc:
        raise BuildError(
            "an embedding worker process died (a crash in the TFLite runtime?); "
            "try `--workers 1` to see the error, or `--runtime tflite-runtime`"
        ) from exc


def _collect(outputs, results: dict, keys: dict, cache: EmbeddingCache, bar: tqdm) -> None:
    for n, out in enumerate(outputs):
        if "pooled" in out:
            out["pooled"] = as_stored(out["pooled"])
        results[out["path"]] = out
        if "error" not in out and out["path"] in keys:
            key, local_key = keys[out["path"]]
            cache.put(
                key,
                CachedEmbedding(
                    out["pooled"], out["concepts"], out["width"], out["height"], out["format"]
                ),
            )
            if local_key is not None and out.get("local") is not None:
                cache.put_local(local_key, out["local"])
        if n % 64 == 63:
            cache.commit()
        bar.update(1)


def _item_record(item: CatalogItem, first: dict) -> dict:
    return {
        "id": item.id,
        "source": str(item.paths[0]),
        "title": item.title,
        "page_url": item.page_url,
        "host": item.host,
        "category_id": item.category_id,
        "tags": item.tags,
        "int_attrs": item.int_attrs,
        "str_attrs": item.str_attrs,
        "product_id": item.product_id,
        "custom_content": item.custom_content,
        "adult": int(item.adult),
        "concepts": first["concepts"],
        "width": first["width"],
        "height": first["height"],
        "format": first["format"],
    }


def _thumbnail(entry: tuple[str, str]) -> tuple[str, str, bytes] | None:
    item_id, path = entry
    try:
        data = Path(path).read_bytes()
        return item_id, workers.content_sha256(data), make_thumbnail(data)
    except (OSError, ValueError):
        return None  # the item is still indexed; it only has no picture to show


def _thumbnails(shown: list[tuple[str, str]], threads: int) -> list[tuple[str, str, bytes]]:
    """One small JPEG per item (its first photo), for showing hits on a device that does
    not have the photos. Pillow releases the GIL while decoding and encoding."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return [t for t in pool.map(_thumbnail, shown, chunksize=16) if t is not None]


def _fit_projection(
    pooled: np.ndarray,
    photos: list[dict],
    settings: BuildSettings,
    model: Path,
    model_sha: str,
    progress: bool,
) -> Projection | None:
    """Learn the projection: whitening learned from camera views of ``photos`` (the embedded
    catalog photos), or PCA-whitening of the catalog alone (``whiten_views`` 0, or views
    that could not be made).

    Whitening learned from just 250 catalog photos still adds about 4 points of recall@1 on
    kiosk-like queries (7 with the full view alone; docs/benchmarks.md), so small catalogs
    get a smaller projection rather than none; only tiny ones (< ``min_photos_for_pca``) go
    without.
    """
    if settings.dims <= 0 or len(pooled) < max(2, settings.min_photos_for_pca):
        return None
    learning = settings.whitening()
    if learning is not None and all("content" in p for p in photos):
        chosen = [photos[i] for i in whitening.sample([p["content"] for p in photos], learning)]
        contents = [p["content"] for p in chosen]
        jobs = whitening.view_jobs([p["path"] for p in chosen], contents, learning)
        cache = EmbeddingCache(Path(settings.cache_dir) if settings.cache_dir else None)
        try:
            learned = whitening.learn(
                pooled,
                np.stack([p["pooled"][0] for p in chosen]),  # the full view: always the first
                _camera_views(jobs, contents, cache, settings, model, model_sha),
                # The views, not the catalog, estimate what to shrink: every direction the
                # catalog spans is kept (UKBench kiosk +0.6 points over 2/3 of them, global).
                min(settings.dims, len(pooled) - 1),
                learning,
                progress,
            )
        finally:
            cache.close()
        if learned is not None:
            return learned
    return Projection.fit(pooled, min(settings.dims, (2 * len(pooled)) // 3), settings.whiten)


def _camera_views(
    jobs: list[tuple],
    contents: list[str],
    cache: EmbeddingCache,
    settings: BuildSettings,
    model: Path,
    model_sha: str,
) -> Iterator[np.ndarray | None]:
    """Each job's embedded camera views, in order: from the cache, or rendered and embedded
    in the build's workers (as they are read, under the progress bar) and then cached.
    Rounded as stored either way, so a cold and a warm build learn the same projection."""
    local = settings.local()
    keys = [
        cache.views_key(cache.key(model_sha, settings.pooling, job[3], content, local), job[1:])
        for job, content in zip(jobs, contents, strict=True)
    ]
    found = [cache.get_views(key) for key in keys]
    missing = [job for job, hit in zip(jobs, found, strict=True) if hit is None]
    made = _map_workers(
        workers.embed_camera_views, missing, _worker_init(settings, model), settings
    )
    for n, (key, hit) in enumerate(zip(keys, found, strict=True)):
        if hit is not None:
            yield hit
            continue
        views = next(made)
        if views is not None:
            views = as_stored(views)
            cache.put_views(key, views)
        if n % 32 == 31:
            cache.commit()
        yield views


def _projection_name(projection: Projection | None, settings: BuildSettings) -> str:
    if projection is None:
        return "none"
    if settings.whiten and not projection.whiten:
        return "learned-whiten"
    return "pca-whiten" if projection.whiten else "pca"


def _check_output(output: Path, source: Path, paths: list[str]) -> None:
    """Refuse, before any work, an output that would replace the user's own files."""
    inputs = [source] if source.is_dir() else [source, *map(Path, paths)]
    try:
        check_replaceable(output, inputs)
    except UnsafeTargetError as exc:
        raise BuildError(str(exc)) from exc


def _previous_categories(output: Path) -> dict[str, int]:
    """The category table of the bundle being replaced (so rebuilds keep the numbers)."""
    try:
        table = json.loads((output / MANIFEST).read_text(encoding="utf-8")).get("categories")
    except (OSError, ValueError, AttributeError):
        return {}
    return table if isinstance(table, dict) else {}


def build_bundle(
    source: str | Path,
    output: str | Path,
    settings: BuildSettings | None = None,
    progress: bool = True,
    strict: bool = False,
) -> BuildReport:
    """Build ``output`` from ``source``; a corrupt photo is skipped and reported, not fatal
    (``strict``: any skipped photo fails the build and nothing is written)."""
    settings = settings or BuildSettings()
    validate_views(settings.catalog_views)
    if settings.trees is not None and settings.trees < 1:
        raise BuildError(f"--trees must be at least 1, got {settings.trees}")
    started = time.perf_counter()
    model = settings.resolved_model()
    if not model.is_file():
        raise BuildError(f"model file not found: {model}")
    try:
        catalog = read_catalog(source)
    except CatalogError as exc:
        raise BuildError(str(exc)) from exc
    paths = [str(p) for item in catalog for p in item.paths]
    _check_output(Path(output), Path(source), paths)
    categories = assign_categories(catalog, _previous_categories(Path(output)))
    model_sha = file_sha256(model)
    results, cached = _embed_all(paths, settings, model, model_sha, progress)
    report = BuildReport(
        cached=cached,
        embedded=len(paths) - cached,
        categories=categories,
        extra_columns=extra_columns(catalog),
    )
    items: list[dict] = []
    pooled: list[np.ndarray] = []
    owners: list[int] = []
    local_features: list[LocalFeatures] = []
    local_items: list[int] = []
    shown: list[tuple[str, str]] = []  # (item id, the photo its thumbnail shows)
    for item in catalog:
        good = [results[str(p)] for p in item.paths if "error" not in results[str(p)]]
        for p in item.paths:
            out = results[str(p)]
            if "error" in out:
                report.skipped.append(
                    {
                        "item": item.id,
                        "path": str(p),
                        "error": out["error"],
                        "code": out.get("code"),
                    }
                )
        if not good:
            continue
        row = len(items)
        items.append(_item_record(item, good[0]))
        shown.append((item.id, good[0]["path"]))
        for out in good:
            pooled.append(out["pooled"])
            owners += [row] * len(out["pooled"])
            report.photos += 1
            if out.get("local") is not None:
                local_features.append(out["local"])
                local_items.append(row)
    if not items:
        raise BuildError(
            f"{source}: none of the {len(paths)} photos could be read; see the errors above"
        )
    if strict and report.skipped:
        raise BuildError(
            f"--strict: {len(report.skipped)} photo(s) skipped, nothing written: "
            + "; ".join(s["error"] for s in report.skipped[:5])
            + (" ..." if len(report.skipped) > 5 else "")
        )
    all_pooled = np.concatenate(pooled).astype(np.float32)
    by_row = _photos_by_row(catalog, results)
    projection = _fit_projection(
        all_pooled, [out for _, out in by_row], settings, model, model_sha, progress
    )
    vectors = describe(all_pooled, projection)
    scale = choose_int8_scale(vectors)
    report.items, report.vectors = len(items), len(vectors)
    report.projection = _projection_name(projection, settings)
    report.seconds = time.perf_counter() - started
    manifest = _manifest(settings, model, model_sha, vectors.shape[1], scale, report, projection)
    content = BundleContent(
        manifest=manifest,
        items=items,
        vectors=quantize_int8(vectors, scale),
        vector_items=np.asarray(owners, np.int32),
        projection=projection,
        report={**asdict(report), "images_per_second": report.images_per_second},
        thumbnails=(
            _thumbnails(shown, settings.workers or os.cpu_count() or 1)
            if settings.thumbnails
            else None
        ),
        local=(
            (local_features, local_items, local)
            if (local := settings.local()) is not None and len(local_features) == report.photos
            else None
        ),
    )
    photos = [(row, str(out["path"])) for row, out in by_row]

    def finish(folder: Path) -> dict:
        return {"calibration": _calibrate(folder, photos, settings, model)}

    write_bundle(Path(output), content, finish if settings.calibrate else None)
    report.seconds = time.perf_counter() - started
    return report


def _photos_by_row(catalog: list[CatalogItem], results: dict) -> list[tuple[int, dict]]:
    """(item row, embed result) of every photo that made it into the bundle."""
    out, row = [], 0
    for item in catalog:
        good = [results[str(p)] for p in item.paths if "error" not in results[str(p)]]
        if good:
            out += [(row, g) for g in good]
            row += 1
    return out


def _calibrate(
    folder: Path, photos: list[tuple[int, str]], settings: BuildSettings, model: Path
) -> dict:
    """Verdict thresholds measured by searching the staged bundle (see calibrate.py)."""
    from lensbox.device.live.catalog import open_catalog

    catalog = open_catalog(str(folder), threads=1, runtime=settings.runtime, model_path=str(model))
    try:
        return calibrate(catalog, photos)
    finally:
        catalog.bundle.index.unload()


def _manifest(
    settings: BuildSettings,
    model: Path,
    model_sha: str,
    dims: int,
    scale: float,
    report: BuildReport,
    projection: Projection | None,
) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lensbox_version": __version__,
        "model": {"file": model.name, "sha256": model_sha, "input_size": INPUT_SIZE},
        "preprocessing": PREPROCESSING,
        "descriptor": {
            "pooling": settings.pooling,
            "gem_p": GEM_P if settings.pooling == "gem" else None,
            "projection": report.projection,
            "dims": dims,
            "int8_scale": scale,
            "catalog_views": list(settings.catalog_views),
        },
        "index": {
            "library": "annoy",
            "metric": "angular",
            "trees": settings.trees or index_trees(report.vectors),
            "space": INDEX_SPACE_REDUCED,
            "dims": min(settings.index_dims, dims),
        },
        "metric": "cosine similarity of L2-normalised descriptors, clipped to 0-1",
        "counts": {
            "items": report.items,
            "photos": report.photos,
            "vectors": report.vectors,
            "skipped": len(report.skipped),
        },
        "build": {k: v for k, v in asdict(settings).items() if k != "cache_dir"},
        # category name -> the integer category_id its items carry (Alibaba CategoryId)
        "categories": report.categories,
        "has_projection": projection is not None,
    }
