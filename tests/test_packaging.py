"""Packaging: one lensbox namespace, every subpackage listed, the model and labels shipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {
    "device": "lensbox.device",
    "index_builder": "lensbox.index_builder",
    "models": "lensbox.models",
}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_only_the_lensbox_namespace_is_installed() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert all(pkg.startswith("lensbox.") for pkg in setuptools["packages"])
    assert set(setuptools["package-dir"]) == set(MAPPING.values())


def test_device_runtime_needs_no_torch_or_tensorflow() -> None:
    deps = " ".join(_pyproject()["project"]["dependencies"]).lower()
    assert "torch" not in deps and "tensorflow" not in deps


def test_model_files_ship_with_the_package() -> None:
    from lensbox.models import LABELS_PATH, MODEL_PATH

    assert MODEL_PATH.is_file() and MODEL_PATH.suffix == ".tflite"
    assert len(LABELS_PATH.read_text().splitlines()) == 1000


def test_page_files_are_package_data() -> None:
    """pyproject's package-data covers every file of the web page (device/api/static/)."""
    import fnmatch

    patterns = _pyproject()["tool"]["setuptools"]["package-data"]["lensbox.device"]
    files = [p for p in (ROOT / "device/api/static").iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.js", "style.css"}
    for path in files:
        rel = path.relative_to(ROOT / "device").as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel


@pytest.mark.slow
def test_the_wheel_carries_model_page_and_license(tmp_path: Path) -> None:
    """What a box installs: build the wheel from a copy of the tree (pip, as the systemd
    README says) and look inside."""
    src = tmp_path / "src"
    for name in ("device", "index_builder", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(ROOT / name, src / name)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "out"), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp_path / "out").glob("lensbox-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "lensbox/device/api/static/index.html",
        "lensbox/device/api/static/app.js",
        "lensbox/device/api/static/style.css",
        "lensbox/device/api/openapi.yaml",
        "lensbox/models/efficientnet_lite0_int8.tflite",
        "lensbox/models/imagenet_labels.txt",
    ):
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
