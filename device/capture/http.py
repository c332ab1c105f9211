"""HTTP face of the kiosk loop: a Flask Blueprint the daemon's API registers.

    from lensbox.device.capture.http import make_blueprint
    app.register_blueprint(make_blueprint(kiosk_loop))

Routes (paths are absolute; pass ``url_prefix`` to move them):

* ``POST /v1/trigger`` — body ``{"tag": "42"}`` (optional; or ``?tag=42``) -> the lookup's
  JSON (status ok | nomatch | retake | error with HTTP 200; busy with 429 + Retry-After).
* ``GET /v1/last`` — the last lookup's JSON (404 before the first); ``?frame=1`` returns the
  frame it judged as image/jpeg instead.
* ``GET /v1/kiosk/health`` — camera, serial and webhook state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lensbox.device.capture.protocol import TAG_RE

if TYPE_CHECKING:
    from flask import Blueprint, Flask

    from lensbox.device.capture.kiosk import KioskLoop

TRUE = ("1", "true", "yes", "on")


def _error(code: str, message: str, status: int) -> Any:
    from flask import jsonify

    return jsonify({"error": {"code": code, "message": message}}), status


def make_blueprint(
    loop: KioskLoop, name: str = "kiosk", url_prefix: str | None = None
) -> Blueprint:
    from flask import Blueprint, Response, jsonify, request

    bp = Blueprint(name, __name__, url_prefix=url_prefix)

    @bp.post("/v1/trigger")
    def trigger() -> Any:
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        tag = body.get("tag", request.args.get("tag"))
        if tag is not None:
            tag = str(tag)
            if not TAG_RE.match(tag):
                return _error("badtag", "tag is 1-16 characters of A-Z a-z 0-9 _ . -", 400)
        result = loop.trigger("http", tag)
        resp = jsonify(result.to_json())
        if result.status == "busy":
            resp.status_code = 429
            resp.headers["Retry-After"] = str(max(1, math.ceil((result.retry_ms or 0) / 1000)))
        return resp

    @bp.get("/v1/last")
    def last() -> Any:
        result = loop.last()
        if result is None:
            return _error("nolookup", "no lookup has run yet", 404)
        if request.args.get("frame", "").lower() in TRUE:
            jpeg = loop.last_frame_jpeg()
            if jpeg is None:
                return _error("noframe", "the last lookup had no frame (camera down?)", 404)
            return Response(
                jpeg,
                mimetype="image/jpeg",
                headers={"X-Lookup-Id": str(result.lookup_id), "Cache-Control": "no-store"},
            )
        return jsonify(result.to_json())

    @bp.get("/v1/kiosk/health")
    def health() -> Any:
        return jsonify(loop.health())

    return bp


def create_app(loop: KioskLoop) -> Flask:
    """A Flask app with only the kiosk routes (``lensbox kiosk --http``)."""
    from flask import Flask

    app = Flask("lensbox.kiosk")
    app.register_blueprint(make_blueprint(loop))
    return app
