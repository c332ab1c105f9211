"""Catalog files as people write them (issue 11, section 5), through the real `lensbox`
command: category names, extra columns, titles in the table, skipped photos and --strict,
and `lensbox add` / `lensbox remove` against a real daemon and its state directory."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .api_support import running_server
from .conftest import SAMPLE_CATALOG, SAMPLE_QUERIES

SPACE = {"astronaut", "rocket", "hubble"}
LEFT_OUT = "chelsea-cat"  # not in the catalog: `lensbox add` adds it


def lensbox(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lensbox.device.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _row(path: Path) -> dict[str, str]:
    name = path.stem
    row = {
        "path": str(path),
        "id": name,
        "title": name.replace("-", " ").title(),
        "category_id": "",
        "price": "1.00",
        "color": "",
    }
    if name == "coffee":
        row.update(title="Morning Coffee", category_id="drinks", price="4.50", color="brown")
    elif name in SPACE:
        row.update(category_id="space", price="99")
    elif name.startswith("card-"):
        row.update(category_id="cards")
    elif name == "clock":
        row.update(category_id="7")  # a plain integer id next to the names
    return row


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The sample catalog (but one photo) as a CSV with category names and extra columns,
    plus a row whose photo is missing; built by the real command."""
    folder = tmp_path_factory.mktemp("named")
    rows = [_row(p) for p in sorted(SAMPLE_CATALOG.glob("*.jpg")) if p.stem != LEFT_OUT]
    ghost = {**_row(SAMPLE_CATALOG / "ghost.jpg"), "path": str(folder / "ghost.jpg")}
    manifest = _write_csv(folder / "catalog.csv", [*rows, ghost])
    out = folder / "named.lbx"
    built = lensbox("build", str(manifest), "-o", str(out), "--no-cache", "-q")
    assert built.returncode == 0, built.stderr
    return out, built


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


# -- category names ---------------------------------------------------------------------
def test_category_names_get_integer_ids_kept_in_the_bundle(named) -> None:
    from lensbox.device.bundle.reader import open_bundle

    bundle, built = named
    # 7 is taken by a plain integer; the names follow it in name order
    assert _manifest(bundle)["categories"] == {"cards": 8, "drinks": 9, "space": 10}
    assert "categories (name=category_id): cards=8, drinks=9, space=10" in built.stdout
    opened = open_bundle(bundle)
    assert opened.item_by_id("coffee")[1]["category_id"] == 9
    assert opened.item_by_id("rocket")[1]["category_id"] == 10
    assert opened.item_by_id("clock")[1]["category_id"] == 7
    assert opened.item_by_id("gravel")[1]["category_id"] is None
    info = lensbox("info", str(bundle))
    assert info.returncode == 0 and json.loads(info.stdout)["categories"]["space"] == 10


def test_search_filters_by_category_name_or_id(named) -> None:
    bundle, _ = named
    query = str(SAMPLE_QUERIES / "rocket-photo.jpg")
    by_name = lensbox("search", str(bundle), query, "--category", "space", "--json", "-k", "5")
    assert by_name.returncode == 0, by_name.stderr
    hits = json.loads(by_name.stdout)[0]["hits"]
    assert hits[0]["id"] == "rocket" and {h["id"] for h in hits} == SPACE
    assert {h["category"] for h in hits} == {"space"} and hits[0]["category_id"] == 10
    by_id = lensbox("search", str(bundle), query, "--category", "9", "--json")
    assert [h["id"] for h in json.loads(by_id.stdout)[0]["hits"]] == ["coffee"]
    unknown = lensbox("search", str(bundle), query, "--category", "toys")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert "no such category" in unknown.stderr and "cards, drinks, space" in unknown.stderr


def test_alibaba_integer_category_id_still_works_and_native_takes_names(named) -> None:
    from .api_support import b64, photo

    bundle, _ = named
    with running_server({"default": bundle}) as srv:
        resp = requests.post(
            f"{srv.url}/",
            json={
                "Action": "SearchImageByPic",
                "InstanceName": "default",
                "PicContent": b64(photo("rocket-photo.jpg")),
                "CategoryId": 10,
                "Num": 10,
            },
            timeout=60,
        )
        # lensbox's own API takes the name or the number
        native = [
            requests.post(
                f"{srv.url}/v1/search",
                json={"base64": b64(photo("rocket-photo.jpg")), "filters": {"category_id": c}},
                timeout=60,
            )
            for c in ("space", 10, "nope")
        ]
    by_name, by_id, unknown = native
    assert by_name.status_code == 200, by_name.text
    assert {h["id"] for h in by_name.json()["hits"]} == SPACE
    assert by_id.json()["hits"] == by_name.json()["hits"]
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "category_id"
    assert "cards, drinks, space" in unknown.json()["error"]["message"]
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert {a["PicName"].rsplit(".", 1)[0] for a in body["Auctions"]} == SPACE
    assert {a["CategoryId"] for a in body["Auctions"]} == {10}
    assert {"Name": "space", "Id": 10} in body["PicInfo"]["AllCategories"]
    assert {"Name": "7", "Id": 7} in body["PicInfo"]["AllCategories"]  # an unnamed id


@pytest.mark.slow
def test_a_rebuild_keeps_the_category_numbers(tmp_path: Path) -> None:
    from lensbox.index_builder.build import BuildSettings, build_bundle

    def rows(**cats: str) -> list[dict[str, str]]:
        return [
            {"path": str(SAMPLE_CATALOG / f"{n}.jpg"), "category_id": c} for n, c in cats.items()
        ]

    out = tmp_path / "c.lbx"
    fast = BuildSettings(cache_dir=None, workers=1)
    first = _write_csv(tmp_path / "a.csv", rows(coffee="toys", rocket="games"))
    build_bundle(first, out, fast, progress=False)
    assert _manifest(out)["categories"] == {"games": 1, "toys": 2}
    # a new name that sorts first must not renumber the others
    second = _write_csv(tmp_path / "b.csv", rows(coffee="toys", rocket="games", clock="aardvark"))
    report = build_bundle(second, out, fast, progress=False)
    assert _manifest(out)["categories"] == {"games": 1, "toys": 2, "aardvark": 3}
    assert report.categories == {"games": 1, "toys": 2, "aardvark": 3}


def test_bad_category_values_name_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "c.jsonl"
    manifest.write_text(
        json.dumps({"path": str(SAMPLE_CATALOG / "coffee.jpg"), "category_id": [1, 2]}) + "\n"
    )
    out = lensbox("build", str(manifest), "-o", str(tmp_path / "x.lbx"), "--no-cache", "-q")
    assert out.returncode == 1 and "c.jsonl:1" in out.stderr and "Traceback" not in out.stderr


# -- extra columns ------------------------------------------------------------------------
@pytest.mark.slow
def test_extra_columns_are_kept_as_filterable_string_attributes(named) -> None:
    from lensbox.device.bundle.reader import open_bundle

    bundle, built = named
    assert "extra columns kept as string attributes: color, price" in built.stdout
    coffee = open_bundle(bundle).item_by_id("coffee")[1]
    assert coffee["str_attrs"] == {"price": "4.50", "color": "brown"}
    assert open_bundle(bundle).item_by_id("gravel")[1]["str_attrs"] == {"price": "1.00"}
    query = str(SAMPLE_QUERIES / "coffee-photo.jpg")
    cheap = lensbox("search", str(bundle), query, "--where", "price=99", "--json", "-k", "10")
    assert cheap.returncode == 0, cheap.stderr
    assert {h["id"] for h in json.loads(cheap.stdout)[0]["hits"]} == SPACE
    both = lensbox(
        "search", str(bundle), query, "--where", "price=4.50", "--where", "color=brown", "--json"
    )
    assert [h["id"] for h in json.loads(both.stdout)[0]["hits"]] == ["coffee"]
    bad = lensbox("search", str(bundle), query, "--where", "price")
    assert bad.returncode == 1 and "KEY=VALUE" in bad.stderr
    # lensbox's own API filters on them with the Alibaba-style expression
    data = Path(query).read_bytes()
    with running_server({"default": bundle}) as srv:
        resp = requests.post(
            f"{srv.url}/v1/search",
            files={"image": ("q.jpg", data)},
            data={"expression": 'price = "99" AND str_attr != "x"', "top_k": "10"},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        assert {h["id"] for h in resp.json()["hits"]} == SPACE
        item = requests.get(f"{srv.url}/v1/items/coffee", timeout=30).json()
        assert item["metadata"]["str_attrs"]["price"] == "4.50"
        # Alibaba's own Filter keeps to its documented fields
        alibaba = requests.post(
            f"{srv.url}/",
            json={
                "Action": "SearchImageByPic",
                "InstanceName": "default",
                "PicContent": base64.b64encode(data).decode(),
                "Filter": 'price = "99"',
            },
            timeout=60,
        )
        assert alibaba.status_code == 400 and alibaba.json()["Code"] == "InvalidFilterClause"


# -- the search table -----------------------------------------------------------------------
def test_the_search_table_shows_the_title(named) -> None:
    bundle, _ = named
    table = lensbox("search", str(bundle), str(SAMPLE_QUERIES / "coffee-photo.jpg"), "-k", "2")
    assert table.returncode == 0, table.stderr
    header, first = table.stdout.splitlines()[1:3]
    assert "title" in header.split()
    assert first.split()[2:6] == ["match", "coffee", "Morning", "Coffee"]


# -- skipped photos -----------------------------------------------------------------------
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


@pytest.mark.slow
def test_skipped_photos_are_listed_in_the_summary(named, tmp_path: Path) -> None:
    _, built = named
    assert "1 skipped" in built.stdout
    assert "skipped 1 photo(s)" in built.stderr and "ghost.jpg" in built.stderr
    assert "No such file" in built.stderr
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee", "rocket"):
        shutil.copy(SAMPLE_CATALOG / f"{name}.jpg", folder)
    (folder / "IMG_0001.HEIC").write_bytes(HEIC)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "notes.txt").write_text("not a photo, not a skip")
    out = lensbox("build", str(folder), "-o", str(tmp_path / "f.lbx"), "--no-cache", "-q")
    assert out.returncode == 0, out.stderr
    assert "2 items" in out.stdout and "2 skipped" in out.stdout
    listed = out.stderr.split("skipped 2 photo(s)", 1)[1].splitlines()[1:]
    assert len(listed) == 2 and "Traceback" not in out.stderr
    assert any("IMG_0001.HEIC" in ln and "convert them to JPEG" in ln for ln in listed)
    assert any("broken.jpg" in ln for ln in listed)
    report = json.loads((tmp_path / "f.lbx" / "build_report.json").read_text())
    assert sorted(Path(s["path"]).name for s in report["skipped"]) == [
        "IMG_0001.HEIC",
        "broken.jpg",
    ]


@pytest.mark.slow
def test_strict_makes_any_skip_an_error_and_keeps_the_old_bundle(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLE_CATALOG / "coffee.jpg", folder)
    out = tmp_path / "s.lbx"
    good = lensbox("build", str(folder), "-o", str(out), "--no-cache", "-q", "--strict")
    assert good.returncode == 0, good.stderr
    before = (out / "manifest.json").read_bytes()
    (folder / "IMG_0002.heic").write_bytes(HEIC)
    strict = lensbox("build", str(folder), "-o", str(out), "--no-cache", "-q", "--strict")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert "--strict" in strict.stderr and "IMG_0002.heic" in strict.stderr
    assert (out / "manifest.json").read_bytes() == before  # nothing was written


# -- lensbox add / remove -------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "lensbox.device.cli", "serve", "--config", str(config)]
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        pytest.fail(line + log.read_text())
    return proc, line.split(" on ")[1].split()[0]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


AUTH = {"Authorization": "Bearer k-1"}


def _top(url: str, query: str) -> dict:
    with open(SAMPLE_QUERIES / query, "rb") as fh:
        resp = requests.post(f"{url}/v1/search", files={"image": fh}, headers=AUTH, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["hits"][0]


@pytest.mark.slow
def test_add_and_remove_against_the_daemon_and_its_state_dir(named, tmp_path: Path) -> None:
    from lensbox.device.live.slot import BundleSlot

    bundle, _ = named
    state = tmp_path / "state"
    BundleSlot(state / "bundles" / "default").install_copy(bundle)
    config = tmp_path / "lensbox.toml"
    port = _free_port()
    config.write_text(
        f"[server]\nport = {port}\ninterpreters = 1\nwarmup = false\n"
        'require_auth = true\napi_keys = ["k-1"]\n'
        f'[bundles]\ndefault = "{state / "bundles" / "default"}"\n'
        f'[state]\ndir = "{state}"\nwatch_interval_seconds = 0\n'
    )
    cat = str(SAMPLE_CATALOG / f"{LEFT_OUT}.jpg")
    proc, url = _serve(config, tmp_path / "serve.log")
    key = ("--url", url, "--api-key", "k-1")  # --config finds both in the config
    try:
        assert _top(url, "chelsea-cat-photo.jpg")["id"] != "cat-1"
        added = lensbox(
            "add",
            cat,
            "--id",
            "cat-1",
            "--title",
            "Chelsea",
            "--category",
            "space",
            "--set",
            "price=7",
            "--config",
            str(config),
        )
        assert added.returncode == 0, added.stderr
        assert "added cat-1" in added.stdout and url in added.stdout
        hit = _top(url, "chelsea-cat-photo.jpg")
        assert hit["id"] == "cat-1" and hit["metadata"]["title"] == "Chelsea"
        assert hit["metadata"]["category_id"] == 10
        assert hit["metadata"]["str_attrs"] == {"price": "7"}
        again = lensbox("add", cat, "--id", "cat-1", "--title", "Chelsea 2", *key)
        assert again.returncode == 0 and "replaced cat-1" in again.stdout
        nokey = lensbox("add", cat, "--id", "x", "--url", url)
        assert nokey.returncode == 1 and "--api-key" in nokey.stderr
        bad = lensbox("add", cat, "--id", "x", "--category", "toys", *key)
        assert bad.returncode == 1 and "no such category" in bad.stderr
        notphoto = tmp_path / "notes.jpg"
        notphoto.write_text("hello")
        refused = lensbox("add", str(notphoto), "--id", "x", *key)
        assert refused.returncode == 1 and "not added" in refused.stderr
        assert "Traceback" not in refused.stderr
        missing = lensbox("add", str(tmp_path / "nope.jpg"), "--id", "x", "--url", url)
        assert missing.returncode == 1 and "no such photo" in missing.stderr
        removed = lensbox("remove", "cat-1", "--config", str(config))
        assert removed.returncode == 0 and "removed cat-1" in removed.stdout
        assert _top(url, "chelsea-cat-photo.jpg")["id"] != "cat-1"
        gone = lensbox("remove", "cat-1", *key)
        assert gone.returncode == 1 and "no catalog item with id 'cat-1'" in gone.stderr
    finally:
        _stop(proc)

    # the daemon is stopped: an explicit address says so ...
    down = lensbox("remove", "coffee", "--url", url)
    assert down.returncode == 1 and "no lensbox daemon answers" in down.stderr
    assert "is the daemon running" in down.stderr
    # ... and the config's [state] lets the change go to the state directory instead
    offline = lensbox("add", cat, "--id", "cat-2", "--title", "Offline", "--config", str(config))
    assert offline.returncode == 0, offline.stderr
    assert "changing the state directory" in offline.stderr and "added cat-2" in offline.stdout
    dropped = lensbox("remove", "coffee", "--config", str(config))
    assert dropped.returncode == 0 and "removed coffee" in dropped.stdout
    proc, url = _serve(config, tmp_path / "serve.log")
    try:
        item = requests.get(f"{url}/v1/items/cat-2", headers=AUTH, timeout=30)
        assert item.status_code == 200 and item.json()["metadata"]["title"] == "Offline"
        assert requests.get(f"{url}/v1/items/coffee", headers=AUTH, timeout=30).status_code == 404
        assert _top(url, "chelsea-cat-photo.jpg")["id"] == "cat-2"
    finally:
        _stop(proc)


def test_add_without_a_daemon_or_state_says_how_to_start_one(tmp_path: Path) -> None:
    config = tmp_path / "plain.toml"
    config.write_text(f"[server]\nport = {_free_port()}\n")
    started = time.monotonic()
    out = lensbox("add", str(SAMPLE_CATALOG / "coffee.jpg"), "--id", "c", "--config", str(config))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "no lensbox daemon answers" in out.stderr and "lensbox serve" in out.stderr
    assert time.monotonic() - started < 60


def test_the_category_table_survives_compaction(named, tmp_path: Path) -> None:
    """Live changes are folded into a new bundle generation; its manifest keeps the names."""
    from lensbox.device.live.catalog import LiveCatalog, LiveSettings
    from lensbox.device.live.slot import BundleSlot
    from lensbox.device.search.engine import open_engine

    bundle, _ = named
    slot = BundleSlot(tmp_path / "bundles" / "default")
    first = slot.install_copy(bundle)
    cat = LiveCatalog(
        open_engine(str(slot.current()), threads=1),
        tmp_path / "journal" / "default.journal",
        slot=slot,
        settings=LiveSettings(background=False),
    )
    try:
        photo = (SAMPLE_CATALOG / f"{LEFT_OUT}.jpg").read_bytes()
        cat.put("cat-3", photo, {"category_id": 10, "str_attrs": {"price": "5"}})
        assert cat.compact() is not None
    finally:
        cat.close()
    assert slot.current() != first.resolve()
    manifest = _manifest(slot.current())
    assert manifest["categories"] == {"cards": 8, "drinks": 9, "space": 10}
    done = lensbox(
        "search",
        str(slot.current()),
        str(SAMPLE_QUERIES / "chelsea-cat-photo.jpg"),
        "--category",
        "space",
        "--json",
        "-k",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["hits"][0]["id"] == "cat-3"
