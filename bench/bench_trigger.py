"""Trigger-to-answer latency of camera-triggered lookups, in both deployment layouts.

What is timed: a trigger line written into a pseudo-terminal (the serial adapter's place)
until the answer line is read back — or, for HTTP, ``POST /v1/trigger`` until its response.
Each lookup waits for a frame captured *after* the trigger, judges it (dark / blurred),
embeds it and searches the sample bundle. The camera is a real video file played by OpenCV
at camera speed (``--fps``, default 30), so waiting for a fresh frame is part of the cost.

Baseline: ``catalog.search_image`` called directly on the same frame (no camera, no I/O),
timed right before every trigger, so load from other processes hits both alike; the ratio
is p50(trigger) / p50(its paired baseline).

Layouts:

* ``in-daemon``   — the KioskLoop inside this process (as when the blueprint is mounted in
  the daemon), triggered over the pty and over HTTP on loopback (waitress); once more with
  ``max_frame_age_ms`` set, where the newest frame is reused instead of waiting for the next;
* ``own process`` — ``lensbox kiosk`` as a separate process, triggered over the pty.

Run: ``python -m bench.bench_trigger [--triggers 30] [--fps 30] [--threads 2]`` (~25 s).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.common import ROOT, log, print_table, save_results, summarise_ms

SAMPLE_CATALOG = ROOT / "examples" / "sample-catalog"
QUERY = ROOT / "examples" / "sample-queries" / "coffee-photo.jpg"
PARTS = ("wait_ms", "quality_ms", "embed_ms", "search_ms")


@dataclass
class Run:
    samples: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    wrong: int = 0
    timings: list[dict] = field(default_factory=list)  # the loop's own breakdown, if known
    rss_mb: float | None = None  # resident memory of the kiosk process, if separate

    def breakdown(self) -> dict[str, float]:
        if not self.timings:
            return {}
        return {k: float(np.mean([t.get(k, 0.0) for t in self.timings])) for k in PARTS}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def build(work: Path) -> Path:
    from lensbox.index_builder.build import BuildSettings, build_bundle

    out = work / "sample.lbx"
    shutil.rmtree(out, ignore_errors=True)  # ~1 s, and always matches the installed model
    build_bundle(SAMPLE_CATALOG, out, BuildSettings(cache_dir=None, workers=1), progress=False)
    return out


def measure(
    trigger: Callable[[int], tuple[bool, dict | None]],
    baseline: Callable[[], None],
    n: int,
    warmup: int = 3,
    pause_s: float = 0.05,
) -> Run:
    """Time ``n`` triggers, each right after one baseline search.

    A random pause before each trigger puts it at a random phase of the camera's frame
    clock, as real button presses are.
    """
    rng = random.Random(7)
    run = Run()
    for i in range(warmup + n):
        t0 = time.perf_counter()
        baseline()
        t1 = time.perf_counter()
        time.sleep(pause_s + rng.random() * pause_s)
        t2 = time.perf_counter()
        ok, timings = trigger(i)
        t3 = time.perf_counter()
        if i >= warmup:
            run.baseline.append((t1 - t0) * 1e3)
            run.samples.append((t3 - t2) * 1e3)
            run.wrong += not ok
            if timings:
                run.timings.append(timings)
    return run


def serial_trigger(port, loop=None) -> Callable[[int], tuple[bool, dict | None]]:
    def fn(i: int) -> tuple[bool, dict | None]:
        answer = port.ask(f"LOOKUP {i}", timeout=10.0) or ""
        return answer.startswith(f"OK {i} coffee "), loop.last().timings if loop else None

    return fn


def direct_search(catalog) -> Callable[[], None]:
    rgb = cv2.cvtColor(cv2.imread(str(QUERY)), cv2.COLOR_BGR2RGB)

    def fn() -> None:
        if catalog.search_image(rgb, top_k=3).hits[0].id != "coffee":
            raise SystemExit("baseline search did not find coffee")

    return fn


def bench_in_daemon(
    catalog, video: Path, work: Path, n: int, max_age_ms: int = 0
) -> dict[str, Run]:
    """The loop in this process; with ``max_age_ms`` the grabber decodes every frame and a
    trigger reuses the newest (serial only), else it waits for the next (serial + HTTP)."""
    import requests
    from flask import Flask
    from waitress import create_server

    from lensbox.device.capture.grabber import FrameGrabber
    from lensbox.device.capture.http import make_blueprint
    from lensbox.device.capture.kiosk import KioskLoop
    from lensbox.device.capture.testing import PtyPort, wait_until
    from lensbox.device.config.camera import (
        CameraConfig,
        KioskConfig,
        SerialConfig,
        TriggerConfig,
    )

    port = PtyPort(work / "ttyBENCH")
    cfg = KioskConfig(
        serial=SerialConfig(port=str(port.path)),
        max_frame_age_ms=max_age_ms,
        trigger=TriggerConfig(debounce_ms=0, min_gap_ms=0),
    )
    loop = KioskLoop(catalog, FrameGrabber(CameraConfig(source=str(video))), cfg).start()
    app = Flask("bench")
    app.register_blueprint(make_blueprint(loop))
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}/v1/trigger"
    base = direct_search(catalog)  # loop idle between triggers: the catalog is free
    out = {}
    try:
        assert wait_until(lambda: loop.serial.link.connected, 10)
        assert loop.grabber.wait_frame(timeout=10) is not None
        label = f", max_frame_age_ms={max_age_ms}" if max_age_ms else ""
        out[f"in-daemon, serial (pty){label}"] = measure(serial_trigger(port, loop), base, n)
        if max_age_ms:
            return out
        session = requests.Session()

        def via_http(i: int) -> tuple[bool, dict]:
            r = session.post(url, json={"tag": str(i)}, timeout=10)
            body = r.json()
            return r.status_code == 200 and body["item_id"] == "coffee", body["timings"]

        out["in-daemon, HTTP POST /v1/trigger"] = measure(via_http, base, n)
    finally:
        server.close()
        loop.stop()
        port.close()
    return out


def bench_own_process(catalog, bundle: Path, video: Path, work: Path, threads: int, n: int) -> Run:
    from lensbox.device.capture.testing import PtyPort

    config = work / "kiosk.toml"
    config.write_text(
        f"[search]\nthreads = {threads}\n\n[kiosk.trigger]\ndebounce_ms = 0\nmin_gap_ms = 0\n"
    )
    port = PtyPort(work / "ttyPROC")
    log_path = work / "kiosk.log"
    log_file = log_path.open("w")  # a file, not a pipe nobody drains while we measure
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lensbox.device.cli",
            "kiosk",
            str(bundle),
            "--camera",
            str(video),
            "--serial",
            str(port.path),
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )
    try:
        deadline = time.monotonic() + 30
        while port.ask("PING", timeout=0.3) != "PONG":
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"lensbox kiosk did not start: {log_path.read_text()}")
        port.drain(0.3)
        run = measure(serial_trigger(port), direct_search(catalog), n)
        run.rss_mb = _rss_mb(proc.pid)
        return run
    finally:
        proc.terminate()
        proc.wait(10)
        log_file.close()
        port.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triggers", type=int, default=30)
    ap.add_argument("--fps", type=float, default=30.0, help="camera (video) frame rate")
    ap.add_argument("--threads", type=int, default=2, help="inference threads")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lensbox-bench/trigger"))
    args = ap.parse_args(argv)
    from lensbox.device.capture.testing import write_video
    from lensbox.device.live.catalog import open_catalog

    args.work.mkdir(parents=True, exist_ok=True)
    log("building the sample bundle")
    bundle = build(args.work)
    video = write_video(
        args.work / "camera.avi", [cv2.imread(str(QUERY))] * int(args.fps), fps=args.fps
    )
    catalog = open_catalog(str(bundle), threads=args.threads)
    log("in-daemon layout: KioskLoop + serial pty + HTTP")
    runs = bench_in_daemon(catalog, video, args.work, args.triggers)
    age = int(1000 / args.fps) + 10  # the newest frame is always younger than this
    runs.update(bench_in_daemon(catalog, video, args.work, args.triggers, age))
    log("own-process layout: lensbox kiosk")
    runs["own process (lensbox kiosk), serial (pty)"] = bench_own_process(
        catalog, bundle, video, args.work, args.threads, args.triggers
    )
    table, results = [], {}
    for name, run in runs.items():
        st, base = summarise_ms(run.samples), summarise_ms(run.baseline)
        parts = run.breakdown()
        results[name] = {
            **st,
            "baseline": base,
            "wrong": run.wrong,
            "breakdown_ms": parts,
            "rss_mb": run.rss_mb,
        }
        table.append(
            [
                name,
                st["n"],
                st["median_ms"],
                st["p99_ms"],
                base["median_ms"],
                f"{st['median_ms'] / base['median_ms']:.2f}x",
                run.wrong,
                " / ".join(f"{parts[k]:.1f}" for k in PARTS) if parts else "-",
            ]
        )
    print_table(
        f"Trigger-to-answer latency (ms), camera {args.fps:g} fps, {args.threads} threads, "
        f"{args.triggers} triggers per row",
        [
            "layout",
            "n",
            "p50",
            "p99",
            "baseline p50",
            "p50 / baseline",
            "wrong",
            "frame wait / quality / embed / search (mean)",
        ],
        table,
    )
    own = runs["own process (lensbox kiosk), serial (pty)"].rss_mb
    if own is not None:
        print(
            f"\n`lensbox kiosk` process resident memory: {own:.0f} MB "
            f"(this bench process: {_rss_mb(os.getpid()):.0f} MB)"
        )
    save_results("trigger", {"fps": args.fps, "threads": args.threads, "layouts": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
