"""The HTTPS listener (``server.https_port``; off by default): the same app over TLS.

waitress speaks plain HTTP only, so TLS is a second, smaller listener: Werkzeug's threaded
WSGI server with an ``ssl`` context, at most ``MAX_CONNECTIONS`` requests at once (a
semaphore; further connections wait in the accept backlog). Its main client is the Alibaba
SDK's file upload (alibaba_upload.py), which is hard-wired to HTTPS; every other route works
over it as well.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

log = logging.getLogger("lensbox.https")
MAX_CONNECTIONS = 16


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # the app logs access itself
        pass


class _Bounded(ThreadedWSGIServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HttpsListener:
    def __init__(self, host: str, port: int, cert: str, key: str, app: Any) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        self._server = _Bounded(host, port, app, handler=_Quiet, ssl_context=context)
        self.port = int(self._server.server_port)
        self.address = f"{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="https", daemon=True
        )

    def start(self) -> HttpsListener:
        self._thread.start()
        log.info("HTTPS on %s", self.address)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def start_https(server_config: Any, app: Any) -> HttpsListener | None:
    """The listener when ``server.https_port`` is set, started; else None."""
    cfg = server_config
    if cfg.https_port is None:
        return None
    return HttpsListener(cfg.host, cfg.https_port, cfg.https_cert, cfg.https_key, app).start()
