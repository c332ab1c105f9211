"""Issue 16, item 7 (and the 413 of item 8): slow and oversized clients.

105 idle half-sent connections used to stop the server answering anything (waitress'
connection limit of 100; its inactivity timeout never fires for a client that dribbles
bytes). Now many slow connections cost no worker, a request must arrive whole within
``request_timeout_s``, and waitress' own refusals come in the contract's JSON shape.
A real waitress server on loopback, real sockets.
"""

from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path

import pytest
import requests

from tests.api_support import running_server

SLOW = 200


def _half_sent(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:  # headers never finished
            s.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Ty")
        else:  # headers done, body never finished
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nPicCont")
        socks.append(s)
    return socks


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, socket.timeout):
        return False


@pytest.mark.slow
def test_healthz_answers_while_200_slow_connections_are_open(bundle: Path) -> None:
    with running_server({"default": bundle}) as api:
        port = int(api.url.rsplit(":", 1)[1])
        socks = _half_sent(port, SLOW)
        try:
            time.sleep(0.5)  # let the server accept them all
            took = []
            for _ in range(5):
                started = time.monotonic()
                resp = requests.get(f"{api.url}/healthz", timeout=10)
                took.append(time.monotonic() - started)
                assert resp.status_code == 200 and resp.json()["status"] == "ok"
            assert statistics.median(took) < 1.0, took
            search = requests.post(f"{api.url}/v1/search", json={"id": "coffee"}, timeout=30)
            assert search.status_code == 200, search.text
        finally:
            for s in socks:
                s.close()


@pytest.mark.slow
def test_a_request_dribbled_in_is_dropped_after_request_timeout(bundle: Path) -> None:
    with running_server({"default": bundle}, request_timeout_s=2) as api:
        port = int(api.url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        started = time.monotonic()
        try:
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
            dropped = False
            for byte in request:  # one byte every 0.1 s: never idle, never finished
                try:
                    s.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    dropped = True
                    break
                time.sleep(0.1)
                if time.monotonic() - started > 12:
                    break
            assert dropped or _closed_by_server(s, 5)
            assert time.monotonic() - started < 12
        finally:
            s.close()
        assert requests.get(f"{api.url}/healthz", timeout=10).status_code == 200


def _declared_too_large(port: int, path: str, ctype: str) -> tuple[int, dict[str, str], bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {64 * 1024 * 1024}\r\n\r\n".encode()
        )
        # no body byte: unread bytes would make the server's close a reset that can
        # overtake its answer
        data = b""
        s.settimeout(10)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_bodies_over_waitress_cap_get_the_contract_json_413(bundle: Path) -> None:
    import json

    with running_server({"default": bundle}, max_request_bytes=64 * 1024) as api:
        port = int(api.url.rsplit(":", 1)[1])
        status, headers, body = _declared_too_large(port, "/v1/search", "image/jpeg")
        assert status == 413 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] == "request_too_large"
        # each contract's own status and shape for an oversized request
        status, headers, body = _declared_too_large(port, "/", "application/json")
        assert status == 400 and json.loads(body)["Success"] is False
        status, headers, body = _declared_too_large(
            port, "/v2/annotations/searches", "application/json"
        )
        assert status == 400 and json.loads(body)["status"]["code"] == 40033
