"""Shared by tests/test_sdk_*.py: a real `lensbox serve` process, and the compatibility table.

The box is the real daemon (`python -m lensbox.device.cli serve --config ...`) over the
session's metadata bundle deployed into a slot under a tmp state dir (a live catalog, so
add / delete work), on free loopback ports, keys required. The providers' official SDKs
are pointed at it with nothing changed but the endpoint.

Every SDK test that passes records its row (SDK, version, operation); with
``LENSBOX_SDK_RESULTS=path`` set the rows are appended to that JSON-lines file, and
``python -m tests.sdk_support path`` turns a run's rows into docs/sdk-compatibility.md
(every expected row that did not pass reads "FAILED in this run").
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import requests

from tests.api_support import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ROOT / "examples" / "sample-queries"
API_KEY = "lensbox-test-key"
ACCESS_KEY_ID = "LTAI5tLensboxTest"
ACCESS_KEY_SECRET = "s3cr3t-LensboxTestSecret"
HUAWEI_AK = "HWAKLENSBOXTEST"
HUAWEI_SK = "hw-secret-key-lensbox"
PROJECT = "0123456789abcdef0123456789abcdef"


@dataclass
class Box:
    url: str  # http://127.0.0.1:port
    host: str  # 127.0.0.1:port
    grpc: str | None  # 127.0.0.1:port of the gRPC listener
    state: Path
    log: Path
    cert: Path | None = None  # the self-signed certificate of the TLS listeners
    https: str | None = None  # 127.0.0.1:port of the HTTPS listener


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lensbox test box")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "box.crt", folder / "box.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def serve_box(
    tmp: Path,
    bundle: Path,
    grpc: bool = False,
    tls: bool = False,
    https: bool = False,
    **server: object,
) -> Iterator[Box]:
    """`lensbox serve --config` on loopback with keys required; stopped with SIGTERM.
    ``grpc``: the gRPC listener too (``tls``: with a self-signed certificate); ``https``:
    the HTTPS listener (same certificate)."""
    from lensbox.device.live.slot import BundleSlot

    state = tmp / "state"
    BundleSlot(state / "bundles" / "default").install_copy(bundle)
    grpc_port = free_port() if grpc else None
    lines = [
        "[server]",
        "port = 0",
        "interpreters = 1",
        "warmup = false",
        "rate_limit = 0",
        "require_auth = true",
        f'api_keys = ["{API_KEY}"]',
        *(f"{k} = {json.dumps(v)}" for k, v in server.items()),
    ]
    cert = None
    https_port = free_port() if https else None
    if https_port is not None:
        cert, key = self_signed(tmp)
        lines += [f"https_port = {https_port}", f'https_cert = "{cert}"', f'https_key = "{key}"']
    if grpc_port is not None:
        lines.append(f"grpc_port = {grpc_port}")
        if tls:
            cert, key = (cert, key) if cert else self_signed(tmp)
            lines += [f'grpc_tls_cert = "{cert}"', f'grpc_tls_key = "{key}"']
    lines += [
        "[server.access_keys]",
        f'{ACCESS_KEY_ID} = "{ACCESS_KEY_SECRET}"',
        f'{HUAWEI_AK} = "{HUAWEI_SK}"',
        "[bundles]",
        f'default = "{state / "bundles" / "default"}"',
        "[state]",
        f'dir = "{state}"',
        "watch_interval_seconds = 0",
        "[search]",
        "threads = 1",
    ]
    config = tmp / "lensbox.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = tmp / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": ""}
    cmd = [sys.executable, "-m", "lensbox.device.cli", "serve", "--config", str(config)]
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "serving" not in line:
            proc.kill()
            pytest.fail(f"lensbox serve did not start: {line}{log.read_text()}")
        url = line.split(" on ")[1].split()[0]
        if grpc_port is not None:
            assert f"gRPC on 127.0.0.1:{grpc_port}" in line, line
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/readyz", timeout=10).status_code != 200:
            if time.monotonic() > deadline:
                pytest.fail("the box never became ready: " + log.read_text())
            time.sleep(0.2)
        grpc_addr = f"127.0.0.1:{grpc_port}" if grpc_port is not None else None
        https_addr = f"127.0.0.1:{https_port}" if https_port is not None else None
        yield Box(url, url.removeprefix("http://"), grpc_addr, state, log, cert, https_addr)
    finally:
        stop(proc)


def query_photo(name: str = "coffee-photo.jpg") -> bytes:
    return (QUERIES / name).read_bytes()


# -- the compatibility table ------------------------------------------------------------
# (provider, package, operation): every row the SDK tests are expected to fill
EXPECTED: list[tuple[str, str, str]] = []


def expect(provider: str, package: str, *operations: str) -> None:
    for op in operations:
        EXPECTED.append((provider, package, op))


def record(provider: str, package: str, operation: str, result: str = "works unchanged") -> None:
    """Called by a test once all its assertions passed (``result``: what the run showed,
    e.g. why an SDK cannot reach the box, proven by the test)."""
    path = os.environ.get("LENSBOX_SDK_RESULTS")
    if not path:
        return
    try:
        ver = version(package)
    except PackageNotFoundError:
        ver = "?"
    row = {
        "provider": provider,
        "package": package,
        "version": ver,
        "operation": operation,
        "result": result,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def render_table(results: Path) -> str:
    """docs/sdk-compatibility.md from one run's rows (and the test modules' expectations)."""
    import importlib

    for module in sorted((ROOT / "tests").glob("test_sdk_*.py")):
        importlib.import_module(f"tests.{module.stem}")
    # the test modules filled *this* module's list as tests.sdk_support (not __main__)
    expected = importlib.import_module("tests.sdk_support").EXPECTED
    passed: dict[tuple[str, str, str], tuple[str, str]] = {}
    for line in results.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        key = (row["provider"], row["package"], row["operation"])
        passed[key] = (row["version"], row.get("result", "works unchanged"))
    out = [
        "# The providers' own SDKs against the box",
        "",
        "Generated by `make sdk-table` from a run of `tests/test_sdk_*.py`: each row is one",
        "test that points the provider's official Python SDK at a live `lensbox serve` on",
        "loopback (keys required) with nothing changed but the endpoint (and, for TLS, the",
        'box\'s certificate). A row that is not "works unchanged" says what the test proved',
        "instead. Do not edit by hand. How to point each SDK at the box:",
        "[sdk-setup.md](sdk-setup.md).",
        "",
        "| provider | SDK | version | operation | result |",
        "|---|---|---|---|---|",
    ]
    seen = set()
    for key in expected:
        if key in seen:
            continue
        seen.add(key)
        provider, package, op = key
        ver, result = passed.get(key, ("?", "FAILED in this run"))
        out.append(f"| {provider} | {package} | {ver} | {op} | {result} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_table(Path(sys.argv[1])))
