"""Run every benchmark and write docs/benchmarks.md: ``python -m bench.run_all [--quick]``.

Order: quality (UKBench retrieval), scale (memory, size, Annoy scaling), speed (pipeline,
runtimes, search, build, HTTP), then the report (its board section is a written estimate,
nothing measures it). Each part also runs
alone (``python -m bench.quality`` ...), and ``python -m bench.report`` re-renders the page
from the saved results without measuring anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# numpy's BLAS on one thread, as `lensbox` runs it (device/cli.py): its products are small
# and a second thread fights the interpreters for the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if __package__ in (None, ""):  # `python bench/run_all.py` works too
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import quality, report, scale, speed
from bench.common import BenchConfig, load_results, log, machine_info, save_results

PARTS = ("quality", "scale", "speed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smaller query sets and catalogs up to 100k items (~3-4 min)",
    )
    ap.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default: {','.join(PARTS)})",
    )
    ap.add_argument("--data", type=Path, default=None, help="UKBench folder (has images/)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder for bundles")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="reuse query embeddings between runs (development only)",
    )
    ap.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    args = ap.parse_args(argv)
    cfg = BenchConfig(quick=args.quick, cache=args.cache, threads=args.threads)
    if args.data:
        cfg.data = args.data
    if args.work:
        cfg.work = args.work
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    started = time.perf_counter()
    durations: dict[str, float] = {}
    for part in parts:
        t0 = time.perf_counter()
        log(f"== {part}")
        if part == "quality":
            save_results("quality", quality.run(cfg))
        elif part == "scale":
            save_results("scale", scale.run(cfg))
        elif part == "speed":
            save_results("speed", speed.run(cfg))
        durations[part] = time.perf_counter() - t0
        log(f"== {part} took {durations[part]:.0f} s")
    previous = load_results("run") or {}
    if previous.get("quick") == cfg.quick and set(parts) != set(PARTS):
        # A partial re-run (--only) keeps the other parts' timings: the page shows the
        # cost of a whole run, not of the last command.
        durations = {**previous.get("durations", {}), **durations}
    meta = {
        "quick": cfg.quick,
        "seconds": sum(durations.values()),
        "wall_seconds_last_command": time.perf_counter() - started,
        "durations": durations,
        "parts": parts,
        "machine": machine_info(),
    }
    save_results("run", meta)
    out = report.write(meta)
    log(f"wrote {out} in {meta['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
