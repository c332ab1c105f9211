"""`lensbox serve` as a real child process on a free loopback port (tests/test_hardening_*)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.api_support import stop

LENSBOX = [sys.executable, "-m", "lensbox.device.cli"]


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    stderr: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.stderr)


@contextmanager
def serve(conf: Path, *args: str) -> Iterator[Served]:
    """Run `lensbox serve --config conf` until the block ends (SIGTERM, exit 0 checked)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LENSBOX", "NOTIFY"))}
    proc = subprocess.Popen(
        [*LENSBOX, "serve", "--config", str(conf), "--interpreters", "1", "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))
    reader.daemon = True
    reader.start()
    try:
        line = proc.stdout.readline()
        if "serving" not in line:
            proc.wait(timeout=30)
            reader.join(5)
            raise AssertionError(f"serve did not start: {line!r} {''.join(lines)}")
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        served = Served(proc, url, lines)
        yield served
        assert proc.poll() is None, f"serve died: {served.log}"
    finally:
        stop(proc)
        reader.join(5)
    assert proc.returncode == 0, "".join(lines)


def appliance_config(path: Path, state: Path, bundles: dict[str, Path], extra: str = "") -> Path:
    lines = ["[bundles]"] + [f'{k} = "{v}"' for k, v in bundles.items()]
    lines += ["[state]", f'dir = "{state}"', "watch_interval_seconds = 0.2", extra]
    path.write_text("\n".join(lines) + "\n")
    return path
