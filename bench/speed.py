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
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import (
    ROOT,
    BenchConfig,
    TorchFloatModel,
    log,
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
    """What one query costs through the engine: default views (full + center + subject)."""
    from lensbox.device.search.engine import open_engine

    out = {}
    for threads in (1, 2):
        engine = open_engine(str(bundle), threads=threads)
        out[threads] = time_calls(lambda e=engine: e.embed_query(rgb), _reps(cfg, 20))
    return out


# -- search ----------------------------------------------------------------------------------
def search_speed(cfg: BenchConfig, bundle_path: Path, queries: np.ndarray) -> dict:
    """Annoy + re-rank against the exact brute-force scan, same bundle, same queries."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.search.engine import SearchEngine, SearchSettings

    bundle = open_bundle(bundle_path)
    ann = SearchEngine(bundle, None, SearchSettings(exact_below=0))
    qs = list(queries[: 20 if cfg.quick else 60])
    it = iter(qs * 100)
    ann_ms = time_calls(lambda: ann.search_vectors(next(it), top_k=10), len(qs) - 2)
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
        **stats,
    }


def http_speed(cfg: BenchConfig, bundle: Path) -> dict:
    """End-to-end latency of the real daemon; skipped with a note when it cannot start."""
    from lensbox.device.imaging.decode import decode_image
    from lensbox.device.search.engine import open_engine

    try:
        import requests  # noqa: F401
    except ImportError:
        return {"skipped": "requests is not installed (pip install -e '.[dev]')"}
    photos = [p for p in cfg.images() if view_of(p) != 0][:120]
    images = [p.read_bytes() for p in photos]
    # Rate limiting and the query-id cache would measure the limiter and a dictionary
    # lookup instead of the search: both off, and every request is a different photo anyway.
    env = {"LENSBOX__SERVER__RATE_LIMIT": "0", "LENSBOX__SERVER__QUERY_CACHE_SIZE": "0"}
    try:
        with running_server(bundle, env) as url:
            _wait_ready(url)
            _load(url, images, 2, 6, 60)  # warm-up
            runs = []
            for c in HTTP_CONCURRENCY:
                total = (
                    (12 if cfg.quick else 40) * max(1, c // 2)
                    if c > 1
                    else (15 if cfg.quick else 40)
                )
                runs.append(_load(url, images, c, total, 45 if cfg.quick else 90))
                log(
                    f"HTTP c={c}: p50 {runs[-1].get('median_ms', 0):.0f} ms, "
                    f"{runs[-1]['throughput_rps']:.1f} req/s"
                )
    except (RuntimeError, OSError) as exc:
        return {"skipped": f"HTTP server not available: {exc}"}
    engine = open_engine(str(bundle), threads=1)
    blobs = iter(images * 4)
    baseline = time_calls(
        lambda: engine.search_image(decode_image(next(blobs)), top_k=10), _reps(cfg, 20)
    )
    from lensbox.device.search.engine import SearchSettings

    path = (
        "exact scan"
        if len(engine.bundle.vectors) < SearchSettings().exact_below
        else "Annoy + re-rank"
    )
    return {
        "runs": runs,
        "baseline_in_process": baseline,
        "image_size": "640x480",
        "search_path": path,
        "server": "lensbox serve defaults (4 waitress threads, 2 interpreters x 1 thread); "
        "rate limit and query cache off",
        "bundle_items": _items(bundle),
    }


def _items(bundle: Path) -> int:
    import json

    return int(json.loads((bundle / "manifest.json").read_text())["counts"]["items"])


def run(cfg: BenchConfig) -> dict:
    from bench.scale import ensure_synthetic
    from lensbox.device.imaging.decode import decode_image

    wait_for_model()
    photo = next(p for p in cfg.images() if view_of(p) == 1)
    jpeg = photo.read_bytes()
    rgb = decode_image(jpeg)
    res: dict = {"image": photo.name}
    res["stages"] = pipeline_stages(cfg, jpeg)
    res["model"] = model_runs(cfg, rgb)
    bundle, queries = ensure_synthetic(cfg, 100_000)
    res["query_embed"] = query_embed(cfg, rgb, bundle)
    res["search"] = search_speed(cfg, bundle, queries)
    res["build"] = build_speed(cfg)
    res["http"] = http_speed(cfg, bundle)
    print_summary(res)
    return res


def print_summary(res: dict) -> None:
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
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cfg = replace(BenchConfig(), quick=args.quick)
    save_results("speed", run(cfg))


if __name__ == "__main__":
    main()
