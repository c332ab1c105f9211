"""Yandex Search API v2, REST: ``POST /v2/image/search_by_image``.

Request (camelCase, as the REST docs show; snake_case gRPC-JSON names accepted too):
exactly one of ``url``, ``data`` (base64, at most 3 MiB of image) or ``id`` (the CBIR id an
earlier search returned), ``page`` (0-based, number or numeric string), ``site``,
``familyMode`` (FAMILY_MODE_NONE / _MODERATE (default) / _STRICT), ``folderId``.

Response: ``images[{url, format, width, height, passage, host, pageTitle, pageUrl}]``,
``page``, ``maxPage``, ``id``; int64 fields are JSON strings (proto3 JSON mapping), exactly
like the documented example. Errors are gRPC statuses: ``{code, message, details}`` with
the HTTP status the gRPC gateway maps each code to.

``folderId`` picks the bundle when one is loaded under that name; any other folder id
(an unchanged client sends its cloud folder) falls back to ``default``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flask import Request, Response

from lensbox.device.api.auth import bearer
from lensbox.device.api.contract import Contract, Route, json_response
from lensbox.device.api.errors import ApiError
from lensbox.device.api.params import as_int, as_str, in_range, item_url, json_object
from lensbox.device.serving.query import (
    FamilyMode,
    Filters,
    ImageLimits,
    ImageSource,
    SearchOutcome,
    SearchQuery,
    SourceKind,
)

MiB = 1024 * 1024
FORMATS = {
    "JPEG": "IMAGE_FORMAT_JPEG",
    "MPO": "IMAGE_FORMAT_JPEG",
    "GIF": "IMAGE_FORMAT_GIF",
    "PNG": "IMAGE_FORMAT_PNG",
}
FAMILY: dict[str, FamilyMode] = {
    "FAMILY_MODE_UNSPECIFIED": "moderate",
    "UNSPECIFIED": "moderate",
    "FAMILY_MODE_NONE": "none",
    "NONE": "none",
    "FAMILY_MODE_MODERATE": "moderate",
    "MODERATE": "moderate",
    "FAMILY_MODE_STRICT": "strict",
    "STRICT": "strict",
}
FAMILY_NUMBERS: dict[int, FamilyMode] = {0: "moderate", 1: "none", 2: "moderate", 3: "strict"}

# gRPC status codes and the HTTP status the REST gateway answers with.
INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, PERMISSION_DENIED = 3, 4, 5, 7
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL = 8, 9, 12, 13
UNAVAILABLE, UNAUTHENTICATED = 14, 16
GRPC_HTTP = {3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 400, 12: 501, 13: 500, 14: 503, 16: 401}
GRPC_FOR = {
    "unauthenticated": UNAUTHENTICATED,
    "forbidden": PERMISSION_DENIED,
    "url_not_allowed": PERMISSION_DENIED,
    "throttled": RESOURCE_EXHAUSTED,
    "not_found": NOT_FOUND,
    "unknown_instance": NOT_FOUND,
    "route_not_found": NOT_FOUND,
    "method_not_allowed": UNIMPLEMENTED,
    "url_fetch_failed": FAILED_PRECONDITION,
    "url_timeout": DEADLINE_EXCEEDED,
    "not_ready": UNAVAILABLE,
    "internal": INTERNAL,
    "cloud_unavailable": UNAVAILABLE,
    "cloud_timeout": DEADLINE_EXCEEDED,
}


def _get(body: dict[str, Any], *names: str) -> Any:
    for name in names:
        if body.get(name) not in (None, ""):
            return body[name]
    return None


class YandexContract(Contract):
    name = "yandex"
    limits = ImageLimits(max_bytes=3 * MiB)  # "data: maximum length 3145728"

    def routes(self) -> list[Route]:
        return [Route("/v2/image/search_by_image", ("POST",), self.search)]

    def owns(self, path: str) -> bool:
        return path.startswith("/v2/image/")

    def credential(self, req: Request) -> str | None:
        return bearer(req.headers.get("Authorization"), "Api-Key", "Bearer")

    def parse(self, req: Request, **params: str) -> SearchQuery:
        body = json_object(req)
        given = [k for k in ("url", "data", "id") if body.get(k) not in (None, "")]
        if len(given) != 1:
            raise ApiError(
                "missing_image" if not given else "ambiguous_image",
                "exactly one of url, data, id must be set",
            )
        key = given[0]
        text = as_str(body[key], key, 4 * MiB + 16 if key == "data" else 1024)
        kinds: dict[str, SourceKind] = {"url": "url", "data": "base64", "id": "id"}
        source = ImageSource(kinds[key], text=text)
        page = in_range(as_int(body.get("page", 0) or 0, "page"), "page", 0, 10_000)
        site = _get(body, "site")
        folder = _get(body, "folderId", "folder_id")
        filters = Filters(
            site=as_str(site, "site", 1024) if site else None,
            family_mode=self._family(_get(body, "familyMode", "family_mode")),
        )
        size = self.ctx.server.yandex_page_size
        return SearchQuery(
            instance=self._instance(as_str(folder, "folderId", 50) if folder else None),
            sources=[source],
            limits=self.limits,
            top_k=size,
            offset=page * size,
            filters=filters,
        )

    def _family(self, value: Any) -> FamilyMode:
        if value is None:
            return "moderate"
        if isinstance(value, int) and not isinstance(value, bool) and value in FAMILY_NUMBERS:
            return FAMILY_NUMBERS[value]
        if isinstance(value, str) and value.strip().upper() in FAMILY:
            return FAMILY[value.strip().upper()]
        raise ApiError("bad_param", f"unknown familyMode {value!r:.40}", "familyMode")

    def _instance(self, folder: str | None) -> str:
        return folder if folder in self.ctx.service.names() else "default"

    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        size = query.top_k
        page = query.offset // size
        max_page = max(0, math.ceil(outcome.total / size) - 1)
        # No per-image source field: proto3 JSON parsers reject unknown fields by default,
        # so the source of each image travels in the X-Lensbox-Source header only.
        images = [self._image(h.item, req.host_url) for h in outcome.hits]
        return json_response(
            {
                "images": images,
                "page": str(page),
                "maxPage": str(max_page),
                "id": outcome.query_id or "",
            }
        )

    def _image(self, item: Mapping[str, Any], host_url: str) -> dict:
        return {
            "url": item_url(item, host_url),
            "format": FORMATS.get(
                str(item.get("format") or "").upper(), "IMAGE_FORMAT_UNSPECIFIED"
            ),
            "width": str(int(item.get("width") or 0)),
            "height": str(int(item.get("height") or 0)),
            "passage": item.get("custom_content") or item.get("title") or "",
            "host": item.get("host") or "",
            "pageTitle": item.get("title") or "",
            "pageUrl": item.get("page_url") or "",
        }

    def render_error(self, error: ApiError) -> Response:
        code = GRPC_FOR.get(error.code, INVALID_ARGUMENT)
        body = {"code": code, "message": error.message, "details": []}
        return json_response(body, GRPC_HTTP[code])
