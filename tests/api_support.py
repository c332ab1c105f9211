"""Shared by tests/test_api_*.py: a sample bundle *with metadata*, and a real server.

The bundle is the sample catalog described by a CSV manifest that gives items hosts,
categories, tags, attributes, a shared product id and an adult flag, so every filter of
every contract has something to act on. It is built once per test session. Servers are
real waitress servers on a free loopback port, driven over HTTP with ``requests``.
"""

from __future__ import annotations

import atexit
import base64
import csv
import functools
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "examples" / "sample-catalog"
QUERIES = ROOT / "examples" / "sample-queries"

SPACE = {"astronaut", "rocket", "hubble"}
CARDS = {f"card-0{i}" for i in range(6)}


def _row(path: Path) -> dict[str, str]:
    item = path.stem
    row = {
        "path": str(path),
        "id": item,
        "title": item.replace("-", " ").title(),
        "host": "misc.example.net",
        "category_id": "9",
        "tags": "kind=thing",
        "product_id": "",
        "custom_content": "",
        "adult": "",
        "int_attr": "10",
        "str_attr": "plain",
        "page_url": f"https://misc.example.net/{item}",
    }
    if item == "coffee":
        row.update(
            host="shop.example.com",
            category_id="3",
            tags="kind=drink;color=brown",
            product_id="P-coffee",
            custom_content="a cup of coffee",
            int_attr="150",
            str_attr="hot",
            page_url="https://shop.example.com/coffee",
        )
    elif item in SPACE:
        row.update(
            host="space.example.org",
            category_id="5",
            tags="kind=space",
            int_attr="300" if item == "rocket" else "50",
            str_attr="fast" if item == "rocket" else "plain",
            page_url=f"https://space.example.org/{item}",
        )
    elif item in CARDS:
        row.update(category_id="7", tags="kind=card", product_id="P-cards")
    elif item == "chelsea-cat":
        row.update(tags="kind=animal", adult="true")
    return row


def write_manifest(folder: Path) -> Path:
    rows = [_row(p) for p in sorted(CATALOG.glob("*.jpg"))]
    manifest = folder / "catalog.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def metadata_bundle(factory: pytest.TempPathFactory) -> Path:
    """The sample catalog with metadata (conftest's session fixture ``bundle`` builds it once)."""
    from lensbox.index_builder.build import BuildSettings, build_bundle

    folder = factory.mktemp("api-bundle")
    out = folder / "catalog.lbx"
    build_bundle(
        write_manifest(folder), out, BuildSettings(cache_dir=None, workers=1), progress=False
    )
    return out


_POOLS: dict[int, object] = {}


def pool_for(interpreters: int = 1):
    """``interpreters`` TFLite models (cached: loading them is the slow part of a start)."""
    from lensbox.device.serving.interpreters import InterpreterPool

    if interpreters not in _POOLS:
        _POOLS[interpreters] = InterpreterPool.load(interpreters, threads=1)
    return _POOLS[interpreters]


@functools.cache
def _scratch() -> str:
    """One temporary folder per test process for the daemons' state dirs, removed at exit
    (a test run used to leave hundreds of ``lensbox-state-*`` folders in /tmp)."""
    folder = tempfile.mkdtemp(prefix="lensbox-tests-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


def serve_config(bundles: dict[str, Path], sections: dict | None = None, **server: object):
    """The config `lensbox serve` builds without a ``[state]`` section: the bundles served
    read-only (here with a private state dir, so no journal of the host is read)."""
    from lensbox.device.config.loader import LensboxConfig

    state = {"dir": tempfile.mkdtemp(prefix="state-", dir=_scratch()), "read_only": True}
    return LensboxConfig.model_validate(
        {
            **(sections or {}),
            "server": {"rate_limit": 0, "warmup": False, **server},
            "bundles": {k: str(v) for k, v in bundles.items()},
            "state": {**state, **(sections or {}).get("state", {})},
        }
    )


def open_test_daemon(config):
    """`lensbox serve`'s daemon (pool, bundle manager, runtime, app) on cached interpreters;
    sd_notify and logging set-up off."""
    from lensbox.device.appliance.sdnotify import Notifier
    from lensbox.device.serving.daemon import open_daemon

    return open_daemon(
        config,
        notifier=Notifier(socket_path=""),
        configure_logging=False,
        pool=pool_for(config.server.interpreters),
    )


@dataclass
class Api:
    url: str
    app: object  # the Flask app, for the few tests that must break it on purpose


@contextmanager
def running_server(
    bundles: dict[str, Path],
    interpreters: int = 1,
    sections: dict | None = None,
    **server: object,
) -> Iterator[Api]:
    """The daemon `lensbox serve` runs, behind a real waitress server on a free loopback
    port: the bundles opened by a bundle manager as read-only live catalogs.

    ``sections`` adds other config sections (``{"fallback": {...}, "kiosk": {...}}``).
    Interpreters are cached per count: servers sharing them must not serve at the same
    time (tests drive one server at a time).
    """
    from lensbox.device.api.server import BackgroundServer, waitress_options

    config = serve_config(bundles, sections, interpreters=interpreters, **server)
    daemon = open_test_daemon(config)
    try:
        with BackgroundServer(daemon.app, "127.0.0.1", 0, **waitress_options(config.server)) as srv:
            yield Api(srv.url, daemon.app)
    finally:
        daemon.close()


def photo(name: str) -> bytes:
    return (QUERIES / name).read_bytes()


def catalog_photo(name: str) -> bytes:
    return (CATALOG / name).read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_bytes(width: int, height: int, color=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(width: int, height: int, orientation: int | None = None) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if orientation is None:
        img.save(buf, "JPEG")
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def metric(base_url: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample (all series matching ``labels``) from /metrics."""
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


class ImageHost:
    """A tiny HTTP server standing in for a website that hosts query images.

    ``/img/<name>`` serves a sample query photo; ``/redirect/<host>/<name>`` redirects to
    the same photo on ``host`` (so a test can redirect off the allow-list); ``/big`` is
    larger than any contract accepts; ``/missing`` is a 404.
    """

    def __init__(self) -> None:
        import http.server
        import threading

        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                parts = self.path.strip("/").split("/")
                if parts[0] == "img" and len(parts) == 2 and (QUERIES / parts[1]).is_file():
                    self._send(200, (QUERIES / parts[1]).read_bytes())
                elif parts[0] == "redirect" and len(parts) == 3:
                    self.send_response(302)
                    self.send_header("Location", f"http://{parts[1]}:{host.port}/img/{parts[2]}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts[0] == "big":
                    self._send(200, b"\xff" * (25 * 1024 * 1024))
                else:
                    self._send(404, b"not found")

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    """Stop a `lensbox serve` process: SIGTERM (a clean shutdown), SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until a `lensbox serve` process answers /readyz; fails with its log if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"lensbox serve exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    pytest.fail(f"lensbox serve was not ready within {timeout:.0f} s")
