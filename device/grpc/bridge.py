"""One REST call through the Flask app, in-process: how an RPC reaches the contracts.

The WSGI environ is built as the HTTP server would build it (method, path, JSON body,
``Authorization`` header, the peer's address for the per-client rate limit), so the app's
guard (keys, signatures, rate limit, error shaping) and the contract run unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from werkzeug.test import EnvironBuilder, run_wsgi_app


@dataclass
class RestAnswer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def peer_address(peer: str) -> str:
    """gRPC's ``ipv4:1.2.3.4:5678`` / ``ipv6:[::1]:5678`` -> the address alone."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return "127.0.0.1" if kind == "unix" else rest or "?"


class WsgiBridge:
    """``base_url``: the HTTP daemon's address, so links in answers (an item's url) point
    where a client can fetch them."""

    def __init__(self, app: Any, base_url: str = "http://localhost") -> None:
        self.app = app
        self.base_url = base_url

    def post(
        self, path: str, body: dict[str, Any], authorization: str | None, peer: str
    ) -> RestAnswer:
        headers = [("Authorization", authorization)] if authorization else []
        builder = EnvironBuilder(
            path=path,
            base_url=self.base_url,
            method="POST",
            data=json.dumps(body),
            content_type="application/json",
            headers=headers,
            environ_base={
                "REMOTE_ADDR": peer_address(peer),
            },
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        chunks, status, resp_headers = run_wsgi_app(self.app, environ, buffered=True)
        try:
            data = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        code = int(str(status).split(" ", 1)[0])
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        return RestAnswer(code, parsed, {k.lower(): v for k, v in resp_headers.items()})


def authorization(context: Any) -> str | None:
    """The ``authorization`` metadata of an RPC (gRPC keys are lower-case)."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def lensbox_trailers(answer: RestAnswer) -> tuple[tuple[str, str], ...]:
    """The X-Lensbox-* headers of an answer as trailing metadata (query id, sources)."""
    return tuple((k, v) for k, v in answer.headers.items() if k.startswith("x-lensbox-"))
