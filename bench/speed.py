"""Speed: decode, preprocess, embed (per runtime, threads, batch), search, build, HTTP.

Every number comes with a baseline measured in the same run on the same machine, so a
loaded or slow machine shifts both alike: the float PyTorch model and a perceptual hash for
the embedding, an exact numpy scan for the search, one cold worker for the build, and an
in-process ``search_image`` for the HTTP daemon.

Run alone: ``python -m bench.speed [--quick]`` (the HTTP and search parts reuse the 100k
synthetic bundle that ``bench.scale`` writes, and build it when it is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    ROOT,
    BenchConfig,
    TorchFloatModel,
    git_commit,
    load_results,
    log,
    model_run_ms,
    print_table,
    save_results,
    summarise_ms,
    time_calls,
    torch_available,
    view_of,
    wait_for_model,
)

HTTP_CONCURRENCY = (1, 4, 16)


def _reps(cfg: BenchConfig, n: int) -> int:
    return max(3, n // 3) if cfg.quick else n


# -- image and model ------------------------------------------------------------------------
def pipeline_stages(cfg: BenchConfig, jpeg: bytes) -> dict:
    """Decode and preprocess one 640x480 JPEG; pHash on the same image as a baseline."""
    import imagehash
    from PIL import Image

    from lensbox.device.embedding.model import preprocess
    from lensbox.device.imaging.decode import decode_image

    rgb = decode_image(jpeg)
    pil = Image.fromarray(rgb)
    return {
        "decode": time_calls(lambda: decode_image(jpeg), _reps(cfg, 40)),
        "preprocess": time_calls(lambda: preprocess(rgb), _reps(cfg, 60)),
        "phash": time_calls(lambda: imagehash.phash(pil), _reps(cfg, 40)),
        "size": list(rgb.shape[:2][::-1]),
    }


def model_runs(cfg: BenchConfig, rgb: np.ndarray) -> list[dict]:
    """One model run per runtime x threads, single image and batch of 8 (per image)."""
    from lensbox.device.embedding.model import TFLiteModel, preprocess
    from lensbox.device.embedding.runtime import available_runtimes

    x1 = preprocess(rgb)[None]
    x8 = np.repeat(x1, 8, axis=0)
    rows = []
    for runtime in available_runtimes():
        for threads in (1, 2):
            model = TFLiteModel(wait_for_model(), threads, runtime)
            single = time_calls(lambda m=model: m.run(x1), _reps(cfg, 30))
            # A slow runtime gets fewer repetitions; its number is still a median.
            n8 = 3 if single["median_ms"] > 40 else _reps(cfg, 8)
            batch = time_calls(lambda m=model: m.run(x8), n8, warmup=1)
            rows.append(
                {
                    "system": f"lensbox int8, {runtime}",
                    "threads": threads,
                    "single_ms": single["median_ms"],
                    "batch8_per_image_ms": batch["median_ms"] / 8,
                    "n": single["n"],
                }
            )
            log(f"{runtime} x{threads}: {single['median_ms']:.1f} ms/image")
    if torch_available():
        for threads in (1, 2):
            model = TorchFloatModel(threads)
            single = time_calls(lambda m=model: m.run(x1), _reps(cfg, 15))
            batch = time_calls(lambda m=model: m.run(x8), _reps(cfg, 4), warmup=1)
            rows.append(
                {
                    "system": "PyTorch float32 (baseline)",
                    "threads": threads,
                    "single_ms": single["median_ms"],
                    "batch8_per_image_ms": batch["median_ms"] / 8,
                    "n": single["n"],
                }
            )
    return rows


def query_embed(cfg: BenchConfig, rgb: np.ndarray, bundle: Path) -> dict:
    """What one query costs through the engine: default views (full + center + subject; the
    cascade's first stage off, so that every query embeds all three)."""
    from lensbox.device.search.engine import SearchSettings, open_engine

    out = {}
    for threads in (1, 2):
        engine = open_engine(str(bundle), SearchSettings(full_first=False), threads=threads)
        out[threads] = time_calls(lambda e=engine: e.embed_query(rgb), _reps(cfg, 20))
    return out


# -- one query's embedding, stage by stage, before and after (issue 13) ----------------------
QUERY_SIZES = ((640, 480), (3000, 4000))
QUERY_VIEWS_3 = ("full", "center", "subject")
WHOLE_1X = "whole query, long side 1x max_side (not the default)"


def _query_jpeg(cfg: BenchConfig, photo: Path, size: tuple[int, int]) -> bytes:
    """``photo`` as a JPEG of ``size``: the photo itself at its own size, else upscaled (a
    phone's 12-megapixel shot of the same scene), with mild noise so it compresses like one."""
    from PIL import Image

    data = photo.read_bytes()
    with Image.open(photo) as img:
        if img.size == size:
            return data
        rgb = img.convert("RGB")
    if (rgb.width > rgb.height) != (size[0] > size[1]):
        rgb = rgb.transpose(Image.Transpose.ROTATE_90)
    path = cfg.work / f"query-{photo.stem}-{size[0]}x{size[1]}.jpg"
    if not path.is_file():
        big = np.asarray(rgb.resize(size, Image.Resampling.LANCZOS), dtype=np.int16)
        noise = np.random.default_rng(cfg.seed).integers(-6, 7, big.shape, dtype=np.int16)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8))
        out.save(path, quality=90)
    return path.read_bytes()


def _interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict:
    """Median ms of each function, timed in turn within each round: on a machine shared
    with other jobs, load that comes and goes hits every variant alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: summarise_ms(v) for k, v in samples.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _sample_bundle(cfg: BenchConfig) -> Path:
    """The bundled sample catalog with local features: what embed_query needs to run ORB."""
    from lensbox.index_builder.build import BuildSettings, build_bundle

    out = cfg.work / "speed-sample.lbx"
    if not (out / "manifest.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        build_bundle(
            ROOT / "examples" / "sample-catalog",
            out,
            BuildSettings(cache_dir=None, workers=1),
            progress=False,
        )
    return out


def view_batching(cfg: BenchConfig) -> list[dict]:
    """A query's three model runs per runtime and thread count: one interpreter resized
    between the full view (batch 1) and the two crops (batch 2), as before issue 13; an
    interpreter kept allocated for each batch size; three runs of one view."""
    from lensbox.device.embedding.model import INPUT_SIZE, TFLiteModel
    from lensbox.device.embedding.runtime import available_runtimes

    rng = np.random.default_rng(cfg.seed)
    x1 = rng.integers(0, 256, (1, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    x2 = rng.integers(0, 256, (2, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    rows = []
    for runtime in available_runtimes():
        for threads in (1, 2):
            resized = TFLiteModel(wait_for_model(), threads, runtime, pin_batches=1)
            single = TFLiteModel(wait_for_model(), threads, runtime, pin_batches=1)
            pinned = TFLiteModel(wait_for_model(), threads, runtime, pin_batches=2)
            pinned.run_pixels(x1)
            before = _rss_mb()
            pinned.run_pixels(x2)  # allocates the batch-2 interpreter
            extra_mb = _rss_mb() - before
            slow = "tflite" in runtime
            times = _interleaved(
                {
                    "one view": lambda m=single: m.run_pixels(x1),
                    "resize 1 -> 2 (before)": lambda m=resized: (
                        m.run_pixels(x1),
                        m.run_pixels(x2),
                    ),
                    "pinned 1 + 2": lambda m=pinned: (m.run_pixels(x1), m.run_pixels(x2)),
                    "3 x one view": lambda m=single: [m.run_pixels(x1) for _ in range(3)],
                },
                rounds=(3 if cfg.quick else 6) if slow else (12 if cfg.quick else 40),
            )
            one = times["one view"]["median_ms"]
            for name, t in times.items():
                rows.append(
                    {
                        "runtime": runtime,
                        "threads": threads,
                        "strategy": name,
                        "median_ms": t["median_ms"],
                        "x_one_view": t["median_ms"] / one,
                        "n": t["n"],
                    }
                )
            rows[-2]["pinned_extra_mb"] = extra_mb  # the "pinned 1 + 2" row
            log(
                f"view batching {runtime} x{threads}: "
                + ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in times.items())
            )
    return rows


def query_stages(cfg: BenchConfig, photo: Path) -> dict:
    """Where one query's embedding time goes, before and after issue 13, in one run.

    Before: the full-size decode, a float preprocess per view quantized in the model call,
    one interpreter resized between the full view and the crops. After: the reduced-scale
    decode (``decode_reduced``), one resize per view and a table look-up, the interpreter
    pinned per batch size (``TFLiteModel.pin_batches``). Every stage and both paths are
    timed in turn in each round, with a one-view model run (ai-edge-litert, 1 thread) as
    the unit, since the machine is shared.
    """
    from lensbox.device.embedding.embedder import Embedder
    from lensbox.device.embedding.model import TFLiteModel, preprocess, resize_input
    from lensbox.device.imaging.decode import decode_image
    from lensbox.device.search.engine import SearchSettings, open_engine

    class FloatPreprocessEmbedder(Embedder):
        """The embedder as it was before: a float preprocess per view, quantized later."""

        def _run(self, images: list[np.ndarray]):
            batch = np.stack([preprocess(img, self.model.input_size) for img in images])
            return self.model.run(batch)

    runtime = "ai-edge-litert"
    path = str(wait_for_model())
    old_model = TFLiteModel(path, 1, runtime, pin_batches=1)
    new_model = TFLiteModel(path, 1, runtime)  # the default, as the daemon loads it
    ctx = {
        "unit": TFLiteModel(path, 1, runtime, pin_batches=1),
        "old_model": old_model,
        "new_model": new_model,
        "old_emb": FloatPreprocessEmbedder(old_model),
        "new_emb": Embedder(new_model),
        "engine": open_engine(
            str(_sample_bundle(cfg)), SearchSettings(full_first=False), threads=1, runtime=runtime
        ),
        "x1": resize_input(decode_image(photo.read_bytes()))[None],
    }
    rounds = 8 if cfg.quick else 30
    out: dict[str, Any] = {
        "runtime": runtime,
        "threads": 1,
        "rounds": rounds,
        "pin_batches": new_model.pin_batches,
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "load_before": os.getloadavg()[0],
        "sizes": {},
    }
    for size in QUERY_SIZES:
        res = _query_size_stages(ctx, _query_jpeg(cfg, photo, size), rounds)
        out["sizes"][f"{size[0]}x{size[1]}"] = res
        whole = res["stages"]["whole query: decode + embed_query"]
        log(
            f"query {size[0]}x{size[1]}: whole query {whole['before']:.1f} -> "
            f"{whole['after']:.1f} ms (model run {res['model_ms']:.1f} ms)"
        )
    out["model_ms"] = float(np.median([r["model_ms"] for r in out["sizes"].values()]))
    out["load_after"] = os.getloadavg()[0]
    return out


def _query_size_stages(ctx: dict, jpeg: bytes, rounds: int) -> dict:
    from lensbox.device.embedding.descriptor import pool
    from lensbox.device.embedding.embedder import top_concepts
    from lensbox.device.embedding.model import lookup, preprocess, quantize_input, resize_input
    from lensbox.device.embedding.subject import subject_boxes
    from lensbox.device.embedding.views import crop_views
    from lensbox.device.features.local import LocalSettings, extract
    from lensbox.device.imaging.decode import decode_image, decode_reduced, probe_image
    from lensbox.device.imaging.frames import box_to_full, local_to_full

    old_model, new_model, new_emb = ctx["old_model"], ctx["new_model"], ctx["new_emb"]
    settings = LocalSettings()
    full = decode_image(jpeg)
    reduced = decode_reduced(jpeg)
    views = {}
    for name, rgb in (("before", full), ("after", reduced.rgb)):
        h, w = rgb.shape[:2]
        feats = new_model.run_pixels(resize_input(rgb)[None]).features
        views[name] = crop_views(rgb, QUERY_VIEWS_3, subject_boxes(feats[0], w, h)[0])
    pixels = np.stack([resize_input(v) for v in views["after"]])
    out3 = new_model.run_pixels(pixels)
    h0, w0 = full.shape[:2]
    h1, w1 = reduced.rgb.shape[:2]
    detail = old_model._input

    def post(width: int, height: int) -> Any:
        boxes = subject_boxes(out3.features[0], width, height)
        if (width, height) != reduced.size:
            boxes = [box_to_full(b, reduced.scale, reduced.size) for b in boxes]
        return pool(out3.features, "gem"), boxes, top_concepts(out3.logits[0], new_emb.labels)

    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "decode": (lambda: decode_image(jpeg), lambda: decode_reduced(jpeg)),
        "preprocess, 3 views": (
            lambda: quantize_input(np.stack([preprocess(v) for v in views["before"]]), detail),
            lambda: lookup(new_model._table, np.stack([resize_input(v) for v in views["after"]])),
        ),
        "model runs, 3 views": (
            lambda: (old_model.run_pixels(pixels[:1]), old_model.run_pixels(pixels[1:])),
            lambda: (new_model.run_pixels(pixels[:1]), new_model.run_pixels(pixels[1:])),
        ),
        "pooling, subject boxes, concepts": (lambda: post(w0, h0), lambda: post(w1, h1)),
        "local features (ORB)": (
            lambda: extract(full, settings, settings.query_features),
            lambda: local_to_full(
                extract(reduced.rgb, settings, settings.query_features),
                reduced.scale,
                reduced.size,
            ),
        ),
        "whole query: decode + embed_query": (
            lambda: ctx["engine"].embed_with(ctx["old_emb"], decode_image(jpeg)),
            lambda: _embed_reduced(ctx["engine"], new_emb, jpeg),
        ),
    }
    unit, x1 = ctx["unit"], ctx["x1"]
    fns: dict[str, Callable[[], Any]] = {
        "model run, one view": lambda: unit.run_pixels(x1),
        "header parse (probe)|both": lambda: probe_image(jpeg),  # the same code before and after
        # Not the default: the long side kept at 1x ORB's max_side instead of ORB_MARGIN x.
        f"{WHOLE_1X}|after": lambda: _embed_reduced(
            ctx["engine"], new_emb, jpeg, long_side=settings.max_side
        ),
    }
    for stage, (before, after) in pairs.items():
        fns[f"{stage}|before"] = before
        fns[f"{stage}|after"] = after
    times = _interleaved(fns, rounds=rounds)
    stages: dict[str, dict] = {}
    for key, t in times.items():
        if "|" in key:
            stage, which = key.split("|")
            for side in ("before", "after") if which == "both" else (which,):
                stages.setdefault(stage, {})[side] = t["median_ms"]
    return {
        "decoded_before": [w0, h0],
        "decoded_after": [w1, h1],
        "model_ms": times["model run, one view"]["median_ms"],
        "stages": stages,
    }


def _embed_reduced(engine: Any, embedder: Any, jpeg: bytes, long_side: int | None = None) -> Any:
    """The daemon's query path after issue 13: reduced decode, embed, coordinates mapped
    back to full-resolution pixels (SearchService's query_to_full). ``long_side``: other than
    the pipeline's default sides, to show what the margin over ORB's max_side costs."""
    from lensbox.device.imaging.decode import decode_reduced
    from lensbox.device.imaging.frames import query_to_full

    decoded = decode_reduced(jpeg, long_side=long_side)
    return query_to_full(engine.embed_with(embedder, decoded.rgb), decoded)


# -- search ----------------------------------------------------------------------------------
def search_speed(cfg: BenchConfig, bundle_path: Path, queries: np.ndarray) -> dict:
    """Annoy + re-rank against the exact brute-force scan, same bundle, same queries."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.live.catalog import LiveCatalog
    from lensbox.device.search.engine import SearchEngine, SearchSettings

    bundle = open_bundle(bundle_path)
    ann = SearchEngine(bundle, None, SearchSettings(exact_below=0))
    catalog = LiveCatalog(ann, None)  # the bundle as built: what a search goes through
    qs = list(queries[: 20 if cfg.quick else 60])
    it = iter(qs * 100)
    ann_ms = time_calls(lambda: catalog.search_vectors(next(it), top_k=10), len(qs) - 2)
    it = iter(qs * 100)
    exact_ms = time_calls(lambda: ann.rank(next(it), 10, exact=True), _reps(cfg, 10))
    # The engine keeps a float32 copy for the exact scan only while it fits exact_cache_mb;
    # the same scan with the copy forced shows what that limit costs at this size.
    float_mb = bundle.vectors.nbytes * 4 / 2**20
    cached = SearchEngine(bundle, None, SearchSettings(exact_cache_mb=int(float_mb) + 1))
    it = iter(qs * 100)
    cached_ms = time_calls(lambda: cached.rank(next(it), 10, exact=True), _reps(cfg, 10))
    defaults = SearchSettings()
    return {
        "items": bundle.item_count,
        "views_per_query": int(queries.shape[1]),
        "annoy": ann_ms,
        "exact": exact_ms,
        "exact_float_cached": cached_ms,
        "float_copy_mb": float_mb,
        "default_exact_cache_mb": defaults.exact_cache_mb,
        "default_exact_below": defaults.exact_below,
        "default_path": "exact scan"
        if len(bundle.vectors) < defaults.exact_below
        else "Annoy + re-rank",
    }


# -- build -----------------------------------------------------------------------------------
def build_speed(cfg: BenchConfig) -> list[dict]:
    """lensbox build on 200 UKBench photos: 1 vs 2 workers, cold vs warm embedding cache."""
    from lensbox.index_builder.build import BuildSettings, build_bundle

    photos = cfg.images()[: 80 if cfg.quick else 200]
    root = cfg.work / "speed-build"
    shutil.rmtree(root, ignore_errors=True)
    (root / "photos").mkdir(parents=True)
    for p in photos:
        os.symlink(p, root / "photos" / p.name)
    rows = []
    for workers in (1, 2):
        cache = root / f"cache-{workers}"
        for state in ("cold", "warm"):
            settings = BuildSettings(cache_dir=str(cache), workers=workers)
            t0 = time.perf_counter()
            report = build_bundle(
                root / "photos", root / f"out-{workers}-{state}.lbx", settings, progress=False
            )
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "workers": workers,
                    "cache": state,
                    "photos": report.photos,
                    "seconds": seconds,
                    "images_per_s": report.photos / seconds,
                }
            )
            log(f"build workers={workers} {state}: {report.photos / seconds:.1f} images/s")
    shutil.rmtree(root, ignore_errors=True)
    return rows


# -- HTTP ------------------------------------------------------------------------------------
@contextlib.contextmanager
def running_server(bundle: Path, env: dict[str, str], timeout_s: float = 180.0):
    """``lensbox serve BUNDLE --port 0`` as a child process; yields its base URL."""
    exe = Path(sys.executable).with_name("lensbox")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "lensbox.device.cli"]
    proc = subprocess.Popen(
        [*cmd, "serve", str(bundle), "--port", "0"],
        cwd=str(ROOT),
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + timeout_s
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"on (http://[\d.]+:\d+)", line)
            url = m.group(1) if m else None
        if url is None:
            err = proc.stderr.read() if proc.poll() is not None else ""
            raise RuntimeError(f"lensbox serve did not start: {err.strip()[-400:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(url: str, timeout_s: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url}/readyz never answered 200")


def _load(url: str, images: list[bytes], concurrency: int, total: int, max_seconds: float) -> dict:
    """``total`` multipart POST /v1/search from ``concurrency`` threads; bounded in time."""
    import requests

    latencies: list[float] = []
    by_image: list[tuple[int, float]] = []  # (which photo, ms): to split by cascade stage
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(total))
    stop_at = time.monotonic() + max_seconds

    def worker() -> None:
        session = requests.Session()
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                r = session.post(
                    f"{url}/v1/search",
                    files={"image": ("q.jpg", images[i % len(images)], "image/jpeg")},
                    data={"top_k": "10"},
                    timeout=60,
                )
                ok = r.status_code == 200
            except requests.RequestException as exc:
                ok, r = False, exc
            dt = (time.perf_counter() - t0) * 1e3
            with lock:
                if ok:
                    latencies.append(dt)
                    by_image.append((i % len(images), dt))
                else:
                    errors.append(str(getattr(r, "status_code", r)))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    stats = summarise_ms(latencies) if latencies else {}
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "error_sample": errors[:3],
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall if wall else 0.0,
        "by_image": by_image,
        **stats,
    }


# The daemon as configured by default, and with the cascade's first stage off (every query
# embeds three views first, as before it existed): the "before" of the same run. Then the
# other ways to spend 2 cores on the model (issue 13's threads question): single-thread
# interpreters (the default until the measurement below chose 2 x 2) and one 2-thread
# interpreter (a request at a time, each as fast as it gets).
HTTP_SETUPS = {
    "cascade": {},
    "three views first": {"LENSBOX__SEARCH__FULL_FIRST": "false"},
    "2 interpreters x 1 thread": {"LENSBOX__SERVER__INTERPRETER_THREADS": "1"},
    "1 interpreter x 2 threads": {"LENSBOX__SERVER__INTERPRETERS": "1"},
}


def _http_runs(cfg: BenchConfig, bundle: Path, images: list[bytes], extra: dict) -> list[dict]:
    # Rate limiting and the query-id cache would measure the limiter and a dictionary
    # lookup instead of the search: both off, and every request is a different photo anyway.
    env = {"LENSBOX__SERVER__RATE_LIMIT": "0", "LENSBOX__SERVER__QUERY_CACHE_SIZE": "0", **extra}
    runs = []
    with running_server(bundle, env) as url:
        _wait_ready(url)
        _load(url, images, 2, 6, 60)  # warm-up
        for c in HTTP_CONCURRENCY:
            total = (
                (12 if cfg.quick else 40) * max(1, c // 2) if c > 1 else (20 if cfg.quick else 60)
            )
            runs.append(_load(url, images, c, total, 45 if cfg.quick else 90))
            log(
                f"HTTP {extra or 'default'} c={c}: p50 {runs[-1].get('median_ms', 0):.0f} ms, "
                f"{runs[-1]['throughput_rps']:.1f} req/s"
            )
    return runs


def _by_stage(run: dict, settled: list[bool]) -> dict:
    """One run's latencies split by whether the cascade's first stage answered the photo."""
    out = {}
    for name, want in (("answers", True), ("further", False)):
        ms = [dt for i, dt in run["by_image"] if settled[i] == want]
        out[name] = summarise_ms(ms) if ms else {"n": 0}
    return out


def http_speed(cfg: BenchConfig, bundle: Path) -> dict:
    """End-to-end latency of the real daemon; skipped with a note when it cannot start."""
    from lensbox.device.imaging.decode import decode_image
    from lensbox.device.live.catalog import open_catalog
    from lensbox.device.search.engine import SearchSettings

    try:
        import requests  # noqa: F401
    except ImportError:
        return {"skipped": "requests is not installed (pip install -e '.[dev]')"}
    # Other views of the catalog's objects (real photos, none of them in the bundle).
    photos = [p for p in cfg.images() if view_of(p) != 0][:120]
    images = [p.read_bytes() for p in photos]
    catalog = open_catalog(str(bundle), threads=1)
    # Which photos the first stage answers (the same code and settings the daemon runs).
    settled = [catalog.embed_query(decode_image(b)).views == ("full",) for b in images]
    setups = {}
    # The unit is timed before each setup and after the last, and the median taken: the
    # machine's speed drifts within a run, and one timing could sit at either extreme.
    units = [model_run_ms()]
    try:
        for name, extra in HTTP_SETUPS.items():
            runs = _http_runs(cfg, bundle, images, extra)
            setups[name] = {"runs": runs, "stages": [_by_stage(r, settled) for r in runs]}
            units.append(model_run_ms())
    except (RuntimeError, OSError) as exc:
        return {"skipped": f"HTTP server not available: {exc}"}
    blobs = iter(images * 4)
    baseline = time_calls(
        lambda: catalog.search_image(decode_image(next(blobs)), top_k=10), _reps(cfg, 20)
    )
    path = (
        "exact scan"
        if len(catalog.bundle.vectors) < SearchSettings().exact_below
        else "Annoy + re-rank"
    )
    return {
        "runs": setups["cascade"]["runs"],
        "setups": setups,
        "settled_share": sum(settled) / len(settled),
        "model_run_ms": float(np.median(units)),
        "model_run_ms_samples": units,
        "baseline_in_process": baseline,
        "image_size": "640x480",
        "search_path": path,
        "server": "lensbox serve defaults (4 waitress threads, 2 interpreters x 2 threads); "
        "rate limit and query cache off",
        "bundle_items": _items(bundle),
    }


def _items(bundle: Path) -> int:
    import json

    return int(json.loads((bundle / "manifest.json").read_text())["counts"]["items"])


PARTS = ("pipeline", "model", "query", "search", "build", "http")


def run(cfg: BenchConfig, parts: tuple[str, ...] = PARTS) -> dict:
    from bench.scale import ensure_synthetic
    from lensbox.device.imaging.decode import decode_image

    wait_for_model()
    photo = next(p for p in cfg.images() if view_of(p) == 1)
    jpeg = photo.read_bytes()
    rgb = decode_image(jpeg)
    res: dict = {"image": photo.name}
    if "pipeline" in parts:
        res["stages"] = pipeline_stages(cfg, jpeg)
    if "model" in parts:
        res["model"] = model_runs(cfg, rgb)
    if "query" in parts:
        res["query_stages"] = query_stages(cfg, photo)
        res["view_batching"] = view_batching(cfg)
    if {"search", "http"} & set(parts) or "model" in parts:
        bundle, queries = ensure_synthetic(cfg, 100_000)
        if "model" in parts:
            res["query_embed"] = query_embed(cfg, rgb, bundle)
        if "search" in parts:
            res["search"] = search_speed(cfg, bundle, queries)
        if "http" in parts:
            res["http"] = http_speed(cfg, bundle)
    if "build" in parts:
        res["build"] = build_speed(cfg)
    print_summary(res)
    return res


def print_summary(res: dict) -> None:
    from bench.report import query_stage_numbers

    if "query_stages" in res:
        q = query_stage_numbers(res["query_stages"], res.get("view_batching"))
        print(f"\n## One query, before / after (model run {q['model_ms']:.1f} ms)\n{q['table']}")
        print(f"\nwhole query: {q['speedups']}; {q['decoded']}")
        if q["batching_table"]:
            print(f"\n## A query's three model runs\n{q['batching_table']}", flush=True)
    if not {"model", "search", "build", "http"} <= set(res):
        return  # a run of some parts prints the query tables only
    base = next(
        (r for r in res["model"] if r["system"].startswith("PyTorch") and r["threads"] == 1), None
    )
    print_table(
        "Model run (224x224, one view)",
        ["system", "threads", "ms/image", "batch 8 ms/image", "x faster than float"],
        [
            [
                r["system"],
                r["threads"],
                r["single_ms"],
                r["batch8_per_image_ms"],
                base["single_ms"] / r["single_ms"] if base else float("nan"),
            ]
            for r in res["model"]
        ],
    )
    s = res["search"]
    print_table(
        f"Search, {s['items']} items",
        ["method", "median ms", "x exact"],
        [
            [
                "Annoy + re-rank",
                s["annoy"]["median_ms"],
                s["exact"]["median_ms"] / s["annoy"]["median_ms"],
            ],
            [
                "exact, float32 copy",
                s["exact_float_cached"]["median_ms"],
                s["exact"]["median_ms"] / s["exact_float_cached"]["median_ms"],
            ],
            ["exact numpy scan", s["exact"]["median_ms"], 1.0],
        ],
    )
    b0 = res["build"][0]["images_per_s"]
    print_table(
        "Build",
        ["workers", "cache", "images/s", "x 1 worker cold"],
        [
            [r["workers"], r["cache"], r["images_per_s"], r["images_per_s"] / b0]
            for r in res["build"]
        ],
    )
    http = res["http"]
    if "runs" in http:
        base_ms = http["baseline_in_process"]["median_ms"]
        print_table(
            "HTTP POST /v1/search",
            ["concurrency", "p50 ms", "p99 ms", "req/s", "p50 / in-process"],
            [
                [
                    r["concurrency"],
                    r.get("median_ms"),
                    r.get("p99_ms"),
                    r["throughput_rps"],
                    r.get("median_ms", 0) / base_ms,
                ]
                for r in http["runs"]
            ],
        )
    else:
        print(f"\nHTTP: {http.get('skipped')}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a few minutes)")
    ap.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"parts to run, comma-separated, of {','.join(PARTS)}; a run of some parts "
        "keeps the other parts' saved results",
    )
    ap.add_argument("--work", type=Path, default=BenchConfig().work, help="scratch directory")
    args = ap.parse_args(argv)
    parts = tuple(p for p in args.only.split(",") if p)
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    cfg = replace(BenchConfig(), quick=args.quick, work=args.work)
    res = run(cfg, parts)
    if set(parts) != set(PARTS):
        res = {**(load_results("speed") or {}), **res}
    save_results("speed", res)


if __name__ == "__main__":
    main()
