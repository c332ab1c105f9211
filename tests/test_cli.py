"""The `lensbox` command as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import SAMPLE_CATALOG, SAMPLE_QUERIES


def lensbox(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lensbox.device.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_help_explains_every_command() -> None:
    out = lensbox("--help")
    assert out.returncode == 0
    for command in ("build", "search", "info"):
        assert command in out.stdout
    build_help = lensbox("build", "--help").stdout
    assert "manifest" in build_help and "--dims" in build_help


def test_build_then_search_json(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE_CATALOG, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    built = lensbox("build", str(folder), "-o", str(tmp_path / "c.lbx"), "--no-cache", "-q")
    assert built.returncode == 0, built.stderr
    assert "18 items" in built.stdout and "1 skipped" in built.stdout
    assert "broken.jpg" in built.stderr
    found = lensbox(
        "search",
        str(tmp_path / "c.lbx"),
        str(SAMPLE_QUERIES / "rocket-photo.jpg"),
        "--json",
        "-k",
        "2",
        "--threads",
        "1",
    )
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)[0]
    assert result["hits"][0]["id"] == "rocket" and len(result["hits"]) == 2
    table = lensbox("search", str(tmp_path / "c.lbx"), str(SAMPLE_QUERIES / "rocket-photo.jpg"))
    assert "rocket" in table.stdout and "score" in table.stdout
    info = lensbox("info", str(tmp_path / "c.lbx"))
    assert json.loads(info.stdout)["counts"]["items"] == 18


def test_errors_are_one_line_and_name_the_file(tmp_path: Path) -> None:
    missing = lensbox("build", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.lbx"))
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "nowhere" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = lensbox("build", str(tmp_path / "empty"), "-o", str(tmp_path / "x.lbx"))
    assert empty.returncode == 1 and "empty" in empty.stderr
    nobundle = lensbox("search", str(tmp_path / "x.lbx"), str(SAMPLE_QUERIES / "coffee-photo.jpg"))
    assert nobundle.returncode == 1 and "lensbox build" in nobundle.stderr
    assert not (tmp_path / "x.lbx").exists()


def test_search_reports_a_bad_query_and_fails(sample_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "q.jpg"
    bad.write_text("not a photo")
    out = lensbox("search", str(sample_bundle), str(bad))
    assert out.returncode == 1 and "q.jpg" in out.stderr and "Traceback" not in out.stderr
