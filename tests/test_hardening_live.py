"""Issue 16, items 5 and 13: reloads that meet a broken bundle keep the daemon whole.

SIGHUP pointing an instance at a broken plain directory used to kill the reload thread
(IsADirectoryError rolling the plain directory back), log a traceback every 0.5 s, leave a
stray ``.link.tmp`` symlink and show no error on /readyz. Real `lensbox serve` processes.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from lensbox.device.bundle.format import VECTORS
from lensbox.device.live.slot import BundleSlot
from tests.hardening_support import appliance_config, serve


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _details(url: str) -> dict:
    return requests.get(f"{url}/readyz", timeout=10).json()["details"]["default"]


@pytest.mark.slow
def test_sighup_to_a_broken_plain_directory(sample_bundle: Path, tmp_path: Path) -> None:
    slot = tmp_path / "bundles" / "default"
    BundleSlot(slot).install_copy(sample_bundle)
    broken = tmp_path / "plain" / "broken.lbx"
    shutil.copytree(sample_bundle, broken)
    with open(broken / VECTORS, "r+b") as fh:
        fh.truncate(100)
    conf = appliance_config(tmp_path / "lensbox.toml", tmp_path / "state", {"default": slot})
    with serve(conf) as srv:
        assert _details(srv.url)["error"] is None
        appliance_config(conf, tmp_path / "state", {"default": broken})
        srv.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _details(srv.url)["error"]), srv.log
        entry = _details(srv.url)
        assert "refused" in entry["error"] and entry["ready"]
        time.sleep(1.5)  # several watcher polls
        search = requests.post(
            f"{srv.url}/v1/search", json={"id": "coffee", "top_k": 1}, timeout=30
        )
        assert search.status_code == 200, search.text  # the previous bundle still serves
        assert srv.log.count("Traceback") == 0, srv.log
        assert not list(broken.parent.glob(".*link.tmp"))
        assert (broken / VECTORS).stat().st_size == 100  # a plain directory is left alone
        # back to the good slot: the error is over (it used to stay on /readyz)
        appliance_config(conf, tmp_path / "state", {"default": slot})
        srv.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _details(srv.url)["error"] is None), srv.log


def test_a_refused_hot_reload_is_rolled_back_and_reported(
    sample_bundle: Path, tmp_path: Path
) -> None:
    """A torn bundle copied into the slot by hand (deploy would refuse it) is refused by the
    watcher: the slot rolls back, the old generation keeps serving, /readyz says why."""
    slot = BundleSlot(tmp_path / "bundles" / "default")
    slot.install_copy(sample_bundle)
    conf = appliance_config(tmp_path / "lensbox.toml", tmp_path / "state", {"default": slot.path})
    with serve(conf) as srv:
        served = slot.current()

        def tear(tmp: Path) -> None:
            for part in sample_bundle.iterdir():
                shutil.copyfile(part, tmp / part.name)
            ann = tmp / "index.ann"
            ann.write_bytes(ann.read_bytes()[:-7])

        slot.install(tear)
        assert _wait(lambda: _details(srv.url)["error"]), srv.log
        assert slot.current() == served
        assert requests.get(f"{srv.url}/v1/items/coffee", timeout=10).status_code == 200
