"""`lensbox info`: the manifest, and whether *this* device can serve the bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lensbox.models import model_sha256


def info(bundle: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lensbox.device.cli", "info", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def checks(out: subprocess.CompletedProcess) -> dict[str, dict]:
    device = json.loads(out.stdout)["device"]
    return {c["name"]: c for c in device["checks"]}


def test_a_good_bundle_can_be_served_here(sample_bundle: Path) -> None:
    out = info(sample_bundle)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["counts"]["items"] == 18 and body["disk_bytes"] > 0  # the manifest, as before
    device = body["device"]
    assert device["can_serve"] is True
    assert device["model_sha256"] == model_sha256() == body["model"]["sha256"]
    assert device["runtime"] in ("ai-edge-litert", "tflite-runtime")
    assert {n: c["ok"] for n, c in checks(out).items()} == {
        "bundle": True,
        "runtime": True,
        "model": True,
        "self_test": True,
    }
    assert "can serve it" in out.stderr and "matches" in out.stderr


def test_a_bundle_built_with_another_model_is_refused(sample_bundle: Path, tmp_path: Path):
    copy = tmp_path / "other-model.lbx"
    shutil.copytree(sample_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = info(copy)
    assert out.returncode == 1
    assert json.loads(out.stdout)["model"]["sha256"] == "0" * 64  # manifest still shown
    found = checks(out)
    assert found["model"]["ok"] is False and "000000000000" in found["model"]["detail"]
    assert found["self_test"]["ok"] is None  # not attempted
    assert out.stderr.startswith("lensbox: error:") and "cannot serve" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "rebuild" in out.stderr


def test_a_device_without_a_tflite_runtime_cannot_serve(sample_bundle: Path, tmp_path: Path):
    """Both runtimes made unimportable for the child process (as on a box where neither
    pip package is installed): info must say so instead of passing."""
    shadow = tmp_path / "no-runtimes"
    for package in ("ai_edge_litert", "tflite_runtime"):
        (shadow / package).mkdir(parents=True)
        (shadow / package / "__init__.py").write_text(
            f"raise ImportError('{package} is not installed on this device')\n"
        )
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH", "")) if p)
    out = info(sample_bundle, {"PYTHONPATH": path, "LENSBOX_RUNTIME": "auto"})
    assert out.returncode == 1, out.stdout
    found = checks(out)
    assert found["runtime"]["ok"] is False and "no TFLite runtime" in found["runtime"]["detail"]
    assert found["bundle"]["ok"] is True and found["model"]["ok"] is True
    assert json.loads(out.stdout)["device"]["can_serve"] is False
    assert "runtime" in out.stderr and "pip install ai-edge-litert" in out.stderr


def test_an_incomplete_bundle_cannot_be_served(sample_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "broken.lbx"
    shutil.copytree(sample_bundle, copy)
    (copy / "vectors.i8").unlink()
    out = info(copy)
    assert out.returncode == 1
    found = checks(out)
    assert found["bundle"]["ok"] is False and "vectors.i8 is missing" in found["bundle"]["detail"]
    assert "Traceback" not in out.stderr


def test_not_a_bundle_is_one_line_error(tmp_path: Path) -> None:
    out = info(tmp_path / "nowhere.lbx")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "lensbox build" in out.stderr
