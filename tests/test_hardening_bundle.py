"""Issue 16, items 1, 4, 13: a corrupt bundle is refused before anything maps it.

A truncated or garbage ``index.ann`` used to crash `lensbox serve` in native code on every
start (a systemd restart loop) and `lensbox deploy` instead of being refused; a manifest
with wrong counts, or ``vectors.i8`` of random bytes, used to be accepted. Each case here
uses a real copy of a real bundle and the real `lensbox` command line.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lensbox.device.bundle import BundleError, open_bundle
from lensbox.device.bundle.format import ANNOY_INDEX, ITEMS_DB, MANIFEST, VECTORS

LENSBOX = [sys.executable, "-m", "lensbox.device.cli"]


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _edit(path: Path, drop_checksums: bool = False, **sections) -> None:
    manifest = _manifest(path)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(manifest.get(key), dict):
            manifest[key].update(value)
        elif value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    if drop_checksums:
        manifest.pop("checksums", None)
    (path / MANIFEST).write_text(json.dumps(manifest))


def _deploy(bundle: Path, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LENSBOX, "deploy", str(bundle), "--to", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_build_records_a_checksum_of_every_part(sample_bundle: Path) -> None:
    sums = _manifest(sample_bundle)["checksums"]
    files = {p.name for p in sample_bundle.iterdir() if p.is_file()} - {MANIFEST}
    assert set(sums) == files and ANNOY_INDEX in sums and VECTORS in sums


@pytest.mark.parametrize("checksums", [True, False], ids=["checksummed", "legacy"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "zeros"])
def test_a_torn_annoy_file_is_refused_without_mapping_it(
    copy: Path, damage: str, checksums: bool
) -> None:
    """Without checksums (older bundles) the file's node structure is checked in Python:
    every child reference inside the file, every leaf an item."""
    ann = copy / ANNOY_INDEX
    data = ann.read_bytes()
    rng = np.random.default_rng(7)
    if damage == "truncated":
        ann.write_bytes(data[: len(data) // 2 + 5])
    elif damage == "garbage":
        ann.write_bytes(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    else:
        ann.write_bytes(bytes(len(data)))
    if not checksums:
        _edit(copy, drop_checksums=True)
    with pytest.raises(BundleError, match=r"index\.ann|rebuild|corrupt"):
        open_bundle(copy)


def test_deploy_refuses_a_torn_annoy_file_and_keeps_the_slot(copy: Path, tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    good = _deploy(copy, slot)
    assert good.returncode == 0, good.stderr
    ann = copy / ANNOY_INDEX
    ann.write_bytes(ann.read_bytes()[:-100])
    bad = _deploy(copy, slot)
    assert bad.returncode != 0 and bad.returncode > 0  # refused, not killed by a signal
    assert "refused" in bad.stderr and "Traceback" not in bad.stderr
    open_bundle(slot)  # the previous deployment is still whole


@pytest.mark.parametrize("items", [-5, 10**9, 17, 19, "18"])
def test_wrong_item_counts_are_refused(copy: Path, items: object) -> None:
    _edit(copy, counts={"items": items})
    with pytest.raises(BundleError, match=r"counts|items"):
        open_bundle(copy)


def test_random_vectors_of_the_right_size_are_refused(copy: Path) -> None:
    size = (copy / VECTORS).stat().st_size
    (copy / VECTORS).write_bytes(np.random.default_rng(1).bytes(size))
    with pytest.raises(BundleError, match="corrupt"):
        open_bundle(copy)  # by its checksum
    _edit(copy, drop_checksums=True)
    with pytest.raises(BundleError, match="unit descriptors"):
        open_bundle(copy)  # by what the vectors are


def test_checksums_catch_any_edited_part(copy: Path) -> None:
    report = copy / "build_report.json"
    report.write_text(report.read_text() + " ")
    with pytest.raises(BundleError, match=r"build_report\.json is corrupt"):
        open_bundle(copy)


@pytest.mark.parametrize("case", ["sqlite", "no_descriptor", "bad_json"])
def test_deploy_explains_instead_of_a_traceback(copy: Path, tmp_path: Path, case: str) -> None:
    if case == "sqlite":
        db = copy / ITEMS_DB
        db.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
        _edit(copy, drop_checksums=True)
    elif case == "no_descriptor":
        _edit(copy, descriptor=None)
    else:
        (copy / MANIFEST).write_text('{"format": "lensbox-bundle", "format_version": 1, ')
    for extra in ([], ["--no-verify"]):
        res = subprocess.run(
            [*LENSBOX, "deploy", str(copy), "--to", str(tmp_path / "slot"), *extra],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 1, res.stderr
        assert "refused" in res.stderr or "manifest" in res.stderr
        assert "Traceback" not in res.stderr, res.stderr


def test_items_db_must_match_the_counts(copy: Path) -> None:
    conn = sqlite3.connect(copy / ITEMS_DB)
    conn.execute("DELETE FROM items WHERE row = 3")
    conn.commit()
    conn.close()
    _edit(copy, drop_checksums=True)
    with pytest.raises(BundleError, match=ITEMS_DB):
        open_bundle(copy)


@pytest.mark.slow
def test_serve_survives_a_corrupt_deployed_bundle_on_every_start(
    copy: Path, sample_bundle: Path, tmp_path: Path
) -> None:
    """The bundle in the slot is torn (a copy by hand, bypassing deploy): `lensbox serve`
    starts anyway, answers /healthz and reports the refusal on /readyz; twice in a row (a
    restart under systemd meets the same files)."""
    import requests

    slot = tmp_path / "bundles" / "default"
    assert _deploy(sample_bundle, slot).returncode == 0
    current = slot.resolve()
    ann = current / ANNOY_INDEX
    ann.write_bytes(ann.read_bytes()[: ann.stat().st_size // 3])
    conf = tmp_path / "lensbox.toml"
    conf.write_text(
        f'[bundles]\ndefault = "{slot}"\n[state]\ndir = "{tmp_path / "state"}"\n'
        "watch_interval_seconds = 0\n[server]\nport = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LENSBOX", "NOTIFY"))}
    for _start in range(2):
        proc = subprocess.Popen(
            [*LENSBOX, "serve", "--config", str(conf), "--interpreters", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            assert "serving" in line, proc.stderr.read() if proc.poll() is not None else line
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
            ready = requests.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert proc.returncode == 0, proc.stderr.read()


@pytest.mark.parametrize(
    "edit",
    [
        {"index": {"metric": "euclidean"}},
        {"index": {"metric": "cosine"}},
        {"descriptor": {"dims": 0}},
        {"index": {"dims": 17}},
    ],
)
def test_a_hand_edited_manifest_cannot_make_annoy_misread_its_file(copy: Path, edit: dict) -> None:
    """The manifest is not covered by its own checksums: with every part intact, a metric
    or dims that does not match the index file is still refused before Annoy maps it."""
    _edit(copy, **edit)
    with pytest.raises(BundleError):
        open_bundle(copy)


CORRUPT_CHILD = r"""
import json, random, shutil, sys
from pathlib import Path
import numpy as np
from lensbox.device.bundle import BundleError, open_bundle

src, work, trials = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rng = random.Random(16)
original = (src / "index.ann").read_bytes()
refused = served = 0
for trial in range(trials):
    data = bytearray(original)
    for _ in range(rng.choice([1, 2, 8, 64])):
        pos = rng.randrange(len(data))
        data[pos] = rng.randrange(256) if rng.random() < 0.5 else data[pos] ^ 0x80
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data))]
    (work / "index.ann").write_bytes(bytes(data))
    try:
        bundle = open_bundle(work)
    except BundleError:
        refused += 1
        continue
    served += 1
    index = bundle.index
    for i in range(0, len(bundle.vectors), 3):
        rows = index.get_nns_by_item(i, 5)
        assert all(0 <= r < len(bundle.vectors) for r in rows), rows
        q = np.random.default_rng(i).standard_normal(bundle.index_dims).tolist()
        rows = index.get_nns_by_vector(q, 5, search_k=200)
        assert all(0 <= r < len(bundle.vectors) for r in rows), rows
    index.unload()
print(json.dumps({"refused": refused, "served": served}))
"""


def test_no_corruption_of_an_unchecksummed_annoy_file_crashes_the_process(
    copy: Path, tmp_path: Path
) -> None:
    """Hundreds of random corruptions (byte flips, truncations) of a bundle's index.ann
    without checksums, in a child process: each is refused or served safely (every
    neighbour an item of the bundle); the process never dies from a signal."""
    _edit(copy, drop_checksums=True)
    res = subprocess.run(
        [sys.executable, "-c", CORRUPT_CHILD, str(copy), str(copy), "300"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    # both paths taken: without the node scan the same trials die of SIGSEGV
    assert counts["refused"] + counts["served"] == 300
    assert counts["refused"] > 0 and counts["served"] > 0, counts
