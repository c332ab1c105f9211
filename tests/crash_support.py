"""Power-loss safety of the live catalog: kill -9 a real process at random points, restart,
check that every acknowledged change survived and every file is whole.

A *driver* process (this file with ``--driver``) opens the state directory the way the
daemon does (:class:`BundleManager` -> :class:`LiveCatalog`, background compaction on, a
low compaction threshold so compactions happen all the time) and loops over random
operations: add an item, replace it with a new version, change its title, delete items,
compact now, deploy a different bundle (slot install + hot swap). Before each operation it
prints ``BEGIN {op}`` and after the change is acknowledged ``ACK {op}``. The parent kills
it with SIGKILL after a random delay, then — as a restart would — opens the same state
directory and checks:

* the bundle slot opens (manifest, vector and index sizes), the journal replays;
* the set of items equals the acknowledged history, with at most the one operation that
  was in flight (BEGIN without ACK) applied or not; titles and versions match;
* every item's stored vector is the one its version was added with, and an exact search
  for it finds it first.

Trials chain on the same state directory, so later trials start from crash-recovered
states (including torn journal tails and half-finished compactions).

Limits: SIGKILL loses no page cache, so this checks the ordering of writes, renames and
journal records; surviving an actual power cut additionally relies on the fsync calls
(journal record, staged bundle tree, directory entries) that the code issues at each step.

tests/test_live_crash.py runs 15 trials in the suite; for many more, from the repository
root: ``python -m tests.crash_support --trials 200 --seed 1`` (prints a JSON summary; exit 1
when a trial fails). The driver is this file run by path, so it needs only lensbox.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIMS = 64
SCALE = 127.0 / 0.5
TEMPLATES = {"base": 120, "alt-a": 60, "alt-b": 90}


# -- synthetic bundles (no model needed) ------------------------------------------------------
def pooled_for(item_id: str, version: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{item_id}|{version}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_template(path: Path, name: str, count: int) -> None:
    from lensbox.device.bundle.format import FORMAT_NAME, FORMAT_VERSION
    from lensbox.device.embedding.descriptor import quantize_int8
    from lensbox.index_builder.writer import BundleContent, write_bundle

    items = [
        {"id": f"{name}-{i}", "title": f"{name}-{i}", "custom_content": "v0", "adult": False}
        for i in range(count)
    ]
    vectors = unit(np.stack([pooled_for(it["id"], 0) for it in items]))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": name,
        "model": {"file": "synthetic", "sha256": "0" * 64, "input_size": 224},
        "descriptor": {
            "pooling": "gem",
            "dims": DIMS,
            "int8_scale": SCALE,
            "catalog_views": ["full"],
            "projection": "none",
        },
        "index": {"library": "annoy", "metric": "angular", "trees": 4},
        "counts": {"items": count, "photos": count, "vectors": count, "skipped": 0},
    }
    write_bundle(
        path,
        BundleContent(
            manifest,
            items,
            quantize_int8(vectors, SCALE),
            np.arange(count, dtype=np.int32),
            None,
            {},
        ),
    )


def template_state(name: str) -> dict[str, dict]:
    return {f"{name}-{i}": {"v": 0, "title": f"{name}-{i}"} for i in range(TEMPLATES[name])}


def open_manager(state: Path, compact_after: int = 12, background: bool = True):
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.config.loader import LensboxConfig
    from lensbox.device.live.manager import BundleManager
    from lensbox.device.search.engine import SearchEngine, SearchSettings

    config = LensboxConfig.model_validate(
        {
            "bundles": {"default": str(state / "bundles" / "default")},
            "state": {
                "dir": str(state),
                "compact_after_changes": compact_after,
                "watch_interval_seconds": 0,
                "compact_retry_seconds": 0.2,
            },
        }
    )

    def opener(path: Path) -> SearchEngine:
        return SearchEngine(open_bundle(path), None, SearchSettings())

    manager = BundleManager(config, engine_opener=opener, background=background)
    errors = manager.start()
    if errors.get("default"):
        raise RuntimeError(errors["default"])
    return manager


# -- the driver (the process that gets killed) -------------------------------------------------
def emit(kind: str, op: dict) -> None:
    sys.stdout.write(f"{kind} {json.dumps(op, sort_keys=True)}\n")
    sys.stdout.flush()


def driver(state: Path, templates: Path, seed: int, trial: int) -> None:
    from lensbox.device.live import compaction
    from lensbox.device.live.slot import BundleSlot

    real_compact = compaction.compact

    def traced_compact(cat):  # lets the parent tell kills inside a compaction apart
        emit("CSTART", {})
        try:
            return real_compact(cat)
        finally:
            emit("CEND", {})

    compaction.compact = traced_compact
    rng = random.Random(seed)
    manager = open_manager(state)
    live: dict[str, int] = {}
    for _row, item in manager["default"].all_items():
        live[item["id"]] = int(item["custom_content"][1:])
    emit("READY", {"items": len(live)})
    n = 0
    while n < 100000:
        n += 1
        roll = rng.random()
        cat = lambda: manager["default"]  # noqa: E731 - always the current catalog
        if roll < 0.40 or not live:
            item_id = f"t{trial}-{n}"
            op = {"op": "put", "id": item_id, "v": 1, "title": f"{item_id}#1"}
        elif roll < 0.55:
            item_id = rng.choice(sorted(live))
            op = {
                "op": "put",
                "id": item_id,
                "v": live[item_id] + 1,
                "title": f"{item_id}#{live[item_id] + 1}",
            }
        elif roll < 0.67:
            item_id = rng.choice(sorted(live))
            op = {"op": "update", "id": item_id, "title": f"{item_id}@{trial}.{n}"}
        elif roll < 0.95:
            count = min(len(live), rng.randint(1, 3))
            op = {"op": "delete", "ids": rng.sample(sorted(live), count)}
        elif roll < 0.98:
            op = {"op": "compact"}
        else:
            op = {"op": "deploy", "template": rng.choice(sorted(TEMPLATES))}
        emit("BEGIN", op)
        if op["op"] == "put":
            manager.write(
                "default",
                lambda c, op=op: c.put_pooled(
                    op["id"],
                    pooled_for(op["id"], op["v"])[None],
                    {"title": op["title"], "custom_content": f"v{op['v']}"},
                ),
            )
            live[op["id"]] = op["v"]
        elif op["op"] == "update":
            manager.update("default", op["id"], {"title": op["title"]})
        elif op["op"] == "delete":
            manager.delete("default", op["ids"])
            for i in op["ids"]:
                live.pop(i, None)
        elif op["op"] == "compact":
            manager.write("default", lambda c: c.compact())
        else:
            BundleSlot(state / "bundles" / "default").install_copy(templates / op["template"])
            res = manager.reload("default")
            if not res.ok:
                raise SystemExit(f"deploy refused: {res.error}")
            live = {i: 0 for i in template_state(op["template"])}
        emit("ACK", op)
        del cat


# -- the checker ------------------------------------------------------------------------------
def apply_op(expected: dict[str, dict], op: dict) -> dict[str, dict]:
    out = {k: dict(v) for k, v in expected.items()}
    if op["op"] == "put":
        out[op["id"]] = {"v": op["v"], "title": op["title"]}
    elif op["op"] == "update" and op["id"] in out:
        out[op["id"]]["title"] = op["title"]
    elif op["op"] == "delete":
        for i in op["ids"]:
            out.pop(i, None)
    elif op["op"] == "deploy":
        out = template_state(op["template"])
    return out


def replay_log(expected: dict[str, dict], lines: list[str]) -> tuple[dict, dict | None, int]:
    """Expected state after the ACKed ops; the in-flight op (BEGIN without ACK), if any."""
    pending = None
    acked = 0
    for line in lines:
        kind, _, body = line.partition(" ")
        if kind == "BEGIN":
            pending = json.loads(body)
        elif kind == "ACK":
            op = json.loads(body)
            if op != pending:
                raise AssertionError(f"ACK {op} does not match BEGIN {pending}")
            expected = apply_op(expected, op)
            pending = None
            acked += 1
    return expected, pending, acked


def actual_state(state: Path) -> tuple[dict[str, dict], list[str]]:
    """Open the state dir as a restart would; return items and integrity problems."""
    from lensbox.device.bundle.reader import open_bundle
    from lensbox.device.live.journal import read_journal
    from lensbox.device.live.slot import BundleSlot

    problems: list[str] = []
    slot = BundleSlot(state / "bundles" / "default")
    current = slot.current()
    bundle = open_bundle(current)  # raises if a file is missing or has the wrong size
    if bundle.vectors.shape != (bundle.manifest["counts"]["vectors"], DIMS):
        problems.append(f"vector shape {bundle.vectors.shape}")
    manager = open_manager(state, background=False)
    try:
        cat = manager["default"]
        journal = read_journal(state / "journal" / "default.journal")
        if journal is None:
            problems.append("journal missing after open")
        items: dict[str, dict] = {}
        for _row, item in cat.all_items():
            if item["id"] in items:
                problems.append(f"duplicate item {item['id']}")
            items[item["id"]] = {"v": int(item["custom_content"][1:]), "title": item["title"]}
        for item_id, info in items.items():
            vec = cat.item_vectors(item_id)
            want = unit(pooled_for(item_id, info["v"]))
            if vec is None or len(vec) != 1 or float(unit(vec)[0] @ want) < 0.98:
                problems.append(f"{item_id}: stored vector is not version {info['v']}'s")
        sample = sorted(items)[:: max(1, len(items) // 15)]
        for item_id in sample:
            query = unit(pooled_for(item_id, items[item_id]["v"]))[None]
            hits, _ = cat.search_vectors(query, 1)
            if not hits or hits[0].id != item_id:
                found = hits[0].id if hits else None
                problems.append(f"{item_id}: exact self-search found {found}")
    finally:
        manager.close()
    return items, problems


def run_trial(
    state: Path, templates: Path, expected: dict, seed: int, trial: int, delay: float
) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--driver",
        str(state),
        str(templates),
        str(seed),
        str(trial),
    ]
    with tempfile.TemporaryFile("w+") as errfile:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, text=True)
        early = ""  # a compaction may start (CSTART) before READY
        ready = proc.stdout.readline()
        while ready.startswith(("CSTART", "CEND")):
            early += ready
            ready = proc.stdout.readline()
        if ready.startswith("READY"):
            time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        out = early + proc.stdout.read()  # same buffered reader: nothing read ahead is lost
        proc.wait()
        errfile.seek(0)
        err = errfile.read()
    if not ready.startswith("READY"):
        return {
            "trial": trial,
            "ok": False,
            "problems": [
                f"driver did not start (exit {proc.returncode}, said {ready!r}): {err[-1500:]}"
            ],
        }
    complete = out.split("\n")[:-1]  # a line cut short by the kill acknowledges nothing
    lines = [ln for ln in complete if ln.startswith(("BEGIN", "ACK"))]
    compacting = sum(ln.startswith("CSTART") for ln in complete) > sum(
        ln.startswith("CEND") for ln in complete
    )
    want, pending, acked = replay_log(expected, lines)
    got, problems = actual_state(state)
    options = [want] + ([apply_op(want, pending)] if pending else [])
    if got not in options:
        missing = sorted(set(want) - set(got))[:5]
        extra = sorted(set(got) - set(want))[:5]
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:5]
        problems.append(
            f"items differ from the acknowledged set: missing {missing}, "
            f"extra {extra}, changed {wrong} (pending {pending})"
        )
    if proc.returncode != -signal.SIGKILL:
        problems.append(f"driver exited by itself ({proc.returncode}): {err[-800:]}")
    return {
        "trial": trial,
        "ok": not problems,
        "problems": problems,
        "acked": acked,
        "pending": pending["op"] if pending else None,
        "items": len(got),
        "in_compaction": compacting,
        "delay_s": round(delay, 3),
        "state": got,
    }


def setup(workdir: Path) -> tuple[Path, Path]:
    from lensbox.device.live.slot import BundleSlot

    templates = workdir / "templates"
    for name, count in TEMPLATES.items():
        if not (templates / name / "manifest.json").is_file():
            make_template(templates / name, name, count)
    state = workdir / "state"
    shutil.rmtree(state, ignore_errors=True)
    BundleSlot(state / "bundles" / "default").install_copy(templates / "base")
    return state, templates


def run_trials(
    trials: int, seed: int, workdir: Path, min_delay: float = 0.05, max_delay: float = 1.0
) -> dict:
    state, templates = setup(workdir)
    rng = random.Random(seed)
    expected = template_state("base")
    results = []
    started = time.perf_counter()
    for trial in range(trials):
        res = run_trial(
            state,
            templates,
            expected,
            rng.randrange(1 << 30),
            trial,
            rng.uniform(min_delay, max_delay),
        )
        expected = res.pop("state", expected)  # the next trial starts from what survived
        results.append(res)
        if not res["ok"]:
            break
    pendings: dict[str, int] = {}
    for r in results:
        pendings[str(r.get("pending"))] = pendings.get(str(r.get("pending")), 0) + 1
    return {
        "trials": len(results),
        "failed": [r for r in results if not r["ok"]],
        "acknowledged_changes": sum(r.get("acked", 0) for r in results),
        "killed_during": pendings,
        "killed_inside_a_compaction": sum(bool(r.get("in_compaction")) for r in results),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default=None, help="scratch dir (default: a temp dir)")
    p.add_argument(
        "--driver", nargs=4, metavar=("STATE", "TEMPLATES", "SEED", "TRIAL"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.driver:
        state, templates, seed, trial = args.driver
        driver(Path(state), Path(templates), int(seed), int(trial))
        return 0
    with tempfile.TemporaryDirectory(prefix="lensbox-crash-") as tmp:
        summary = run_trials(args.trials, args.seed, Path(args.workdir or tmp))
    print(json.dumps(summary, indent=2))
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
