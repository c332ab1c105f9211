"""The gRPC listener (``server.grpc_port``; off by default): HTTP/2, TLS optional.

Two providers' clients speak gRPC only, or prefer it: Yandex's SDKs
(``yandex.cloud.searchapi.v2.ImageSearchService/SearchByImage``, found through
``yandex.cloud.endpoint.ApiEndpointService/List``) and Clarifai's ``clarifai.api.V2``
(``PostAnnotationsSearches``). This package serves those RPCs with the services' own
message definitions (the generated modules of the official ``yandexcloud`` and
``clarifai-grpc`` packages), one module per service, on its own port beside the HTTP
daemon.

Each RPC is answered by the *same* Flask app the HTTP port serves (bridge.py): the message
becomes the provider's REST request (the proto3 JSON mapping, which is what those REST
APIs are), the app runs it in-process with the gRPC ``authorization`` metadata as its
``Authorization`` header, and the REST answer becomes the response message. So keys, rate
limits, limits, search service, catalog and metrics are the HTTP side's, by construction.
Errors map onto gRPC status codes per contract (yandex.py, clarifai.py).

Needs the ``grpc`` extra (grpcio, protobuf, yandexcloud, clarifai-grpc; grpcio and protobuf
ship aarch64 wheels, the other two are pure Python).
"""

from __future__ import annotations

import logging
import socket
from concurrent import futures
from typing import Any

log = logging.getLogger("lensbox.grpc")


class GrpcUnavailable(RuntimeError):
    """The grpc extra is not installed."""


class GrpcListener:
    """A grpc.Server with the Yandex and Clarifai services over ``app``."""

    def __init__(self, server_config: Any, app: Any, http_port: int | None = None) -> None:
        try:
            import grpc

            from lensbox.device.grpc.bridge import WsgiBridge
            from lensbox.device.grpc.clarifai import add_clarifai
            from lensbox.device.grpc.yandex import add_yandex
        except ImportError as exc:  # depends on the install
            raise GrpcUnavailable(
                f"server.grpc_port is set but {exc.name or 'a gRPC package'} is not "
                "installed: pip install 'lensbox[grpc]'"
            ) from exc

        cfg = server_config
        limit = cfg.max_request_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=cfg.threads * 4,
        )
        host = cfg.host
        public = socket.getfqdn() if host in ("0.0.0.0", "::") else host
        public = f"[{public}]" if ":" in public else public
        bridge = WsgiBridge(app, f"http://{public}:{http_port or cfg.port}")
        address = f"[{host}]:{cfg.grpc_port}" if ":" in host else f"{host}:{cfg.grpc_port}"
        if cfg.grpc_tls_cert:
            with open(cfg.grpc_tls_cert, "rb") as fh:
                chain = fh.read()
            with open(cfg.grpc_tls_key, "rb") as fh:
                key = fh.read()
            creds = grpc.ssl_server_credentials([(key, chain)])
            self.port = self._server.add_secure_port(address, creds)
        else:
            self.port = self._server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot listen for gRPC on {address}")
        self.tls = bool(cfg.grpc_tls_cert)
        self.address = f"{host}:{self.port}"
        advertised = cfg.grpc_advertise or f"{public}:{self.port}"
        add_yandex(self._server, bridge, advertised)
        add_clarifai(self._server, bridge)

    def start(self) -> GrpcListener:
        self._server.start()
        log.info("gRPC on %s (%s)", self.address, "TLS" if self.tls else "plaintext")
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new RPCs, let those in flight finish within ``grace`` seconds."""
        self._server.stop(grace).wait(grace + 1)


def start_grpc(server_config: Any, app: Any, http_port: int | None = None) -> GrpcListener | None:
    """The listener when ``server.grpc_port`` is set, started; else None. ``http_port``:
    the port the HTTP daemon really bound (``server.port`` may be 0)."""
    if server_config.grpc_port is None:
        return None
    return GrpcListener(server_config, app, http_port).start()
