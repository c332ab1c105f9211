"""BundleManager: hot swaps, refused bundles, the watcher, SIGHUP, `lensbox deploy`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from lensbox.device.bundle.reader import open_bundle
from lensbox.device.cli import main as cli
from lensbox.device.config.loader import LensboxConfig, load_config
from lensbox.device.imaging import load_image
from lensbox.device.live.catalog import LiveCatalog
from lensbox.device.live.manager import BundleManager, install_sighup
from lensbox.device.live.slot import BundleSlot
from lensbox.device.search.engine import SearchEngine

ROOT = Path(__file__).resolve().parent.parent
QUERY = ROOT / "examples" / "sample-queries" / "coffee-photo.jpg"


def _config(state: Path, watch: float = 0.0, **bundles: str) -> LensboxConfig:
    bundles = bundles or {"default": str(state / "bundles" / "default")}
    return LensboxConfig.model_validate(
        {
            "bundles": bundles,
            "state": {"dir": str(state), "watch_interval_seconds": watch},
            "search": {"threads": 1},
        }
    )


@pytest.fixture()
def opener(engine):
    """Open bundles with the session's model (the manager's own default loads one more)."""

    def open_engine(path: Path) -> SearchEngine:
        sha = engine.embedder.model.sha256
        return SearchEngine(open_bundle(path, sha), engine.embedder, engine.settings)

    return open_engine


@pytest.fixture()
def state(tmp_path, sample_bundle) -> Path:
    BundleSlot(tmp_path / "bundles" / "default").install_copy(sample_bundle)
    return tmp_path


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _broken_copy(sample_bundle: Path, dest: Path, how: str) -> Path:
    shutil.copytree(sample_bundle, dest)
    if how == "model":
        manifest = json.loads((dest / "manifest.json").read_text())
        manifest["model"]["sha256"] = "f" * 64
        (dest / "manifest.json").write_text(json.dumps(manifest))
    else:
        with open(dest / "vectors.i8", "r+b") as fh:
            fh.truncate(100)
    return dest


def test_start_ready_and_mapping_interface(state, opener):
    manager = BundleManager(_config(state), engine_opener=opener, background=False)
    assert manager.ready()[0] is False
    assert manager.start() == {"default": None}
    ok, details = manager.ready()
    assert ok and details["default"]["items"] == 18 and details["default"]["writable"]
    assert list(manager) == ["default"] and isinstance(manager["default"], LiveCatalog)
    assert manager.healthy()
    rgb = load_image(QUERY)
    assert manager["default"].search_image(rgb, top_k=1).hits[0].id == "coffee"
    manager.close()


def test_missing_bundle_is_reported_not_raised(tmp_path, opener):
    manager = BundleManager(_config(tmp_path), engine_opener=opener, background=False)
    errors = manager.start()
    assert "no bundle deployed" in errors["default"] and "lensbox deploy" in errors["default"]
    ok, details = manager.ready()
    assert not ok and details["default"]["ready"] is False


def test_deploy_swaps_in_while_old_requests_finish(state, opener, sample_bundle, tmp_path):
    manager = BundleManager(_config(state), engine_opener=opener, background=False)
    manager.start()
    held = manager.instance("default")  # an in-flight request holds this
    manager.put("default", "old-only", QUERY.read_bytes())
    other = tmp_path / "other.lbx"
    shutil.copytree(sample_bundle, other)
    res = manager.deploy("default", other)
    assert res.ok and res.changed
    new = manager["default"]
    assert new is not held.catalog and "old-only" not in new
    query = held.catalog.embed_query(load_image(QUERY)).vectors
    assert held.catalog.search_vectors(query, 1)[0][0].id == "old-only"  # old one still works
    assert held.catalog.closed and held.catalog.base_path.is_dir()
    assert manager.reload("default").changed is False  # nothing new in the slot


@pytest.mark.parametrize("how", ["model", "truncated"])
def test_bad_bundle_is_refused_and_rolled_back(state, opener, sample_bundle, tmp_path, how):
    manager = BundleManager(_config(state), engine_opener=opener, background=False)
    manager.start()
    serving = manager["default"]
    slot = BundleSlot(state / "bundles" / "default")
    bad = _broken_copy(sample_bundle, tmp_path / "bad.lbx", how)
    bad_gen = slot.install_copy(bad)  # bypassing the CLI's own check
    res = manager.reload("default")
    assert not res.ok and "refused" in res.error and "kept serving" in res.error
    assert manager["default"] is serving and not serving.closed
    assert slot.current() == serving.base_path  # a restart would load the good one too
    assert not bad_gen.exists()
    assert manager.ready()[1]["default"]["error"] == res.error
    serving.put("still-writable", QUERY.read_bytes())


def test_watcher_picks_up_a_cli_deploy(state, opener, sample_bundle, capsys):
    manager = BundleManager(_config(state, watch=0.05), engine_opener=opener, background=False)
    manager.start()
    first = manager["default"]
    slot_path = state / "bundles" / "default"
    assert cli(["deploy", str(sample_bundle), "--to", str(slot_path)]) == 0
    assert "deployed" in capsys.readouterr().out
    assert _wait(lambda: manager["default"] is not first)
    assert manager["default"].base_path == BundleSlot(slot_path).current()
    manager.close()


def test_cli_deploy_refuses_a_bad_bundle(state, sample_bundle, tmp_path, capsys):
    slot = BundleSlot(state / "bundles" / "default")
    before = slot.current()
    bad = _broken_copy(sample_bundle, tmp_path / "bad.lbx", "model")
    assert cli(["deploy", str(bad), "--to", str(slot.path)]) == 1
    assert "refused" in capsys.readouterr().err
    assert slot.current() == before and len(slot.generations()) == 1


def test_cli_deploy_by_instance_name(state, sample_bundle, tmp_path, capsys):
    conf = tmp_path / "lensbox.toml"
    conf.write_text(f'[bundles]\nshop = "{tmp_path / "bundles" / "shop"}"\n')
    assert (
        cli(
            [
                "deploy",
                str(sample_bundle),
                "--instance",
                "shop",
                "--config",
                str(conf),
                "--no-verify",
            ]
        )
        == 0
    )
    assert (BundleSlot(tmp_path / "bundles" / "shop").current() / "deploy.json").is_file()
    assert cli(["deploy", str(sample_bundle), "--instance", "nope", "--config", str(conf)]) == 1


def test_writes_retry_across_a_reload(state, opener):
    manager = BundleManager(_config(state), engine_opener=opener, background=False)
    manager.start()
    old = manager["default"]
    old.close()  # as a reload does, just before publishing the new catalog
    threading.Timer(0.2, manager.reload, args=("default",), kwargs={"force": True}).start()
    change = manager.update("default", "coffee", {"title": "Espresso"})
    assert change.seq == 1 and manager["default"] is not old
    assert manager["default"].get("coffee")["title"] == "Espresso"


def test_sighup_reloads_the_config(state, opener, sample_bundle, tmp_path):
    conf = tmp_path / "lensbox.toml"
    default = state / "bundles" / "default"
    conf.write_text(
        f'[bundles]\ndefault = "{default}"\n[state]\ndir = "{state}"\nwatch_interval_seconds = 0\n'
    )
    manager = BundleManager(load_config(conf), engine_opener=opener, background=False)
    manager.start()
    BundleSlot(tmp_path / "bundles" / "second").install_copy(sample_bundle)
    previous = install_sighup(manager, conf)
    try:
        conf.write_text(
            conf.read_text().replace(
                "[state]", f'second = "{tmp_path / "bundles" / "second"}"\n[state]'
            )
        )
        os.kill(os.getpid(), signal.SIGHUP)
        assert _wait(lambda: "second" in manager)
        assert manager["second"].count() == 18
        conf.write_text("[search]\nthreads = 'many'\n")  # invalid: keep running config
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.3)
        assert set(manager) == {"default", "second"}
    finally:
        signal.signal(signal.SIGHUP, previous)
    result = manager.reload_config(_config(state))  # drop 'second' again
    assert result["instances"]["second"] == "dropped" and list(manager) == ["default"]
