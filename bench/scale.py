"""Memory, size and search scaling from 1k to 1M items, with synthetic vectors drawn like real ones.

Real catalogs of 1M photos are not at hand, so the ANN part uses synthetic descriptors: a
Gaussian (mean + full covariance) fitted to real lensbox descriptors of the 1000 UKBench
photos (PCA-whitened 256-d, as a real bundle of that size stores them), sampled and
L2-normalised. The 250 real catalog photos (view 0 of each object) are kept in every bundle,
so real queries (the other views) still have their true match among the distractors.
Bundles are written with lensbox's own writer (index_builder/writer.py).

Run alone: ``python -m bench.scale [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.common import (
    ROOT,
    BenchConfig,
    group_of,
    log,
    print_table,
    save_results,
    view_of,
    wait_for_model,
)

SIZES_FULL = (1_000, 10_000, 100_000, 1_000_000)
SIZES_QUICK = (1_000, 10_000, 100_000)
TREES = (4, 8, 16, 32)
CANDIDATES = (25, 50, 100, 200)
SEARCH_K_X = (4, 16)  # search_k = trees x 100 x this, at 100 candidates


@dataclass
class RealData:
    """Real descriptors and queries in one bundle's descriptor space."""

    bundle: Path
    catalog: np.ndarray  # (250, D) float, view-0 photos, row i = group i
    corpus: np.ndarray  # (1000, D) float, every photo (fits the Gaussian)
    queries: np.ndarray  # (Q, V, D) float, other views, default query views
    query_groups: np.ndarray


def real_data(cfg: BenchConfig, n_queries: int) -> RealData:
    """Build the 1000-photo bundle (PCA-whitened 256) and embed real queries through the engine."""
    from bench.quality import build, open_engine
    from lensbox.device.imaging.decode import decode_image

    paths = cfg.images()
    bundle = build("all1000", paths, cfg)
    engine = open_engine(bundle, cfg)
    vecs = engine.bundle.vectors.astype(np.float32) / engine.bundle.int8_scale
    n = engine.bundle.item_count
    ids = [it["id"] for it in engine.bundle.items(list(range(n)))]
    by_id = dict(zip(ids, range(n)))
    catalog = np.stack([vecs[by_id[p.stem]] for p in paths if view_of(p) == 0])
    others = [p for p in paths if view_of(p) != 0]
    pick = others[:: max(1, len(others) // n_queries)][:n_queries]
    queries = np.stack([engine.embed_query(decode_image(p.read_bytes())).vectors for p in pick])
    return RealData(bundle, catalog, vecs, queries, np.array([group_of(p) for p in pick]))


def ensure_synthetic(cfg: BenchConfig, n: int) -> tuple[Path, np.ndarray]:
    """The ``n``-item synthetic bundle and real query vectors, written if missing or stale."""
    from lensbox.device.embedding.model import file_sha256

    out = cfg.work / "scale" / f"synthetic-{n}.lbx"
    qpath = cfg.work / "scale" / "queries.npy"
    sha = file_sha256(wait_for_model())
    manifest = out / "manifest.json"
    if (
        manifest.is_file()
        and qpath.is_file()
        and json.loads(manifest.read_text())["model"]["sha256"] == sha
    ):
        return out, np.load(qpath)
    real = real_data(cfg, 60 if cfg.quick else 150)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(qpath, real.queries)
    write_synthetic(real, n, fit_sampler(real.corpus, cfg.seed), out, 16)
    return out, real.queries


def fit_sampler(corpus: np.ndarray, seed: int):
    """Sampler of synthetic unit vectors: Gaussian with the real mean and covariance."""
    mean = corpus.mean(axis=0)
    cov = np.cov(corpus.T) + np.eye(corpus.shape[1]) * 1e-6
    chol = np.linalg.cholesky(cov).astype(np.float32)
    rng = np.random.default_rng(seed)

    def sample(n: int) -> np.ndarray:
        out = np.empty((n, corpus.shape[1]), np.float32)
        for s in range(0, n, 100_000):
            k = min(100_000, n - s)
            x = rng.standard_normal((k, corpus.shape[1]), dtype=np.float32) @ chol.T + mean
            out[s : s + k] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return sample


def write_synthetic(real: RealData, n: int, sample, out: Path, trees: int) -> dict:
    """A bundle of ``n`` items: the 250 real catalog photos + synthetic ones, via write_bundle."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.embedding.descriptor import quantize_int8
    from lensbox.index_builder.writer import BundleContent, write_bundle

    src = open_bundle(real.bundle)
    synth = sample(n - len(real.catalog))
    vectors = np.concatenate([real.catalog, synth])
    # adult is NOT NULL and the writer passes every column explicitly, so it must be given.
    items = [
        {"id": f"ukbench{4 * g:05d}", "title": f"object {g}", "adult": 0}
        for g in range(len(real.catalog))
    ]
    items += [{"id": f"syn{i:07d}", "adult": 0} for i in range(len(synth))]
    manifest = json.loads(json.dumps(src.manifest))
    manifest["counts"] = {"items": n, "photos": n, "vectors": n, "skipped": 0}
    manifest["index"]["trees"] = trees
    manifest["synthetic"] = "250 real UKBench items + Gaussian-sampled descriptors (bench/scale.py)"
    content = BundleContent(
        manifest,
        items,
        quantize_int8(vectors, src.int8_scale),
        np.arange(n, dtype=np.int32),
        src.projection,
        {"synthetic": True},
    )
    t0 = time.perf_counter()
    write_bundle(out, content)
    seconds = time.perf_counter() - t0
    files = {f.name: f.stat().st_size for f in out.iterdir() if f.is_file()}
    return {
        "items": n,
        "trees": trees,
        "write_seconds": seconds,
        "files": files,
        "bytes": sum(files.values()),
        "bytes_per_1k": sum(files.values()) / n * 1000,
    }


def exact_top(bundle, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-k item rows per query (items = vectors here), blockwise to bound memory."""
    q = queries.reshape(-1, queries.shape[-1]).T  # (D, Q*V)
    best = np.full((len(queries), 0), 0, np.int64)
    scores_all = np.full((len(queries), 0), -2.0, np.float32)
    for s in range(0, len(bundle.vectors), 131072):
        block = bundle.vectors[s : s + 131072].astype(np.float32) / bundle.int8_scale
        sc = (block @ q).reshape(len(block), len(queries), -1).max(axis=2).T  # (Q, B)
        top = np.argpartition(-sc, min(k, sc.shape[1] - 1), axis=1)[:, :k]
        scores_all = np.concatenate([scores_all, np.take_along_axis(sc, top, 1)], axis=1)
        best = np.concatenate([best, top + s], axis=1)
        keep = np.argsort(-scores_all, axis=1)[:, :k]
        scores_all = np.take_along_axis(scores_all, keep, 1)
        best = np.take_along_axis(best, keep, 1)
    return best


def search_curve(
    engine, queries: np.ndarray, truth: np.ndarray, targets: np.ndarray, n_exact_timed: int
) -> dict:
    """ANN recall@10 vs exact, recall@1 of the true item, and latency (ANN and exact)."""
    recalls, hits1, times = [], [], []
    for q, want, target in zip(queries, truth, targets):
        t0 = time.perf_counter()
        rows, _ = engine.rank(q, 10, exact=False)
        times.append((time.perf_counter() - t0) * 1e3)
        recalls.append(len(set(rows[:10].tolist()) & set(want.tolist())) / 10)
        hits1.append(bool(len(rows) and rows[0] == target))
    exact_ms = []
    for q in queries[:n_exact_timed]:
        t0 = time.perf_counter()
        engine.rank(q, 10, exact=True)
        exact_ms.append((time.perf_counter() - t0) * 1e3)
    return {
        "recall@10_vs_exact": float(np.mean(recalls)),
        "ann_recall@1": float(np.mean(hits1)),
        "exact_recall@1": float(np.mean(truth[:, 0] == targets)),
        "ann_ms_median": float(np.median(times)),
        "ann_ms_p99": float(np.percentile(times, 99)),
        "exact_ms_median": float(np.median(exact_ms)) if exact_ms else None,
    }


RSS_SCRIPT = r"""
import json, sys, time
from pathlib import Path

def status():
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out

import numpy as np
from lensbox.device.imaging.decode import decode_image
from lensbox.device.search.engine import open_engine
before = status()
engine = open_engine(sys.argv[1], threads=2)
opened = status()
rgb = decode_image(Path(sys.argv[2]).read_bytes())
for _ in range(int(sys.argv[3])):
    engine.search_image(rgb, top_k=10)
path = "exact" if len(engine.bundle.vectors) < engine.settings.exact_below else "annoy"
print(json.dumps({"imports": before, "opened": opened, "searched": status(), "path": path}))
"""


def daemon_rss(bundle: Path, image: Path, searches: int = 20) -> dict:
    """RSS of a fresh process that opens the bundle with the real model and searches."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(bundle), str(image), str(searches)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(ROOT),
        check=False,
    )
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def index_space(
    real: RealData, bundle_path: Path, targets: np.ndarray, truth: np.ndarray
) -> list[dict]:
    """Annoy built on whitened vectors vs on the same vectors un-whitened (what lensbox builds).

    Whitening makes descriptors nearly isotropic, the worst case for random-hyperplane
    trees. Multiplying each PCA dimension back by sqrt(its variance) restores the decaying
    spectrum; the shortlist then comes from that space and the re-rank stays in the whitened
    one. This comparison is why bundles record ``index.space = pca``: docs/benchmarks.md.
    """
    from annoy import AnnoyIndex

    from lensbox.device.bundle.reader import open_bundle

    bundle = open_bundle(bundle_path)
    vecs = bundle.vectors.astype(np.float32) / bundle.int8_scale
    scale = 1.0 / np.linalg.norm(bundle.projection.components, axis=0)

    def unwhiten(x: np.ndarray) -> np.ndarray:
        y = x * scale
        return y / np.linalg.norm(y, axis=-1, keepdims=True)

    rows = []
    spaces = (
        ("whitened (format before index.space)", vecs, real.queries),
        ("un-whitened PCA (lensbox)", unwhiten(vecs), unwhiten(real.queries)),
    )
    for space, data, queries in spaces:
        index = AnnoyIndex(vecs.shape[1], "angular")
        index.set_seed(42)
        for i, v in enumerate(data):
            index.add_item(i, v.tolist())
        index.build(16, n_jobs=1)
        for cand in (100, 200):
            hits1, recall, times = [], [], []
            for q, qi, want, target in zip(real.queries, queries, truth, targets):
                t0 = time.perf_counter()
                ids: set[int] = set()
                for v in qi:
                    ids.update(index.get_nns_by_vector(v.tolist(), cand))
                c = np.fromiter(ids, np.int64, len(ids))
                top = c[np.argsort(-(vecs[c] @ q.T).max(axis=1))][:10]
                times.append((time.perf_counter() - t0) * 1e3)
                hits1.append(bool(top[0] == target))
                recall.append(len(set(top.tolist()) & set(want.tolist())) / 10)
            rows.append(
                {
                    "index space": space,
                    "trees": 16,
                    "candidates": cand,
                    "ann_recall@1": float(np.mean(hits1)),
                    "recall@10_vs_exact": float(np.mean(recall)),
                    "ann_ms_median": float(np.median(times)),
                }
            )
        index.unload()
    return rows


def tree_sweep(
    real: RealData, bundle_path: Path, targets: np.ndarray, truth: np.ndarray, cfg: BenchConfig
) -> list[dict]:
    """recall@10 and latency for Annoy trees x candidates on one bundle size."""
    from annoy import AnnoyIndex

    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.search.engine import SearchEngine, SearchSettings

    bundle = open_bundle(bundle_path)
    vecs = bundle.vectors.astype(np.float32) / bundle.int8_scale
    rows = []
    for trees in TREES:
        index = AnnoyIndex(vecs.shape[1], "angular")
        index.set_seed(42)
        for i, v in enumerate(vecs):
            index.add_item(i, v.tolist())
        t0 = time.perf_counter()
        index.build(trees, n_jobs=1)
        build_s = time.perf_counter() - t0
        path = cfg.work / "scale" / f"sweep-{trees}.ann"
        index.save(str(path))
        index.unload()
        loaded = AnnoyIndex(vecs.shape[1], "angular")
        loaded.load(str(path))
        swapped = replace(bundle, index=loaded)
        # search_k -1 is Annoy's default (trees x candidates nodes); larger values look
        # further down the trees for the same number of candidates.
        grid = [(cand, -1) for cand in CANDIDATES] + [(100, trees * 100 * m) for m in SEARCH_K_X]
        for cand, search_k in grid:
            settings = SearchSettings(candidates=cand, search_k=search_k, exact_below=0)
            res = search_curve(
                SearchEngine(swapped, None, settings), real.queries, truth, targets, 0
            )
            rows.append(
                {
                    "trees": trees,
                    "candidates": cand,
                    "search_k": search_k,
                    "build_s": build_s,
                    "index_bytes": path.stat().st_size,
                    **res,
                }
            )
        loaded.unload()
        path.unlink()
    return rows


def run(cfg: BenchConfig) -> dict:
    wait_for_model()
    sizes = SIZES_QUICK if cfg.quick else SIZES_FULL
    real = real_data(cfg, 60 if cfg.quick else 150)
    sample = fit_sampler(real.corpus, cfg.seed)
    root = cfg.work / "scale"
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "queries.npy", real.queries)
    image = next(p for p in cfg.images() if view_of(p) == 1)
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.search.engine import SearchEngine, SearchSettings

    results: dict = {"sizes": [], "synthetic_check": synthetic_check(real, sample)}
    for n in sizes:
        # 1M items with 16 trees takes minutes to build on 2 cores; the run uses fewer trees
        # there and reports the 16-tree build time extrapolated from 100k.
        trees = 16 if n < 1_000_000 else 4
        out = root / f"synthetic-{n}.lbx"
        info = write_synthetic(real, n, sample, out, trees)
        log(
            f"wrote {n} items ({trees} trees) in {info['write_seconds']:.1f} s, "
            f"{info['bytes'] / 1e6:.1f} MB"
        )
        bundle = open_bundle(out)
        engine = SearchEngine(bundle, None, SearchSettings(exact_below=0))
        truth = exact_top(bundle, real.queries)
        curve = search_curve(
            engine, real.queries, truth, real.query_groups, 5 if n >= 1_000_000 else 20
        )
        info.update(curve)
        info["rss"] = daemon_rss(out, image)
        results["sizes"].append(info)
        log(
            f"{n}: recall@10 vs exact {curve['recall@10_vs_exact']:.3f}, "
            f"ANN {curve['ann_ms_median']:.2f} ms, exact {curve['exact_ms_median']:.1f} ms"
        )
        if n == (10_000 if cfg.quick else 100_000):
            results["sweep_items"] = n
            results["sweep"] = tree_sweep(real, out, real.query_groups, truth, cfg)
            results["index_space"] = index_space(real, out, real.query_groups, truth)
        if n >= 1_000_000:
            _remove_tree(out)  # ~1.5 GB; nothing later needs it
    print_summary(results)
    return results


def synthetic_check(real: RealData, sample) -> dict:
    """Do synthetic distractors look like real ones to a real query? Compare best scores."""
    synth = sample(1000)
    q = real.queries
    real_other = []
    synth_best = []
    for qv, g in zip(q, real.query_groups):
        sc_real = (real.catalog @ qv.T).max(axis=1)
        sc_real[g] = -2
        real_other.append(float(np.sort(sc_real)[-1]))
        synth_best.append(float((synth[:250] @ qv.T).max()))
    return {
        "best_real_non_match_median": float(np.median(real_other)),
        "best_synthetic_median": float(np.median(synth_best)),
        "note": "best cosine of a real query among 249 real non-matching items vs among 250 "
        "synthetic ones",
    }


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def print_summary(res: dict) -> None:
    rows = []
    for s in res["sizes"]:
        rss = s.get("rss", {})
        searched = rss.get("searched", {})
        rows.append(
            [
                s["items"],
                s["trees"],
                s["bytes"] / 1e6,
                s["bytes_per_1k"] / 1e3,
                searched.get("VmRSS", 0) / 1e6,
                s["recall@10_vs_exact"],
                s["ann_ms_median"],
                s["exact_ms_median"] or float("nan"),
            ]
        )
    print_table(
        "Scale",
        [
            "items",
            "trees",
            "bundle MB",
            "KB/1k items",
            "RSS MB",
            "recall@10 vs exact",
            "ANN ms",
            "exact ms",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    cfg = replace(BenchConfig(), quick=args.quick)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    save_results("scale", run(cfg))


if __name__ == "__main__":
    main()
