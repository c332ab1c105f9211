"""A real process running ServiceRuntime talks sd_notify the way a Type=notify unit needs:
STATUS while loading, READY=1, watchdog pets, RELOADING=1/READY=1 around SIGHUP, STOPPING=1;
and logs one JSON object per line on stderr."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

CHILD = """
import signal, sys, time
from lensbox.device.bundle.reader import open_bundle
from lensbox.device.config.loader import load_config
from lensbox.device.live.manager import BundleManager
from lensbox.device.appliance.runtime import ServiceRuntime
from lensbox.device.search.engine import SearchEngine, SearchSettings

conf = sys.argv[1]
config = load_config(conf)
opener = lambda p: SearchEngine(open_bundle(p), None, SearchSettings())
runtime = ServiceRuntime(config, conf, manager=BundleManager(config, engine_opener=opener))
manager = runtime.start()
runtime.ready(f"serving {len(manager)} bundle(s)")
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while not stop:
    time.sleep(0.02)
runtime.stop()
"""


def _messages(sock: socket.socket, until, timeout: float = 15.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline and not until(got):
        with contextlib.suppress(TimeoutError, socket.timeout):
            got.append(sock.recv(4096).decode())
    return got


def test_service_lifecycle_over_sd_notify(tmp_path):
    from lensbox.device.live.slot import BundleSlot

    from .crash_support import make_template

    make_template(tmp_path / "tpl", "base", 20)
    for name in ("default", "second"):
        BundleSlot(tmp_path / "bundles" / name).install_copy(tmp_path / "tpl")
    conf = tmp_path / "lensbox.toml"
    base = (
        f'[bundles]\ndefault = "{tmp_path / "bundles" / "default"}"\n'
        f'[state]\ndir = "{tmp_path}"\nwatch_interval_seconds = 0\n'
        '[service]\nlog_format = "json"\n'
    )
    conf.write_text(base)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LENSBOX", "JOURNAL"))}
    env.update(NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="200000")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(conf)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        got = _messages(sock, lambda g: g.count("WATCHDOG=1") >= 2)
        assert got[0] == "STATUS=loading bundles"
        assert got[1] == "READY=1\nSTATUS=serving 1 bundle(s)"
        assert got.count("WATCHDOG=1") >= 2
        conf.write_text(
            base.replace("[state]", f'second = "{tmp_path / "bundles" / "second"}"\n[state]')
        )
        proc.send_signal(signal.SIGHUP)
        got = _messages(sock, lambda g: any(m.startswith("READY=1") for m in g))
        reload_msgs = [m for m in got if m != "WATCHDOG=1"]
        assert reload_msgs == [
            "RELOADING=1\nSTATUS=reloading configuration",
            "READY=1\nSTATUS=configuration reloaded",
        ]
        proc.send_signal(signal.SIGTERM)
        got = _messages(sock, lambda g: any(m.startswith("STOPPING=1") for m in g))
        assert any(m.startswith("STOPPING=1") for m in got)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    records = [json.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]
    loaded = [r for r in records if r["msg"].startswith("instance second now serves")]
    assert loaded and loaded[0]["instance"] == "second" and loaded[0]["level"] == "info"
    assert any(r["msg"] == "SIGHUP: configuration reloaded" for r in records)
