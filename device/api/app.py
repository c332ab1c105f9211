"""The Flask app: every contract's routes behind one guard.

The guard checks the API key (in the contract's own header style), applies the per-client
rate limit, and turns *any* failure into the contract's own error shape: an
:class:`ApiError`, a Werkzeug HTTP error (404, 405, 413 from ``MAX_CONTENT_LENGTH``), or an
unexpected exception (logged with its traceback, answered with the contract's internal
error and no details). A client never sees a Flask HTML page or a traceback.

Under `lensbox serve` the app serves a :class:`~lensbox.device.live.manager.BundleManager`'s
live catalogs (``create_app(config, manager=..., pool=...)``): instances are resolved per
request, catalog changes go through the manager, ``/readyz`` is the manager's readiness and
``/metrics`` carries catalog gauges. Without a ``[state]`` section the manager opens the
same catalogs read-only: there is no other serving mode.
"""

from __future__ import annotations

import calendar
import logging
import time
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from lensbox.device.api import page
from lensbox.device.api.alibaba import AlibabaContract
from lensbox.device.api.auth import Authenticator
from lensbox.device.api.clarifai import ClarifaiContract
from lensbox.device.api.contract import ApiContext, Contract, Route, json_response
from lensbox.device.api.errors import ApiError, internal_error
from lensbox.device.api.huawei import HuaweiContract, HuaweiV2Contract
from lensbox.device.api.limits import RateLimiter
from lensbox.device.api.native import NativeContract
from lensbox.device.api.yandex import YandexContract
from lensbox.device.config.loader import LensboxConfig
from lensbox.device.config.server import is_loopback_address
from lensbox.device.live.manager import BundleManager
from lensbox.device.serving.fallback_hook import CloudFallback
from lensbox.device.serving.instances import ManagedInstances
from lensbox.device.serving.interpreters import InterpreterPool
from lensbox.device.serving.metrics import Metrics, render_gauge
from lensbox.device.serving.service import SearchService
from lensbox.device.serving.urlfetch import UrlPolicy
from lensbox.device.serving.writes import CatalogWriter

log = logging.getLogger("lensbox.api")
access_log = logging.getLogger("lensbox.access")  # one line per request (`serve -v`)

HTTP_CODES = {404: "route_not_found", 405: "method_not_allowed", 413: "request_too_large"}


def _http_error(exc: HTTPException) -> ApiError:
    code = HTTP_CODES.get(exc.code or 400, "bad_request")
    if code == "request_too_large":
        limit = request.max_content_length
        return ApiError(code, f"the request body is over the limit of {limit} bytes")
    return ApiError(code, exc.description or exc.name)


# Errors reading a request's body: such a request carries no key (it is then refused as
# unauthenticated where keys are required), unlike a signature that was read and refused.
UNREADABLE = frozenset({"bad_json"})


class Guard:
    """Auth + rate limit + error shaping around each route of a contract."""

    def __init__(
        self, auth: Authenticator, limiter: RateLimiter, exempt_loopback: bool = False
    ) -> None:
        self.auth = auth
        self.limiter = limiter
        self.exempt_loopback = exempt_loopback

    def admit(self, contract: Contract) -> None:
        """Authenticate first, then charge the client's rate budget: a request whose body is
        too broken to carry a key (Alibaba reads it from the body) carries none, so it is
        refused as unauthenticated where keys are required, and counted either way."""
        address = f"addr:{request.remote_addr or '?'}"
        try:
            credential = contract.credential(request)  # may verify a signature
        except ApiError as exc:
            if exc.code not in UNREADABLE:  # a refused signature is the answer
                self._charge(address)
                raise
            credential = None  # a body too broken to carry a key carries none
        try:
            self.auth.check(credential)
        except ApiError:
            self._charge(address)  # failed keys spend the address' budget
            raise
        key = f"key:{credential}" if credential and self.auth.required else address
        self._charge(key)

    def _charge(self, key: str) -> None:
        if self.exempt_loopback and is_loopback_address(request.remote_addr):
            return
        self.limiter.check(key)

    def authorized(self, contract: Contract) -> bool:
        """Whether this request carries a valid key (always, where none is required)."""
        try:
            self.auth.check(contract.credential(request))
        except ApiError:
            return False
        return True

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


def create_app(config: LensboxConfig, *, manager: BundleManager, pool: InterpreterPool) -> Flask:
    """The WSGI app over a bundle ``manager``'s live catalogs, opened on ``pool``'s
    interpreters (:func:`~lensbox.device.serving.daemon.open_daemon` builds both).

    A single bundle also answers to ``default``.
    """
    server = config.server
    instances = ManagedInstances(manager, pool)
    slots = pool.slots
    metrics = Metrics()
    service = SearchService(
        instances,
        slots,
        metrics,
        server.query_cache_size,
        UrlPolicy(
            server.url_allow_hosts,
            server.url_timeout_s,
            server.url_max_redirects,
            server.url_concurrency or max(1, server.threads - 1),
        ),
        server.max_pixels,
    )
    # Nothing is sent anywhere unless fallback.enabled: no router exists otherwise.
    fallback = CloudFallback(config.fallback, service, metrics) if config.fallback.enabled else None
    ctx = ApiContext(service, server, fallback, CatalogWriter(service, metrics))
    native = NativeContract(ctx)
    contracts: list[Contract] = [
        YandexContract(ctx),
        AlibabaContract(ctx),
        HuaweiContract(ctx),
        HuaweiV2Contract(ctx),
        ClarifaiContract(ctx),
        native,
    ]
    guard = Guard(
        Authenticator(server.api_keys, server.auth_required),
        RateLimiter(server.rate_limit, server.rate_burst),
        server.rate_limit_exempt_loopback,
    )

    # static/: the page's JS and CSS, served at /static/ (public: no data in them)
    app = Flask(__name__, static_folder=str(page.STATIC_DIR))
    app.config["MAX_CONTENT_LENGTH"] = server.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = server.max_request_bytes
    app.extensions["lensbox"] = {
        "service": service,
        "metrics": metrics,
        "contracts": contracts,
        "fallback": fallback,
        "kiosk": None,
        "instances": instances,
        "manager": manager,
    }
    for contract in contracts:
        for route in contract.routes():
            view = guard.wrap(contract, route)
            if route.rule == "/":  # the web page, unless the request is an Alibaba RPC
                view = page.page_or(view)
            app.add_url_rule(route.rule, view_func=view, methods=list(route.methods))
    _add_probes(app, service, metrics, fallback, lambda: guard.authorized(native))
    metrics.add_collector(lambda: catalog_gauges(instances))
    if config.kiosk.in_daemon:
        from lensbox.device.api.kiosk_mount import mount_kiosk

        def admit_kiosk() -> Response | None:
            try:
                guard.admit(native)
            except ApiError as exc:
                return error_response(native, exc)
            return None

        app.extensions["lensbox"]["kiosk"] = mount_kiosk(app, config, instances, admit_kiosk)

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
        access_log.info(
            "%s %s %s %d %.1f ms",
            request.remote_addr,
            request.method,
            request.path,
            resp.status_code,
            elapsed * 1e3,
        )
        return resp

    return app


def close_app(app: Flask) -> None:
    """Stop what :func:`create_app` started besides routes (the in-daemon kiosk loop)."""
    kiosk = app.extensions.get("lensbox", {}).get("kiosk")
    if kiosk is not None:
        kiosk.stop()
        app.extensions["lensbox"]["kiosk"] = None


def _add_probes(
    app: Flask,
    service: SearchService,
    metrics: Metrics,
    fallback: CloudFallback | None,
    authorized: Any = lambda: True,
) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        status = fallback.status() if fallback is not None else {"enabled": False}
        return json_response({"status": "ok", "fallback": status})

    @app.get("/readyz")
    def readyz() -> Response:
        """Ready once every configured instance serves; ``details`` per instance: bundle,
        items, delta, pending changes, last compaction, writable, last error."""
        ok, details = service.instances.ready()
        names = service.names()
        ready = ok and bool(names)
        body: dict[str, Any] = {
            "status": "ready" if ready else "not_ready",
            "instances": names,
            "interpreters": service.slots.count,
        }
        if authorized():  # paths and errors only for a client with a key (or on loopback)
            body["details"] = details
        return json_response(body, 200 if ready else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")


def _timestamp(text: Any) -> float:
    """``2026-01-02T03:04:05Z`` -> seconds since the epoch (0 when absent)."""
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return 0.0


def catalog_gauges(instances: Any) -> list[str]:
    """Per-instance catalog gauges for /metrics (read at scrape time)."""
    _ok, details = instances.ready()
    rows: dict[str, list] = {
        k: []
        for k in (
            "ready",
            "items",
            "vectors",
            "delta",
            "deleted",
            "pending",
            "journal",
            "compacted",
            "loaded",
        )
    }
    for name, entry in details.items():
        label = (("instance", name),)
        rows["ready"].append((label, 1.0 if entry.get("ready") else 0.0))
        inst = instances.get(name) if entry.get("ready") else None
        if inst is None:
            continue
        stats = inst.catalog.stats()
        bundle = inst.catalog.bundle
        rows["items"].append((label, stats["items"]))
        rows["vectors"].append((label, len(bundle.vectors)))
        rows["delta"].append((label, stats["delta_items"]))
        rows["deleted"].append((label, stats["deleted_base_items"]))
        rows["pending"].append((label, stats["pending_changes"]))
        if stats.get("journal_bytes") is not None:
            rows["journal"].append((label, stats["journal_bytes"]))
        live = bundle.manifest.get("live") or {}
        rows["compacted"].append((label, _timestamp(live.get("compacted"))))
        if inst.loaded_at:
            rows["loaded"].append((label, inst.loaded_at))
    specs = [
        ("lensbox_instance_ready", "1 when the instance serves", "ready"),
        ("lensbox_index_items", "live catalog items (bundle - deleted + added)", "items"),
        ("lensbox_index_vectors", "descriptors in the base bundle's index", "vectors"),
        (
            "lensbox_delta_items",
            "items added or changed since the bundle was written "
            "(searched exactly until compaction)",
            "delta",
        ),
        ("lensbox_deleted_items", "bundle items hidden by a tombstone until compaction", "deleted"),
        (
            "lensbox_pending_changes",
            "journaled changes not yet compacted into the bundle",
            "pending",
        ),
        ("lensbox_journal_bytes", "size of the live-change journal", "journal"),
        (
            "lensbox_last_compaction_timestamp_seconds",
            "when the served bundle was written by a compaction (0: never)",
            "compacted",
        ),
        ("lensbox_bundle_loaded_timestamp_seconds", "when the served catalog was loaded", "loaded"),
    ]
    lines: list[str] = []
    for name, help_text, key in specs:
        lines += render_gauge(name, help_text, rows[key])
    return lines
