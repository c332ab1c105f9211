"""Checks `make arm-check` runs on each side (emulated arm64 and x86) with the installed lensbox.

Only the device's own dependencies are used (no requests, no pytest): this runs in the venv a
Pi would have after `pip install .`.

    python arm_check.py versions
    python arm_check.py ops --runtime ai-edge-litert
    python arm_check.py descriptors OUT.npz --runtime tflite-runtime
    python arm_check.py compare X86.npz ARM.npz
    python arm_check.py bundles A.lbx B.lbx           # vectors.i8 row by row
    python arm_check.py serve BUNDLE QUERY EXPECTED_ID
    python arm_check.py kiosk BUNDLE QUERY EXPECTED_ID
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np

PACKAGES = (
    "lensbox",
    "numpy",
    "opencv-python-headless",
    "ai-edge-litert",
    "tflite-runtime",
    "annoy",
    "pillow",
    "flask",
    "waitress",
    "pydantic",
    "pyserial",
)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def cmd_versions(_: argparse.Namespace) -> int:
    import cv2

    from lensbox.device.embedding.runtime import available_runtimes

    info = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "glibc": "-".join(platform.libc_ver()),
        "cv2": cv2.__version__,
        "runtimes": available_runtimes(),
        **{name: _version(name) for name in PACKAGES},
    }
    print(json.dumps(info))
    return 0


def cmd_descriptors(args: argparse.Namespace) -> int:
    """Pooled and final (identity) descriptors of every catalog photo, full view only."""
    from lensbox.device.embedding.descriptor import identity_descriptor
    from lensbox.device.embedding.embedder import Embedder
    from lensbox.device.embedding.model import TFLiteModel
    from lensbox.device.imaging.decode import load_image
    from lensbox.models import MODEL_PATH

    photos = sorted(p for p in Path(args.catalog).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    embedder = Embedder(TFLiteModel(MODEL_PATH, num_threads=1, runtime=args.runtime))
    started = time.monotonic()
    pooled = np.stack([embedder.embed(load_image(p)).pooled[0] for p in photos])
    seconds = time.monotonic() - started
    np.savez(
        args.out,
        names=np.array([p.name for p in photos]),
        pooled=pooled,
        descriptor=identity_descriptor(pooled),
        runtime=np.array(args.runtime),
        machine=np.array(platform.machine()),
    )
    print(
        f"{platform.machine()} {args.runtime} {_version(args.runtime)}: {len(photos)} photos, "
        f"{seconds / len(photos) * 1000:.0f} ms per photo -> {args.out}"
    )
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    """Create and run the interpreter with the runtime's log on: which ops XNNPACK took.

    A runtime that refuses an op on this CPU says so here (unsupported op, a delegate that
    leaves nodes to the reference kernels, more than one partition) or crashes here.
    """
    import importlib

    modules = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}
    if args.model:  # a venv without lensbox (the litert-2 probe)
        model = args.model
    else:
        from lensbox.models import MODEL_PATH

        model = str(MODEL_PATH)
    module = importlib.import_module(modules[args.runtime] + ".interpreter")
    interp = module.Interpreter(model_path=model, num_threads=1)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interp.invoke()
    ops: dict[str, int] = {}
    for op in interp._get_ops_details():
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    listed = ", ".join(f"{name} x{n}" for name, n in sorted(ops.items()))
    print(f"{platform.machine()} {args.runtime} {_version(args.runtime)}: invoke ok; ops {listed}")
    return 0


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def cmd_compare(args: argparse.Namespace) -> int:
    a, b = np.load(args.a), np.load(args.b)
    if list(a["names"]) != list(b["names"]):
        print("compare: the two files hold different photos", file=sys.stderr)
        return 1
    label = f"{a['machine']}/{a['runtime']} vs {b['machine']}/{b['runtime']}"
    worst = 1.0
    for key in ("pooled", "descriptor"):
        cos = _cosines(a[key].astype(np.float64), b[key].astype(np.float64))
        worst = min(worst, float(cos.min()))
        low = a["names"][int(cos.argmin())]
        print(
            f"{label} {key:10s}: cosine min {cos.min():.6f} ({low}) mean {cos.mean():.6f} "
            f"over {len(cos)} photos"
        )
    ok = worst >= args.min
    print(f"{label}: {'PASS' if ok else 'FAIL'} (min {worst:.6f}, need >= {args.min})")
    return 0 if ok else 1


def _vectors(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    dims = int(manifest["descriptor"]["dims"])
    vectors = np.fromfile(bundle / "vectors.i8", dtype=np.int8).reshape(-1, dims)
    return vectors, np.fromfile(bundle / "vector_items.i32", dtype=np.int32)


def cmd_bundles(args: argparse.Namespace) -> int:
    (va, ia), (vb, ib) = _vectors(Path(args.a)), _vectors(Path(args.b))
    if va.shape != vb.shape or not np.array_equal(ia, ib):
        print(f"bundles: different layout {va.shape} vs {vb.shape}", file=sys.stderr)
        return 1
    cos = _cosines(va.astype(np.float64), vb.astype(np.float64))
    same = int((va == vb).all(axis=1).sum())
    print(
        f"bundle vectors.i8 {args.a} vs {args.b}: cosine min {cos.min():.6f} mean "
        f"{cos.mean():.6f}, {same}/{len(cos)} rows byte-identical"
    )
    return 0 if cos.min() >= args.min else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lensbox(*args: str) -> list[str]:
    return [sys.executable, "-m", "lensbox.device.cli", *args]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def cmd_serve(args: argparse.Namespace) -> int:
    """`lensbox serve` answers one POST /v1/search with the expected item first."""
    port = _free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives the server, read on failure
    started = time.monotonic()
    proc = subprocess.Popen(_lensbox("serve", args.bundle, "--port", str(port)), stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                print(log.read().decode(errors="replace")[-3000:], file=sys.stderr)
                print(f"serve: never ready (exit {proc.poll()})", file=sys.stderr)
                return 1
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        ready = time.monotonic() - started
        body = Path(args.query).read_bytes()
        request = urllib.request.Request(
            f"{base}/v1/search", data=body, headers={"Content-Type": "image/jpeg"}
        )
        t = time.monotonic()
        with urllib.request.urlopen(request, timeout=args.timeout) as r:
            answer = json.loads(r.read())
        took = time.monotonic() - t
    finally:
        _stop(proc)
    hits = answer.get("results") or answer.get("hits") or []
    top = hits[0] if hits else {}
    top_id = top.get("id") or top.get("item_id")
    print(
        f"serve: ready in {ready:.1f}s; POST /v1/search {Path(args.query).name} -> "
        f"{top_id} score {top.get('score')} verdict {top.get('verdict')} in {took * 1000:.0f} ms"
    )
    return 0 if top_id == args.expected else 1


def cmd_kiosk(args: argparse.Namespace) -> int:
    """`lensbox kiosk` with a video file as camera answers LOOKUP on a pty."""
    import cv2

    from lensbox.device.capture.testing import PtyPort, write_video

    work = Path(tempfile.mkdtemp(prefix="arm-kiosk-"))
    video = write_video(work / "cam.avi", [cv2.imread(args.query)] * 5)
    config = work / "lensbox.toml"
    config.write_text("[kiosk]\nmin_score = 0.5\n\n[kiosk.trigger]\nmin_gap_ms = 0\n")
    port = PtyPort(work / "ttyUSB0")
    log = (work / "kiosk.log").open("wb")
    started = time.monotonic()
    cmd = ("kiosk", args.bundle, "--camera", str(video), "--serial", str(port.path))
    proc = subprocess.Popen(_lensbox(*cmd, "--config", str(config)), stderr=log)
    try:
        deadline = time.monotonic() + args.timeout
        while port.ask("PING", timeout=1.0) != "PONG":
            if proc.poll() is not None or time.monotonic() > deadline:
                print((work / "kiosk.log").read_text()[-3000:], file=sys.stderr)
                print(f"kiosk: never answered PING (exit {proc.poll()})", file=sys.stderr)
                return 1
        ready = time.monotonic() - started
        port.drain(0.5)
        t = time.monotonic()
        answer = port.ask("LOOKUP 1", timeout=args.timeout) or ""
        took = time.monotonic() - t
    finally:
        _stop(proc)
        port.close()
    print(f"kiosk: PONG after {ready:.1f}s; LOOKUP 1 -> {answer!r} in {took * 1000:.0f} ms")
    return 0 if answer.split(" ")[:3] == ["OK", "1", args.expected] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("versions")
    p.set_defaults(func=cmd_versions)
    p = sub.add_parser("ops")
    p.add_argument("--runtime", required=True)
    p.add_argument("--model", help="the .tflite file (default: the installed lensbox's)")
    p.set_defaults(func=cmd_ops)
    p = sub.add_parser("descriptors")
    p.add_argument("out")
    p.add_argument("--runtime", required=True)
    p.add_argument("--catalog", default="examples/sample-catalog")
    p.set_defaults(func=cmd_descriptors)
    for name, func in (("compare", cmd_compare), ("bundles", cmd_bundles)):
        p = sub.add_parser(name)
        p.add_argument("a")
        p.add_argument("b")
        p.add_argument("--min", type=float, default=0.99)
        p.set_defaults(func=func)
    for name, func in (("serve", cmd_serve), ("kiosk", cmd_kiosk)):
        p = sub.add_parser(name)
        p.add_argument("bundle")
        p.add_argument("query")
        p.add_argument("expected")
        p.add_argument("--timeout", type=float, default=600)
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
