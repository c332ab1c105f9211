"""Nothing a user owns is replaced: `build -o` and `deploy --to` only ever replace bundles.

Each case runs the real `lensbox` command and then checks that every file that was there
before is still there with the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lensbox.device.bundle.atomic import UnsafeTargetError, check_replaceable

from .conftest import SAMPLE_CATALOG

LENSBOX = [sys.executable, "-m", "lensbox.device.cli"]


def _photos(root: Path) -> Path:
    folder = root / "photos"
    folder.mkdir()
    for name in ("coffee", "rocket", "chelsea-cat"):
        shutil.copy(SAMPLE_CATALOG / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "notes.txt").write_text("my notes")
    return folder


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LENSBOX, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("output", ["photos", ".", "photos/sub", "other-folder", "a-file.txt"])
def test_build_refuses_to_replace_what_is_not_a_bundle(tmp_path: Path, output: str) -> None:
    photos = _photos(tmp_path)
    (tmp_path / "photos" / "sub").mkdir()
    (tmp_path / "photos" / "sub" / "keep.txt").write_text("keep")
    (tmp_path / "other-folder").mkdir()
    (tmp_path / "other-folder" / "thesis.docx").write_bytes(b"years of work")
    (tmp_path / "a-file.txt").write_text("a file")
    before = _snapshot(tmp_path)
    result = _run(
        ["build", str(photos), "-o", output, "--workers", "1", "--no-cache"], cwd=tmp_path
    )
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()
    assert message and "Traceback" not in result.stderr
    assert "lensbox only replaces its own bundles" in result.stderr or "overlaps" in result.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_build_replaces_its_own_bundle_and_an_empty_folder(tmp_path: Path) -> None:
    photos = _photos(tmp_path)
    (tmp_path / "empty").mkdir()
    for output in ("empty", "catalog.lbx", "catalog.lbx"):  # the second time over a bundle
        result = _run(
            ["build", str(photos), "-o", output, "--workers", "1", "--no-cache"], cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / output / "manifest.json").is_file()
    assert (photos / "notes.txt").read_text() == "my notes"


def test_deploy_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path, sample_bundle: Path) -> None:
    target = tmp_path / "documents"
    target.mkdir()
    (target / "letter.txt").write_text("dear")
    before = _snapshot(tmp_path)
    result = _run(["deploy", str(sample_bundle), "--to", str(target), "--no-verify"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "lensbox only replaces its own bundles" in result.stderr
    assert _snapshot(tmp_path) == before


def test_deploy_refuses_a_target_inside_the_bundle(tmp_path: Path, sample_bundle: Path) -> None:
    bundle = tmp_path / "b.lbx"
    shutil.copytree(sample_bundle, bundle)
    before = _snapshot(tmp_path)
    result = _run(["deploy", str(bundle), "--to", str(bundle / "slot"), "--no-verify"], tmp_path)
    assert result.returncode != 0 and "overlaps" in result.stderr
    assert _snapshot(tmp_path) == before


def test_deploy_over_a_plain_bundle_directory_still_works(
    tmp_path: Path, sample_bundle: Path
) -> None:
    target = tmp_path / "slot"
    shutil.copytree(sample_bundle, target)
    result = _run(["deploy", str(sample_bundle), "--to", str(target), "--no-verify"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert target.is_symlink() and (target / "manifest.json").is_file()


def test_check_replaceable_rules(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "manifest.json").write_text('{"format": "lensbox-bundle"}')
    check_replaceable(tmp_path / "bundle")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(UnsafeTargetError):
        check_replaceable(tmp_path / "fake")
    with pytest.raises(UnsafeTargetError, match="overlaps"):
        check_replaceable(tmp_path / "bundle", inputs=[tmp_path])
    os.symlink(tmp_path / "fake", tmp_path / "link")
    with pytest.raises(UnsafeTargetError):
        check_replaceable(tmp_path / "link")
