"""The one interface every API shape implements: parse a request into the common query,
render an outcome, render an error. The app wraps every route with the same guard
(authentication, rate limit, catch-all), so a contract is only about its own shapes.
"""

from __future__ import annotations

import json
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from flask import Request, Response, request

from lensbox.device.api.errors import ApiError
from lensbox.device.config.server import ServerConfig
from lensbox.device.serving.fallback_hook import CloudFallback, fallback_header
from lensbox.device.serving.query import ImageLimits, SearchOutcome, SearchQuery
from lensbox.device.serving.service import SearchService

BODY_OVERHEAD = 256 * 1024


@dataclass(frozen=True)
class Route:
    rule: str
    methods: tuple[str, ...]
    handler: Callable[..., Response]
    public: bool = False  # no API key, no rate limit (health checks, metrics)


@dataclass
class ApiContext:
    """What contracts share: the search service, the server settings, the cloud
    fallback (None while ``fallback.enabled`` is off) and the catalog writer (writes.py)."""

    service: SearchService
    server: ServerConfig
    fallback: CloudFallback | None = None
    writer: Any = None

    def answer(self, query: SearchQuery) -> SearchOutcome:
        """The local search, then the cloud when it is weak (a purely local answer never
        goes through the fallback)."""
        if self.fallback is not None:
            return self.fallback.run(query)
        return self.service.run(query)


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from old stored data: never a 500
        data = text.encode("utf-8", "replace")
    resp = Response(data, status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def request_id() -> str:
    return str(uuid.uuid4()).upper()


def has_cloud_hits(outcome: SearchOutcome) -> bool:
    """Whether the cloud contributed: provider contracts then mark every hit's source in
    the body too (a purely local answer keeps the exact documented body)."""
    return any(h.source != "local" for h in outcome.hits)


class Contract(ABC):
    """One API shape (native or a provider's); implementations live side by side."""

    name: ClassVar[str]
    limits: ImageLimits  # set on the class, or per instance (native: the server's bounds)

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    # -- what each contract defines ---------------------------------------------------
    @abstractmethod
    def routes(self) -> list[Route]:
        """URL rules served by this contract."""

    @abstractmethod
    def owns(self, path: str) -> bool:
        """Whether a path belongs to this contract (to shape 404/405/413 errors)."""

    @abstractmethod
    def credential(self, req: Request) -> str | None:
        """The API key as this contract's clients send it, if any."""

    @abstractmethod
    def parse(self, req: Request, **params: str) -> SearchQuery:
        """Provider request -> common query (raises ApiError)."""

    @abstractmethod
    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        """Common outcome -> provider response."""

    @abstractmethod
    def render_error(self, error: ApiError) -> Response:
        """Common error -> provider error shape and HTTP status."""

    # -- shared flow ------------------------------------------------------------------
    @property
    def max_body_bytes(self) -> int:
        """Largest request this contract can need: its image as base64 plus room for the
        other fields. Bodies past it are refused before any parsing."""
        limit = math.ceil(self.limits.max_bytes * 4 / 3) + BODY_OVERHEAD
        return min(limit, self.ctx.server.max_request_bytes)

    def search(self, **params: str) -> Response:
        query = self.parse(request, **params)
        outcome = self.ctx.answer(query)
        resp = self.render(outcome, query, request)
        if outcome.query_id:
            resp.headers["X-Lensbox-Query-Id"] = outcome.query_id
        resp.headers["X-Lensbox-Cached"] = "true" if outcome.cached else "false"
        # Where each hit came from, in hit order: "local" or "cloud:<provider>".
        resp.headers["X-Lensbox-Source"] = ",".join(h.source for h in outcome.hits)
        if outcome.fallback is not None:
            resp.headers["X-Lensbox-Fallback"] = fallback_header(outcome.fallback)
        return resp
