"""A 100,000-photo bundle with local features: does it open, fit in memory and answer?

Issue #10 asks that a 100k-photo bundle with keypoints still opens and serves within the
memory targets of #11 (anonymous RSS at 100k items <= 150 MB). No real catalog of that size
is at hand, so the bundle is synthetic, written by lensbox's own writer:

- global vectors as in ``bench.scale`` (the 250 real UKBench catalog photos + Gaussian
  distractors), calibrated the way ``lensbox build`` calibrates;
- keypoints: the 250 real photos keep their own (from the 1000-photo UKBench bundle);
  every distractor gets the ORB features of a real photo of something else (an smvs-dvd
  cover or photo), each descriptor XORed with a mask of its own (about 16 of 256 bits),
  so that the visual-word postings have the size and spread of a real catalog's, while
  no distractor is a copy of a catalog object.

The bundle is searched with the full pipeline (cascade, visual words, verification) by
real photos of the 250 objects (other views) in a fresh process, with the same bundle
searched by its global descriptor alone (``verify = 0``) as the baseline of the run.

Run alone: ``python -m bench.local_scale [--quick]``; writes docs/local-scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from bench.common import (
    DOCS,
    ROOT,
    BenchConfig,
    log,
    md_table,
    model_run_ms,
    save_results,
    view_of,
    wait_for_model,
)
from bench.scale import PROC_STATUS

SMVS = ROOT.parent / "shared" / "data" / "smvs-dvd"
PHOTOS_FULL, PHOTOS_QUICK = 100_000, 20_000
DOC = DOCS / "local-scale.md"

SEARCH_SCRIPT = (
    PROC_STATUS
    + r"""
from dataclasses import replace

import numpy as np
from lensbox.device.imaging.decode import decode_image
from lensbox.device.live.catalog import open_catalog

args = json.loads(sys.argv[1])
before = status()
t0 = time.perf_counter()
catalog = open_catalog(args["bundle"], threads=2)
open_s = time.perf_counter() - t0
opened = status()
engine = catalog.engine
base = engine.settings
rows = {}
setups = {
    "global only": replace(base, rerank=replace(base.rerank, verify=0)),
    "default (cascade)": base,
    "every query verified": replace(
        base, full_first=False, rerank=replace(base.rerank, confident=2.0)
    ),
}
for name, settings in setups.items():
    engine.settings = settings
    ms, first, verified = [], [], []
    for path, truth in args["queries"]:
        rgb = decode_image(Path(path).read_bytes())
        t = time.perf_counter()
        res = catalog.search_image(rgb, top_k=10)
        ms.append((time.perf_counter() - t) * 1e3)
        first.append(bool(res.hits) and res.hits[0].id == truth)
        verified.append(bool(res.hits) and (res.hits[0].inliers or 0) > 0)
    rows[name] = {"ms": ms, "first": float(np.mean(first)), "verified": float(np.mean(verified))}
print(json.dumps({"imports": before, "opened": opened, "searched": status(), "open_s": open_s,
                  "rows": rows, "local": engine.local is not None}))
"""
)


def distractor_sources(settings) -> list:
    """ORB features of real photos of other things (smvs-dvd covers and photos)."""
    from lensbox.device.features.local import extract
    from lensbox.device.imaging.decode import load_image

    paths = sorted(SMVS.rglob("*.jpg"))
    if not paths:
        raise SystemExit(f"no smvs-dvd photos under {SMVS}")
    return [extract(load_image(p), settings, settings.catalog_features) for p in paths]


def jittered(source, rng: np.random.Generator):
    """``source``'s keypoints with every descriptor XORed by one random mask (~16 bits)."""
    from lensbox.device.features.local import LocalFeatures

    mask = np.zeros(32, np.uint8)
    for byte, bit in zip(rng.integers(0, 32, 16), rng.integers(0, 8, 16)):
        mask[byte] ^= np.uint8(1 << bit)
    return LocalFeatures(source.xy, source.desc ^ mask, source.size)


def real_features(real, settings) -> list:
    """The 250 catalog photos' own keypoints, from the 1000-photo UKBench bundle."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.features.store import open_local_index

    src = open_bundle(real.bundle)
    index = open_local_index(src.path, src.manifest, src.item_count)
    if index is None:
        raise SystemExit(f"{real.bundle} has no local features")
    ids = [it["id"] for it in src.items(list(range(src.item_count)))]
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    photos = index.photos_of(np.arange(src.item_count))
    return [index.features(photos[row_of[p.stem]][0]) for p in real.photos]


def write_bundle_with_keypoints(cfg: BenchConfig, n: int, out: Path) -> dict:
    from bench.scale import fit_sampler, real_data, write_synthetic
    from lensbox.device.features.local import LocalSettings
    from lensbox.device.search.engine import index_trees

    real = real_data(cfg, 10)
    settings = LocalSettings()
    t0 = time.perf_counter()
    own = real_features(real, settings)
    sources = distractor_sources(settings)
    rng = np.random.default_rng(cfg.seed)
    picks = rng.integers(0, len(sources), n - len(own))
    features = own + [jittered(sources[int(i)], rng) for i in picks]
    log(f"keypoints for {n} photos ready in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    info = write_synthetic(
        real,
        n,
        fit_sampler(real.corpus, cfg.seed),
        out,
        index_trees(n),
        local=(features, np.arange(n), settings),
    )
    info["seconds_with_keypoints"] = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    info["local"] = manifest["local"]
    info["sources"] = len(sources)
    log(f"wrote {out} in {info['seconds_with_keypoints']:.0f} s")
    return info


def search(bundle: Path, queries: list[tuple[str, str]]) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SEARCH_SCRIPT,
            json.dumps({"bundle": str(bundle), "queries": queries}),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=str(ROOT),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(cfg: BenchConfig, keep: bool = False) -> dict:
    wait_for_model()
    n = PHOTOS_QUICK if cfg.quick else PHOTOS_FULL
    out = cfg.work / "scale" / f"keypoints-{n}.lbx"
    unit_start = model_run_ms()
    info = write_bundle_with_keypoints(cfg, n, out)
    others = [p for p in cfg.images() if view_of(p) != 0]
    step = 12 if cfg.quick else 5
    queries = [(str(p), f"ukbench{(int(p.stem[7:]) // 4) * 4:05d}") for p in others[::step]]
    found = search(out, queries)
    unit_end = model_run_ms()
    files = {f.name: f.stat().st_size for f in out.iterdir() if f.is_file()}
    res = {
        "photos": n,
        "queries": len(queries),
        "bundle": info,
        "files": files,
        "bytes": sum(files.values()),
        "search": found,
        "model_run_ms": (unit_start + unit_end) / 2,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if not keep:
        import shutil

        shutil.rmtree(out, ignore_errors=True)  # several GB; nothing later reads it
    return res


def render(res: dict) -> str:
    s = res["search"]
    unit = res["model_run_ms"]
    mb = 1 << 20
    local = res["bundle"]["local"]
    took = res["bundle"]["seconds_with_keypoints"]
    rows = []
    for name, r in s["rows"].items():
        p50 = float(np.median(r["ms"]))
        rows.append(
            [
                name,
                len(r["ms"]),
                f"{100 * r['first']:.1f}%",
                f"{100 * r['verified']:.1f}%",
                f"{p50:.1f}",
                f"{p50 / unit:.1f}",
                f"{float(np.percentile(r['ms'], 90)):.1f}",
            ]
        )
    table = md_table(
        [
            "search",
            "queries",
            "true item first",
            "top hit verified",
            "p50 ms",
            "p50 runs",
            "p90 ms",
        ],
        rows,
    )
    mem = md_table(
        ["when", "RSS MB", "anonymous MB", "file-backed MB"],
        [
            [
                k,
                f"{s[k]['VmRSS'] / mb:.0f}",
                f"{s[k]['RssAnon'] / mb:.0f}",
                f"{s[k]['RssFile'] / mb:.0f}",
            ]
            for k in ("imports", "opened", "searched")
        ],
    )
    return f"""# A {res["photos"]:,}-photo bundle with local features

Written by `python -m bench.local_scale` ({res["date"]}); the bundle is synthetic (see the
module's docstring): {res["photos"]:,} items, {local["features"]:,} keypoints
({local["features"] / res["photos"]:.0f} per photo), {local["words"]:,} visual words,
{local["postings"]:,} postings; {res["bytes"] / 1e9:.2f} GB on disk
({res["bytes"] / res["photos"] / 1024:.1f} KB per photo, of which keypoints and words
{local["bytes_per_photo"] / 1024:.1f} KB). Writing it took {took:.0f} s.

Queries: {res["queries"]} real photos of the 250 real objects (other UKBench views, never a
catalog photo), searched by `catalog.search_image` in a fresh process at 2 threads. The
baseline is the same bundle searched by its global descriptor alone (`verify = 0`), in
the same process; "every query verified" turns the cascade off (no query is answered
before the visual words and verification have run): the cost at this size when nothing
is clear. One single-thread model run took {unit:.1f} ms in this run.

{table}

Memory of that process (`/proc/self/status`), after imports, after `open_catalog`
({s["open_s"]:.1f} s) and after all the searches. Every bundle file is memory-mapped:
file-backed pages are page cache the kernel can drop, so the anonymous part is what the
device must have (#11's target at 100k items: 150 MB).

{mem}
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"{PHOTOS_QUICK:,} photos, fewer queries")
    ap.add_argument("--work", type=Path, default=BenchConfig().work, help="scratch directory")
    ap.add_argument("--keep", action="store_true", help="keep the bundle (several GB) after")
    args = ap.parse_args(argv)
    cfg = replace(BenchConfig(), quick=args.quick, work=args.work)
    res = run(cfg, args.keep)
    save_results("local_scale", res)
    DOC.write_text(render(res), encoding="utf-8")
    print(DOC.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
