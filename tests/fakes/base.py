"""A real HTTP server on 127.0.0.1 that plays a cloud provider, with failure modes.

Each fake answers as its provider's documentation shows and checks the credential the
provider requires (token compare, or recomputing the request signature with the known
secret).  Modes, consumed one per request from a queue (then ``default_mode``):

    ok         verify credentials and answer (success or the provider's documented error)
    slow       like ok, after sleeping ``slow_s`` (longer than the client's deadline)
    drop       send a status line and headers promising a body, then close the socket
    hangup     close the socket without answering at all
    malformed  200 with a truncated JSON body
    401 / 429 / 500   the provider's documented auth / throttling / server error reply

``requests`` records every request received (method, path, headers, body), so tests can
count what reached the "cloud" and inspect exactly what was sent.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any]  # (status, JSON-able body)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def default_catalog(n: int = 12) -> list[dict[str, Any]]:
    """Provider-neutral results the fakes render in their own JSON shapes."""
    return [
        {
            "id": f"item-{i:02d}",
            "url": f"https://img{i % 3}.example.com/photos/{i:02d}.jpg",
            "page_url": f"https://shop{i % 3}.example.com/item/{i:02d}",
            "host": f"shop{i % 3}.example.com",
            "title": f"Catalog item {i}",
            "width": 640 + i,
            "height": 480 - i,
            "score": round(0.97 - 0.06 * i, 4),
            "tags": {"color": ["red", "green", "blue"][i % 3]},
        }
        for i in range(n)
    ]


class FakeProvider:
    """Subclasses implement ``authenticate``, ``handle`` and ``error_reply``."""

    name = "fake"

    def __init__(self, catalog: list[dict[str, Any]] | None = None, *, slow_s: float = 2.0):
        self.catalog = catalog if catalog is not None else default_catalog()
        self.slow_s = slow_s
        self.default_mode = "ok"
        self.echo_secret = False  # put the presented credential in auth errors (leak test)
        self.requests: list[Recorded] = []
        self._modes: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeProvider:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def queue(self, *modes: str) -> None:
        with self._lock:
            self._modes.extend(modes)

    # -- per-request -------------------------------------------------------------------

    def _next_mode(self) -> str:
        with self._lock:
            return self._modes.popleft() if self._modes else self.default_mode

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        rec = Recorded("POST", h.path, {k: v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(rec)
        mode = self._next_mode()
        try:
            if mode == "slow":
                self._stop.wait(self.slow_s)
                mode = "ok"
            if mode == "drop":
                self._drop(h)
            elif mode == "hangup":
                h.connection.shutdown(socket.SHUT_RDWR)
                h.close_connection = True
            elif mode == "malformed":
                self._send_raw(h, 200, b'{"oops": [ {"url": "https://img.example.com/1.jp')
            elif mode in ("401", "429", "500"):
                self._send(h, *self.error_reply(mode, rec))
            else:
                refusal = self.authenticate(rec)
                self._send(h, *(refusal or self.handle(rec)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (deadline); nothing to do

    def _send(self, h: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
        self._send_raw(h, status, json.dumps(doc).encode("utf-8"))

    @staticmethod
    def _send_raw(h: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _drop(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 4096\r\n\r\n{"partial": ['
        )
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True

    @staticmethod
    def request_id() -> str:
        return str(uuid.uuid4()).upper()

    # -- provider-specific -------------------------------------------------------------

    def authenticate(self, rec: Recorded) -> Reply | None:
        """None when the credential checks out, else the provider's documented refusal."""
        raise NotImplementedError

    def handle(self, rec: Recorded) -> Reply:
        raise NotImplementedError

    def error_reply(self, mode: str, rec: Recorded) -> Reply:
        raise NotImplementedError
