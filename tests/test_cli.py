"""The `lensbox` command as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
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


def test_search_a_folder_searches_every_photo_in_it(sample_bundle: Path, tmp_path: Path) -> None:
    found = lensbox(
        "search", str(sample_bundle), str(SAMPLE_QUERIES), "--json", "-k", "1", "--threads", "1"
    )
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    photos = sorted(SAMPLE_QUERIES.glob("*.jpg"))
    assert [Path(r["query"]).name for r in results] == [p.name for p in photos]
    tops = {Path(r["query"]).name: r["hits"][0]["id"] for r in results}
    assert tops["rocket-photo.jpg"] == "rocket" and tops["coffee-photo.jpg"] == "coffee"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    empty = lensbox("search", str(sample_bundle), str(tmp_path / "empty"))
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    assert "no photos" in empty.stderr and "IsADirectoryError" not in empty.stderr


SEARCH = (sys.executable, "-m", "lensbox.device.cli", "search", "--threads", "1")


def test_search_into_a_closed_pipe_is_not_a_traceback(sample_bundle: Path) -> None:
    """`lensbox search ... | head -1`: the reader is gone before the first line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [*SEARCH, str(sample_bundle), str(SAMPLE_QUERIES / "coffee-photo.jpg")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def _damaged_copy(sample_bundle: Path, tmp_path: Path, how: str) -> Path:
    bundle = tmp_path / f"{how}.lbx"
    shutil.copytree(sample_bundle, bundle)
    db = bundle / "items.sqlite"
    if how == "truncated":
        db.write_bytes(db.read_bytes()[:4096])  # the schema page only
    elif how == "garbage":
        db.write_bytes(os.urandom(db.stat().st_size))
    else:  # another bundle's items: a valid database that does not match the manifest
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM items WHERE id = 'coffee'")
        conn.close()
    return bundle


def test_a_damaged_items_db_makes_search_and_info_fail_clearly(
    sample_bundle: Path, tmp_path: Path
) -> None:
    query = str(SAMPLE_QUERIES / "coffee-photo.jpg")
    for how in ("truncated", "garbage", "mismatched"):
        bundle = _damaged_copy(sample_bundle, tmp_path, how)
        for args in (("info", str(bundle)), ("search", str(bundle), query)):
            out = lensbox(*args)
            assert out.returncode == 1, (how, args, out.stdout)
            assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
            assert "the bundle is damaged" in out.stderr and "items.sqlite" in out.stderr


def test_config_check_without_a_file_says_the_defaults_are_in_force(tmp_path: Path) -> None:
    nowhere = tmp_path / "lensbox.toml"
    env = {**os.environ, "LENSBOX_CONFIG": str(nowhere)}
    env = {k: v for k, v in env.items() if not k.startswith("LENSBOX__")}
    out = subprocess.run(
        [sys.executable, "-m", "lensbox.device.cli", "config", "check", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0
    assert "no config file found" in out.stderr and str(nowhere) in out.stderr
    assert "defaults are in force" in out.stderr
    nowhere.write_text("[search]\nthreads = 1\n")
    found = subprocess.run(
        [sys.executable, "-m", "lensbox.device.cli", "config", "check", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert found.returncode == 0 and "no config file found" not in found.stderr
    assert f"{nowhere}: OK" in found.stderr


def test_search_decodes_a_large_photo_as_the_daemon_does(catalog, tmp_path: Path) -> None:
    """`lensbox search` on a 3200x2400 photo: decoded at 1/2, the same top item as the
    640x480 original, and the subject, size and verified corners in the photo's pixels."""
    from PIL import Image

    from lensbox.device.cli import _search_file
    from lensbox.device.embedding.subject import Box

    small = SAMPLE_QUERIES / "coffee-photo.jpg"
    big = tmp_path / "coffee-big.jpg"
    Image.open(small).resize((3200, 2400), Image.Resampling.BICUBIC).save(big, quality=92)
    a = _search_file(catalog, str(small), 5, 0, None, None)
    b = _search_file(catalog, str(big), 5, 0, None, None)
    assert a.hits[0].id == b.hits[0].id == "coffee"
    assert b.query.size == (3200, 2400)
    sa, sb = a.query.subjects[0], b.query.subjects[0]
    assert abs(sb.x - 5 * sa.x) < 130 and abs(sb.width - 5 * sa.width) < 130
    if a.hits[0].region and b.hits[0].region:
        for pa, pb in zip(a.hits[0].region, b.hits[0].region):
            assert abs(pb[0] - 5 * pa[0]) < 130 and abs(pb[1] - 5 * pa[1]) < 130
    r = _search_file(catalog, str(big), 5, 0, None, Box(500, 400, 2200, 1600))
    assert r.hits[0].id == "coffee" and r.query.region == Box(500, 400, 2200, 1600)
    with pytest.raises(ValueError, match="outside"):
        _search_file(catalog, str(big), 5, 0, None, Box(5000, 10, 100, 100))
