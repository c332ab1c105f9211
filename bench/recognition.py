"""Recognition on camera photos: global ranking vs visual words vs geometric verification.

``python -m bench.recognition [--quick]`` prints one table per protocol and step, with the
model's own single-thread run time measured in the same run (latencies are also given as a
multiple of it, since machines here differ 2-3x between sessions), and saves
bench/results/recognition.json for the report.

Protocols (every catalog is indexed with ``lensbox build``, every query searched through
``LiveCatalog.search_image``, the path the CLI, kiosk and daemon use):

- smvs-dvd: 100 clean DVD covers vs 400 real phone photos by 4 cameras. Parameters were
  chosen on canon + droid only; e63 and palm are reported as held out.
- ukbench: view 0 of 250 objects indexed; the other real views, and "kiosk" renderings of
  them (bench/transforms.py), as queries.
- flat: covers/labels this benchmark draws itself (redistributable), photographed in
  simulation onto cluttered scenes with perspective, glare, blur and noise.

Steps: ``global`` (the descriptor alone, verification off), ``verify-global`` (the global
shortlist verified), ``full`` (global + visual words fused, then verified: the default).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

# numpy's BLAS on one thread, as `lensbox` runs it (device/cli.py): its products are small
# and a second thread fights the interpreters for the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from bench import transforms as T
from bench.common import (
    DOCS,
    ROOT,
    load_results,
    load_rgb,
    log,
    machine_info,
    md_table,
    model_run_ms,
    print_table,
    save_results,
)

SHARED = ROOT.parent / "shared" / "data"
SMVS = SHARED / "smvs-dvd"
UKBENCH = SHARED / "ukbench-1000"
TUNED_CAMERAS = ("canon", "droid")
DOC = DOCS / "recognition.md"


@dataclass
class Query:
    load: Callable[[], np.ndarray]
    truth: str
    group: str
    detail: str | None = None  # a finer group, also reported (e.g. what lies behind)


@dataclass
class Protocol:
    name: str
    catalog: Path  # a folder lensbox build reads
    queries: list[Query]


# -- protocols ------------------------------------------------------------------------------
def smvs(quick: bool) -> Protocol | None:
    truth = SMVS / "groundtruth.json"
    if not truth.is_file():
        return None
    pairs = sorted(json.loads(truth.read_text()).items())
    if quick:
        pairs = pairs[::2]
    queries = [
        Query(lambda p=SMVS / q: load_rgb(p), Path(r).stem, q.split("/")[1]) for q, r in pairs
    ]
    return Protocol("smvs-dvd", SMVS / "reference", queries)


def ukbench(quick: bool, work: Path) -> Protocol | None:
    images = sorted((UKBENCH / "images").glob("ukbench*.jpg"))
    if len(images) < 8:
        return None
    catalog = work / "ukbench-catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    for p in images:
        if int(p.stem[7:]) % 4 == 0 and not (catalog / p.name).exists():
            os.symlink(p, catalog / p.name)
    others = [p for p in images if int(p.stem[7:]) % 4 != 0]
    if quick:
        others = [p for p in others if int(p.stem[7:]) % 4 == 1 + (int(p.stem[7:]) // 4) % 3]
    scenes = [load_rgb(p) for p in images if int(p.stem[7:]) % 24 == 2]

    def item(p: Path) -> str:
        return f"ukbench{(int(p.stem[7:]) // 4) * 4:05d}"

    def behind(p: Path) -> bool:
        """Half the kiosk photos have another catalog object's photo behind the item."""
        return bool(T.rng_for(1234, f"kiosk-behind:{p.name}").random() < 0.5)

    def kiosk(p: Path) -> np.ndarray:
        rng = T.rng_for(1234, f"kiosk:{p.name}")
        return T.kiosk(
            load_rgb(p),
            rng,
            lambda r: scenes[int(r.integers(len(scenes)))] if behind(p) else T.texture(r),
        )

    queries = [Query(lambda p=p: load_rgb(p), item(p), "real") for p in others]
    queries += [
        Query(
            lambda p=p: kiosk(p),
            item(p),
            "kiosk",
            "kiosk, catalog item behind" if behind(p) else "kiosk, plain background",
        )
        for p in others
    ]
    return Protocol("ukbench", catalog, queries)


WORDS = [
    "FOREST",
    "NIGHT",
    "RIVER",
    "GOLD",
    "EDITION",
    "STORM",
    "CITY",
    "BLUE",
    "ECHO",
    "SUMMER",
    "ROAD",
    "LIGHT",
    "DARK",
    "OCEAN",
    "PRIME",
    "WILD",
    "IRON",
    "GLASS",
]


def _artwork() -> list[np.ndarray]:
    """The redistributable photos of the sample catalog (CC0 / public domain, see
    examples/LICENSES.md): crops of them are the covers' artwork."""
    folder = ROOT / "examples" / "sample-catalog"
    return [load_rgb(p) for p in sorted(folder.glob("*.jpg")) if not p.stem.startswith("card")]


ARTWORK: list[np.ndarray] = []


def _crop(src: np.ndarray, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``src`` (15-45% of its width), resized to w x h, maybe mirrored."""
    sh, sw = src.shape[:2]
    cw = int(rng.uniform(0.15, 0.45) * sw)
    ch = min(sh, max(8, int(cw * h / w)))
    x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    out = cv2.resize(src[y : y + ch, x : x + cw], (w, h))
    return out[:, ::-1] if rng.random() < 0.5 else out


def draw_cover(index: int, size: tuple[int, int] = (500, 360)) -> np.ndarray:
    """A cover/label the benchmark draws: a recoloured crop of a sample photo as artwork,
    a coloured band with a title, shapes, and small print."""
    if not ARTWORK:
        ARTWORK.extend(_artwork())
    rng = np.random.default_rng([77, index])
    h, w = size
    # Two crops from two different photos, one above the other: covers in a series may
    # share a picture, but no two covers share their whole artwork.
    first, second = rng.choice(len(ARTWORK), 2, replace=False)
    halves = [_crop(ARTWORK[int(i)], w, h // 2, rng) for i in (first, second)]
    art = np.concatenate(halves, axis=0).astype(np.float32)
    art = art[..., rng.permutation(3)] * rng.uniform(0.7, 1.2, 3) + rng.uniform(-30, 30, 3)
    img = np.clip(art, 0, 255).astype(np.uint8).copy()
    band = rng.integers(0, 256, 3).tolist()
    top = int(rng.integers(0, h - 90))
    cv2.rectangle(img, (0, top), (w, top + 70), band, -1)
    ink = (255, 255, 255) if np.mean(band) < 128 else (0, 0, 0)
    title = " ".join(rng.choice(WORDS, 2))
    cv2.putText(img, title, (12, top + 48), cv2.FONT_HERSHEY_DUPLEX, 1.0, ink, 2, cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 5))):
        colour = rng.integers(0, 256, 3).tolist()
        c = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.circle(img, c, int(rng.integers(8, 40)), colour, -1)
    for line in range(3):
        text = f"{rng.integers(10**5, 10**6)} {rng.choice(WORDS).lower()} no.{index}"
        cv2.putText(
            img,
            text,
            (12, h - 60 + 20 * line),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return img


def photograph(
    cover: np.ndarray, clutter: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """The cover lying among others on a textured table, seen by a tilted phone with glare."""
    w, h = 800, 600
    scene = cv2.resize(T.texture(rng), (w, h)).astype(np.float32)
    for other in clutter:
        ow = int(rng.uniform(0.2, 0.35) * w)
        oh = int(ow * other.shape[0] / other.shape[1])
        piece = cv2.resize(other, (ow, oh))
        x, y = int(rng.integers(-ow // 3, w - ow // 2)), int(rng.integers(-oh // 3, h - oh // 2))
        xs, ys = slice(max(0, x), min(w, x + ow)), slice(max(0, y), min(h, y + oh))
        scene[ys, xs] = piece[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    ch, cw = cover.shape[:2]
    fill = rng.uniform(0.45, 0.8)  # the item is the subject: held up or laid in front
    s = fill * min(w / cw, h / ch)
    quad = np.float32([[0, 0], [cw, 0], [cw, ch], [0, ch]]) * s
    quad += rng.uniform(-0.15, 0.15, (4, 2)).astype(np.float32) * np.float32([cw * s, ch * s])
    quad += np.float32([rng.uniform(0, w - cw * s), rng.uniform(0, h - ch * s)])
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [cw, 0], [cw, ch], [0, ch]]), quad)
    warped = cv2.warpPerspective(cover.astype(np.float32), m, (w, h))
    mask = cv2.warpPerspective(np.ones((ch, cw), np.float32), m, (w, h))[..., None]
    img = np.clip(warped * mask + scene * (1 - mask), 0, 255).astype(np.uint8)
    img = T.glare(img, rng)
    img = T.exposure(img, rng, strong=False)
    img = T.blur(img, rng, strong=False)
    img = T.noise(img, rng, 3, 8)
    return T.jpeg(img, rng, 50, 80)


def flat(quick: bool, work: Path) -> Protocol:
    n = 60 if quick else 150
    catalog = work / f"flat-catalog-{n}"
    catalog.mkdir(parents=True, exist_ok=True)
    covers = [draw_cover(i) for i in range(n)]
    for i, cover in enumerate(covers):
        path = catalog / f"cover{i:03d}.png"
        if not path.exists():
            cv2.imwrite(str(path), cover[..., ::-1])
    # Distractors never in the catalog lie around the item, as other things on a desk do.
    distractors = [draw_cover(10_000 + i) for i in range(20)]

    def shot(i: int, k: int) -> np.ndarray:
        rng = np.random.default_rng([91, i, k])
        picks = [distractors[int(j)] for j in rng.choice(len(distractors), 2, replace=False)]
        return photograph(covers[i], picks, rng)

    queries = [
        Query(lambda i=i, k=k: shot(i, k), f"cover{i:03d}", "flat")
        for i in range(n)
        for k in range(2)
    ]
    return Protocol("flat", catalog, queries)


# -- measuring ------------------------------------------------------------------------------
STEPS = {
    "global": {"verify": 0, "full_first": False},
    "verify-global": {"words": False},
    "always-verify": {"confident": 2.0},
    "verify-20": {"verify_more": 0},
    "full": {},
}


# The same steps on a bundle whose projection is PCA-whitening of the catalog alone (the
# previous builder, ``whiten_views=0``): what learning the whitening from camera views buys.
PCA_STEPS = {"pca: global": "global", "pca: full": "full"}


# What a bundle is made by: a cached bundle older than any of these files is built again.
BUILDER_CODE = ("index_builder", "device/embedding", "device/features", "device/bundle")


def _stale(manifest: Path, wanted: dict) -> bool:
    """A cached bundle is reused only if built with these settings and the current code."""
    if not manifest.exists() or json.loads(manifest.read_text()).get("build") != wanted:
        return True
    newest = max(p.stat().st_mtime for d in BUILDER_CODE for p in (ROOT / d).rglob("*.py"))
    return manifest.stat().st_mtime < newest


def build(protocol: Protocol, work: Path, **overrides) -> Path:
    from lensbox.index_builder.build import BuildSettings, build_bundle

    suffix = "".join(f"-{k}{v}" for k, v in overrides.items())
    out = work / f"{protocol.name}{suffix}.lbx"
    settings = BuildSettings(workers=2, **overrides)
    wanted = json.loads(json.dumps({k: v for k, v in asdict(settings).items() if k != "cache_dir"}))
    if _stale(out / "manifest.json", wanted):
        log(f"{protocol.name}: building {protocol.catalog}")
        build_bundle(protocol.catalog, out, settings, progress=False)
    return out


def step_settings(base, step: str):
    """``base`` (SearchSettings) with the step's overrides, each on the level it lives."""
    top = {k: v for k, v in STEPS[step].items() if k in {f.name for f in fields(base)}}
    below = {k: v for k, v in STEPS[step].items() if k not in top}
    return replace(base, rerank=replace(base.rerank, **below), **top)


def evaluate(catalog, protocol: Protocol, step: str) -> Iterator[dict]:
    engine = catalog.engine  # the ranker the catalog searches with: its settings change
    base = engine.settings
    engine.settings = step_settings(base, step)
    try:
        for q in protocol.queries:
            rgb = q.load()
            t = time.perf_counter()
            res = catalog.search_image(rgb, top_k=10)
            ms = (time.perf_counter() - t) * 1e3
            ids = [h.id for h in res.hits]
            rank = ids.index(q.truth) if q.truth in ids else 99
            top = res.hits[0] if res.hits else None
            yield {
                "group": q.group,
                "detail": q.detail,
                "rank": rank,
                "ms": ms,
                "score": top.score if top else 0.0,
                "verdict": top.verdict if top else "none",
                "correct": rank == 0,
                "inliers": top.inliers if top else None,
                # The cascade answered: the top hit was never checked by verification.
                "cascade": bool(top and top.inliers is None and step != "global"),
                # ... on the full frame alone, its first stage (one model run).
                "first": res.query is not None and res.query.views == ("full",),
            }
    finally:
        engine.settings = base


def summarise(rows: list[dict], run_ms: float) -> dict:
    ranks = np.array([r["rank"] for r in rows])
    ms = np.array([r["ms"] for r in rows])
    return {
        "n": len(rows),
        "recall@1": float((ranks < 1).mean()),
        "recall@5": float((ranks < 5).mean()),
        "recall@10": float((ranks < 10).mean()),
        "p50_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p50_runs": float(np.median(ms) / run_ms),
        "cascade": float(np.mean([r.get("cascade", False) for r in rows])),
        "first": float(np.mean([r.get("first", False) for r in rows])),
    }


def verdict_quality(rows: list[dict]) -> dict:
    """Precision of "match" and the share of queries it answers, at the stored threshold."""
    matched = [r for r in rows if r["verdict"] == "match"]
    return {
        "answered": len(matched) / max(1, len(rows)),
        "precision": sum(r["correct"] for r in matched) / max(1, len(matched)),
    }


def measure(
    catalog, protocol: Protocol, step: str, run_ms: float, keep: list | None = None
) -> dict:
    """One step over every query: summaries for all of them and for each group; ``keep``
    gets each query's (top score, whether the top hit is right)."""
    log(f"{protocol.name}: {step} over {len(protocol.queries)} queries")
    rows = list(evaluate(catalog, protocol, step))
    if keep is not None:
        keep += [(round(float(r["score"]), 4), bool(r["correct"])) for r in rows]
    groups = sorted({r["group"] for r in rows} | {r["detail"] for r in rows} - {None})
    return {
        "all": summarise(rows, run_ms),
        **{
            g: summarise([r for r in rows if g in (r["group"], r["detail"])], run_ms)
            for g in groups
        },
        "verdict": verdict_quality(rows),
    }


def run(quick: bool, work: Path, protocols: list[str]) -> dict:
    from lensbox.device.live.catalog import open_catalog

    work.mkdir(parents=True, exist_ok=True)
    makers = {
        "smvs-dvd": lambda: smvs(quick),
        "ukbench": lambda: ukbench(quick, work),
        "flat": lambda: flat(quick, work),
    }
    from lensbox.device.features.rerank import RerankSettings

    results: dict = {
        "machine": machine_info(),
        "quick": quick,
        "verify_more": RerankSettings().verify_more,  # the default the text describes
        "protocols": {},
    }
    for name in protocols:
        protocol = makers[name]()
        if protocol is None:
            log(f"{name}: data not found, skipped")
            continue
        bundle = build(protocol, work)
        catalog = open_catalog(str(bundle), threads=2)
        manifest = json.loads((bundle / "manifest.json").read_text())
        run_ms = model_run_ms(catalog.embedder.model.model_path)
        out: dict = {
            "quick": quick,
            "model_run_ms": run_ms,
            "calibration": manifest.get("calibration"),
            "local": manifest.get("local"),
            "steps": {},
        }
        out["answers"] = []  # the default's, for other sets' thresholds (cross_calibration)
        for step in STEPS:
            keep = out["answers"] if step == "full" else None
            out["steps"][step] = measure(catalog, protocol, step, run_ms, keep)
        pca_bundle = build(protocol, work, whiten_views=0)
        pca = open_catalog(str(pca_bundle), threads=2)
        for label, step in PCA_STEPS.items():
            out["steps"][label] = measure(pca, protocol, step, run_ms)
        pca_manifest = json.loads((pca_bundle / "manifest.json").read_text())
        out["pca_calibration"] = pca_manifest.get("calibration")
        results["protocols"][name] = out
        print_protocol(name, out)
    return results


def protocol_rows(name: str, out: dict) -> list[list]:
    groups = [g for g in next(iter(out["steps"].values())) if g not in ("verdict",)]
    rows = []
    for step, res in out["steps"].items():
        for g in groups:
            s = res[g]
            held = " (held out)" if name == "smvs-dvd" and g not in ("all", *TUNED_CAMERAS) else ""
            rows.append(
                [
                    step,
                    g + held,
                    s["n"],
                    f"{s['recall@1']:.3f}",
                    f"{s['recall@5']:.3f}",
                    f"{s['p50_ms']:.0f}",
                    f"{s['p90_ms']:.0f}",
                    f"{s['p50_runs']:.1f}",
                    f"{s.get('cascade', 0.0):.0%}",
                    f"{s.get('first', 0.0):.0%}",
                ]
            )
    return rows


HEADERS = [
    "step",
    "queries",
    "n",
    "recall@1",
    "recall@5",
    "p50 ms",
    "p90 ms",
    "p50 runs",
    "cascade",
    "full frame",
]


def verdict_line(out: dict, pca: bool = False) -> str:
    cal = out.get("pca_calibration" if pca else "calibration") or {}
    v = out["steps"]["pca: full" if pca else "full"]["verdict"]
    return (
        ("the PCA-whitened bundle's calibration" if pca else "calibration stored by the builder")
        + f": match >= {cal.get('match')}, weak >= "
        f"{cal.get('weak')} (from {cal.get('samples')} camera views of the catalog); at it, "
        f"'match' answered {v['answered']:.1%} of these queries with precision "
        f"{v['precision']:.1%}"
    )


def cross_calibration(protocols: dict) -> list[str]:
    """Each set's stored ``match`` threshold applied to every set's answers (default step):
    the share answered "match" and its precision. Why the builder measures the threshold on
    each catalog instead of one fixed number."""
    have = {n: o for n, o in protocols.items() if o.get("answers") and o.get("calibration")}
    if len(have) < 2:
        return []
    rows = []
    for source, out in have.items():
        match = float(out["calibration"]["match"])
        cells = [f"{source} ({match:.3f})"]
        for target in have.values():
            answers = [ok for score, ok in target["answers"] if score >= match]
            share = len(answers) / len(target["answers"])
            precision = f"{sum(answers) / len(answers):.1%}" if answers else "-"
            cells.append(f"{share:.1%} / {precision}")
        rows.append(cells)
    return [
        "## One set's threshold on the others",
        "",
        "The `match` threshold the builder stored for one set's catalog, applied to every "
        "set's answers (the default step; a top score at or above it counts as `match`, the "
        "verdict's main test): the share of queries answered `match` / the precision of those "
        "answers. The diagonal is what the builder chose; off it, what a "
        "threshold fixed by hand on one kind of catalog would give on another.",
        "",
        md_table(["threshold from (match >=)", *have], rows),
        "",
    ]


def print_protocol(name: str, out: dict) -> None:
    title = f"{name} (model run {out['model_run_ms']:.1f} ms, 1 thread)"
    print_table(title, HEADERS, protocol_rows(name, out))
    print(verdict_line(out))
    if "pca: full" in out["steps"]:
        print(verdict_line(out, pca=True))


NOTES = {
    "smvs-dvd": "100 DVD covers, one clean reference each, vs 400 real phone photos by 4 "
    "cameras. Parameters are chosen on canon and droid; **e63 and palm are held out**, with "
    "two caveats: a diagnostic run that compared verifying 12 and 20 candidates also printed "
    "the held-out cameras' recall before 20 was chosen on canon+droid, flat and UKBench; and "
    "the diagnosis behind the further checks (`verify_more`) and 2000 RANSAC iterations read "
    "the wrong answers of all four cameras (the values were not tuned on them: 30 is the "
    "shortlist's length, 2000 the first value tried). The learned whitening's shrinkage "
    "(0.3, of 0.03 / 0.1 / 0.3 / 1.0) and its 12 views per photo (of 6 / 12) were chosen on "
    "the tuning halves (canon and droid, the even UKBench and flat queries); the runs "
    "printed e63 and palm too.",
    "ukbench": "view 0 of 250 objects indexed; the other real views, and kiosk renderings of "
    "them (bench/transforms.py), as queries. Many objects are 3D: the global descriptor "
    "carries them. In half the kiosk renderings the scene behind the item is a photo of "
    "another catalog object (a shelf of products behind the counter): that object is really "
    "in view, verifies, and is often named instead of the smaller 3D item in front, which "
    "does not verify. Telling which of two catalog items in view is meant (the one in front) "
    "is not solved.",
    "flat": "covers this benchmark draws (crops of the sample catalog's CC0 photos, a title "
    "band, shapes, small print), photographed in simulation lying among other covers on a "
    "table: perspective, glare, exposure, blur, noise, JPEG.",
}


def render(results: dict) -> str:
    """docs/recognition.md from a saved run (``python -m bench.recognition --render``)."""
    m = results.get("machine", {})
    quick = ""
    parts = [
        "# Recognition on camera photos",
        "",
        "Written by `python -m bench.recognition` from the run saved in "
        "`bench/results/recognition.json`; do not edit by hand.",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores{quick}. Latency is one "
        "`search_image` call (embedding three views, keypoints, visual words, verification, "
        "ranking; decoding excluded) at 2 interpreter threads; **p50 runs** states it as a "
        "multiple of one single-thread model run timed in the same run, since machines here "
        "differ 2-3x between sessions (this run had the machine to itself).",
        "",
        "Steps: `global` = the global descriptor alone (the first release); "
        "`verify-global` = its shortlist verified; `always-verify` = global and visual words "
        "fused, then verified, for every query; `full` = the same behind the cascade (the "
        "default): the full frame is embedded and searched alone first, and a query whose top "
        "hit there is a calibrated match well ahead of the next stops (one model run); "
        "otherwise the other views are embedded and a query whose global top hit is then as "
        "clear is answered without verification; when none of the first 20 candidates "
        f"verified well, up to {results.get('verify_more', 30)} more are checked, the visual-word "
        "channel's first. "
        "`verify-20` = `full` without those further checks (the previous default). "
        "`pca: global` and `pca: full` = `global` and `full` on a bundle built with "
        "`--whiten-views 0`: its projection is PCA-whitening of the catalog alone, as every "
        "bundle had until the builder learned the whitening from camera views of its catalog "
        "(index_builder/whitening.py); the other steps use the default, learned one. "
        "In every verifying step a verified item whose outline fills the frame while none "
        "of its inliers lies in the frame's middle is taken for the backdrop of the item "
        "held up in front of it and ranks by its global score (`verify.behind`). "
        "**cascade** = "
        "the share of queries answered without verification, **full frame** = the share "
        "answered by the first stage; `always-verify` vs `full` is what the cascade costs in "
        "recall.",
        "",
        "**On a Raspberry Pi 4 (estimate, not measured):** every stage here (TFLite int8 "
        "convolutions, ORB, Hamming matching, RANSAC) is CPU arithmetic that runs on NEON on "
        "the Pi, so a latency in model runs carries over: multiply **p50 runs** by the Pi 4's "
        "single-thread model run, about 60 ms (docs/benchmarks.md section 5 estimates 22 ms "
        "at 4 threads from the model's MAC count; one thread is about 3x that) - e.g. 10 runs "
        "is about 0.6 s per query on a Pi 4, 0.15-0.3 s on a Pi 5. `python -m bench.recognition "
        "--quick` runs unchanged on a board: measure there before relying on this.",
        "",
    ]
    for name, out in results.get("protocols", {}).items():
        local = out.get("local") or {}
        per_photo = local.get("features", 0) // max(1, local.get("photos", 1))
        parts += [
            f"## {name}" + (" (quick: half the queries)" if out.get("quick") else ""),
            "",
            NOTES.get(name, ""),
            "",
            f"Model run: {out['model_run_ms']:.1f} ms (1 thread). Local features: {per_photo} "
            f"keypoints and {local.get('bytes_per_photo', 0) / 1024:.1f} KB per catalog photo, "
            f"{local.get('words', 0)} visual words.",
            "",
            md_table(HEADERS, protocol_rows(name, out)),
            "",
            verdict_line(out) + ".",
            "",
        ]
        if "pca: full" in out["steps"]:
            parts += [verdict_line(out, pca=True) + ".", ""]
    parts += cross_calibration(results.get("protocols", {}))
    detectors = load_results("detectors")
    if detectors:
        parts += [
            "## Which local feature",
            "",
            "`python -m bench.detectors`: on canon + droid photos, how often the true cover "
            "verifies above 5 other covers, with the same matching and homography check; "
            "ORB is the default for its extraction time and size (AKAZE and BRISK are not "
            "capped at 1,000 keypoints, hence their size).",
            "",
            md_table(
                [
                    "detector",
                    "queries",
                    "verified first",
                    "extract ms",
                    "match ms / pair",
                    "KB / photo",
                ],
                [
                    [
                        k,
                        v["queries"],
                        f"{v['verified_first']:.3f}",
                        f"{v['extract_ms']:.1f}",
                        f"{v['match_ms']:.1f}",
                        f"{v['bytes_per_photo'] / 1024:.1f}",
                    ]
                    for k, v in detectors.items()
                ],
            ),
            "",
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="half the queries (about 3 minutes)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lensbox-bench/recognition"))
    ap.add_argument("--only", default="smvs-dvd,ukbench,flat", help="protocols to run")
    ap.add_argument(
        "--render", action="store_true", help="only re-write the doc from the saved run"
    )
    args = ap.parse_args(argv)
    if args.render:
        results = load_results("recognition")
        if results is None:
            raise SystemExit("no saved run: run python -m bench.recognition first")
    else:
        results = run(args.quick, args.work, args.only.split(","))
        earlier = load_results("recognition") or {}
        if earlier.get("protocols"):  # a run of some protocols keeps the others' tables
            results["protocols"] = {**earlier["protocols"], **results["protocols"]}
        path = save_results("recognition", results)
        log(f"saved {path}")
    DOC.write_text(render(results), encoding="utf-8")
    log(f"wrote {DOC}")


if __name__ == "__main__":
    main()
