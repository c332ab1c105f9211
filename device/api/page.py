"""The web page at ``/``: try the box from a phone or a laptop, no build step, no CDN.

``device/api/static/`` holds plain HTML, JavaScript and CSS shipped in the package; the
page talks to the native API (``/v1/search``, ``/v1/items``, ``/v1/bundles``, the item
writes) with the API key the user types in, so it needs no privileges of its own.

``/`` is also the Alibaba RPC endpoint. A ``GET /`` is the page only when it names no
``Action`` and either has no parameters at all or comes from a browser (one that prefers
``text/html`` to JSON in ``Accept``); everything else (any ``Action``, any ``POST``) goes
to the Alibaba contract exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Response, request

STATIC_DIR = Path(__file__).with_name("static")
INDEX = STATIC_DIR / "index.html"
# The page is a static file: it may be framed by nothing and load only from this origin.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def wants_page() -> bool:
    """Whether this request to ``/`` is a person opening the page (not an RPC call)."""
    if request.method != "GET":
        return False
    if any(key.lower() == "action" for key in request.args):
        return False
    if not request.args:
        return True
    accept = request.accept_mimetypes  # a browser prefers HTML; curl / SDKs send */*
    return accept.quality("text/html") > accept.quality("application/json")


def page_response() -> Response:
    resp = Response(INDEX.read_bytes(), mimetype="text/html")
    resp.headers.update(HEADERS)
    return resp


def page_or(rpc_view: Callable[..., Response]) -> Callable[..., Response]:
    """Wrap the Alibaba view on ``/``: the page for a browser's plain GET, else the RPC."""

    def view(**params: str) -> Response:
        if wants_page():
            return page_response()
        return rpc_view(**params)

    view.__name__ = rpc_view.__name__
    return view
