"""Packaging: one lensbox namespace, every subpackage listed, the model and labels shipped."""

from __future__ import annotations

import sys
from pathlib import Path

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
