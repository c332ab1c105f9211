"""The Flask app: every contract's routes behind one guard.

The guard checks the API key (in the contract's own header style), applies the per-client
rate limit, and turns *any* failure into the contract's own error shape: an
:class:`ApiError`, a Werkzeug HTTP error (404, 405, 413 from ``MAX_CONTENT_LENGTH``), or an
unexpected exception (logged with its traceback, answered with the contract's internal
error and no details). A client never sees a Flask HTML page or a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from flask import Flask, Response, g, request
from lensbox.device.api.alibaba import AlibabaContract
from lensbox.device.api.auth import Authenticator
from lensbox.device.api.clarifai import ClarifaiContract
from lensbox.device.api.contract import ApiContext, Contract, Route, json_response
from lensbox.device.api.engines import make_instances
from lensbox.device.api.errors import ApiError, internal_error
from lensbox.device.api.fallback_hook import CloudFallback
from lensbox.device.api.huawei import HuaweiContract
from lensbox.device.api.limits import RateLimiter
from lensbox.device.api.metrics import Metrics
from lensbox.device.api.native import NativeContract
from lensbox.device.api.service import SearchService
from lensbox.device.api.urlfetch import UrlPolicy
from lensbox.device.api.yandex import YandexContract
from lensbox.device.config.loader import LensboxConfig
from lensbox.device.search.engine import SearchEngine
from werkzeug.exceptions import HTTPException

log = logging.getLogger("lensbox.api")

HTTP_CODES = {404: "route_not_found", 405: "method_not_allowed", 413: "request_too_large"}


def _http_error(exc: HTTPException) -> ApiError:
    code = HTTP_CODES.get(exc.code or 400, "bad_request")
    if code == "request_too_large":
        limit = request.max_content_length
        return ApiError(code, f"the request body is over the limit of {limit} bytes")
    return ApiError(code, exc.description or exc.name)


class Guard:
    """Auth + rate limit + error shaping around each route of a contract."""

    def __init__(self, auth: Authenticator, limiter: RateLimiter) -> None:
        self.auth = auth
        self.limiter = limiter

    def admit(self, contract: Contract) -> None:
        address = f"addr:{request.remote_addr or '?'}"
        credential = contract.credential(request)
        try:
            self.auth.check(credential)
        except ApiError:
            self.limiter.check(address)  # failed keys spend the address' budget
            raise
        key = f"key:{credential}" if credential and self.auth.required else address
        self.limiter.check(key)

    def wrap(self, contract: Contract, route: Route):
        def view(**params: str) -> Response:
            try:
                request.max_content_length = contract.max_body_bytes
                if not route.public:
                    self.admit(contract)
                return route.handler(**params)
            except ApiError as exc:
                return error_response(contract, exc)
            except HTTPException as exc:
                return error_response(contract, _http_error(exc))
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                return error_response(contract, internal_error())

        view.__name__ = f"{contract.name}_{route.handler.__name__}_{len(route.rule)}"
        return view


def error_response(contract: Contract, error: ApiError) -> Response:
    resp = contract.render_error(error)
    if error.code == "throttled":
        resp.headers["Retry-After"] = str(getattr(error, "retry_after", 1))
    return resp


def create_app(
    config: LensboxConfig,
    engines: Mapping[str, SearchEngine | Sequence[SearchEngine]],
) -> Flask:
    """The WSGI app over ``engines`` (instance name -> one engine, or one per interpreter).

    A single bundle also answers to ``default``. With one engine per instance, embedding
    is serialised by a single interpreter slot; :func:`~lensbox.device.api.engines.load_engines`
    builds several.
    """
    server = config.server
    instances, slots = make_instances(engines)
    metrics = Metrics()
    service = SearchService(
        instances, slots, metrics, server.query_cache_size,
        UrlPolicy(server.url_allow_hosts, server.url_timeout_s, server.url_max_redirects),
        server.max_pixels,
    )
    # Nothing is sent anywhere unless fallback.enabled: no router exists otherwise.
    fallback = (CloudFallback(config.fallback, service, metrics)
                if config.fallback.enabled else None)
    ctx = ApiContext(service, server, fallback)
    native = NativeContract(ctx)
    contracts: list[Contract] = [
        YandexContract(ctx), AlibabaContract(ctx), HuaweiContract(ctx), ClarifaiContract(ctx),
        native,
    ]
    guard = Guard(Authenticator(server.api_keys, server.auth_required),
                  RateLimiter(server.rate_limit, server.rate_burst))

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = server.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = server.max_request_bytes
    app.extensions["lensbox"] = {"service": service, "metrics": metrics, "contracts": contracts,
                                 "fallback": fallback, "kiosk": None}
    for contract in contracts:
        for route in contract.routes():
            app.add_url_rule(route.rule, view_func=guard.wrap(contract, route),
                             methods=list(route.methods))
    _add_probes(app, service, metrics, fallback)
    if config.kiosk.in_daemon:
        from lensbox.device.api.kiosk_mount import mount_kiosk

        def admit_kiosk() -> Response | None:
            try:
                guard.admit(native)
            except ApiError as exc:
                return error_response(native, exc)
            return None

        app.extensions["lensbox"]["kiosk"] = mount_kiosk(app, config, instances, slots,
                                                         admit_kiosk)

    def contract_for(path: str) -> Contract:
        return next(c for c in contracts if c.owns(path))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return error_response(contract_for(request.path), _http_error(exc))

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(contract_for(request.path), internal_error())

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _count(resp: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.request(rule, request.method, resp.status_code, elapsed)
        log.info("%s %s %s %d %.1f ms", request.remote_addr, request.method, request.path,
                 resp.status_code, elapsed * 1e3)
        return resp

    return app


def close_app(app: Flask) -> None:
    """Stop what :func:`create_app` started besides routes (the in-daemon kiosk loop)."""
    kiosk = app.extensions.get("lensbox", {}).get("kiosk")
    if kiosk is not None:
        kiosk.stop()
        app.extensions["lensbox"]["kiosk"] = None


def _add_probes(
    app: Flask, service: SearchService, metrics: Metrics, fallback: CloudFallback | None
) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        status = fallback.status() if fallback is not None else {"enabled": False}
        return json_response({"status": "ok", "fallback": status})

    @app.get("/readyz")
    def readyz() -> Response:
        names = service.names()
        if not names:
            return json_response({"status": "not_ready", "instances": []}, 503)
        return json_response(
            {"status": "ready", "instances": names, "interpreters": service.slots.count}
        )

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
