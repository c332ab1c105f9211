"""Clarifai v2 visual search: ``POST /v2/annotations/searches`` (and the app-scoped
``/v2/users/{user_id}/apps/{app_id}/annotations/searches``).

``searches[0].query.ranks[]`` combine: each rank's ``annotation`` gives an image
(``data.image.url`` / ``.base64``), a known input (``input_id``: a catalog item id or a
query id this server answered with), or concepts (``data.concepts[{id|name, value}]``,
value 1 = must have, 0 = must not have). Image ranks are searched together; concept ranks
filter them, or rank alone by the item's concept value. ``filters[].annotation.data``
restricts by ``metadata`` (the item's tags) and concepts; a filter with ``negate: true`` keeps
the items it does *not* match. ``pagination {page (1-based),
per_page}``. The app id (path or ``user_app_id.app_id``) picks the bundle; none means
``default``.

Response ``{status{code, description, req_id}, hits[{score, input{id, data}, annotation}]}``;
errors keep the ``status`` shape with Clarifai's own status codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Request, Response

from lensbox.device.api.auth import bearer
from lensbox.device.api.contract import (
    Contract,
    Route,
    has_cloud_hits,
    json_response,
    request_id,
)
from lensbox.device.api.errors import ApiError
from lensbox.device.api.params import as_int, as_str, as_tags, in_range, item_url, json_object
from lensbox.device.serving.filters import Predicate, has_concept
from lensbox.device.serving.query import (
    ConceptTerm,
    Filters,
    ImageLimits,
    ImageSource,
    SearchOutcome,
    SearchQuery,
)

MB = 1000 * 1000
SUCCESS = 10000
MAX_PER_PAGE = 1000
FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "BMP", "WEBP", "GIF"})

# common code -> (HTTP status, Clarifai status code, description)
ERRORS: dict[str, tuple[int, int, str]] = {
    "unauthenticated": (401, 11009, "API key not found"),
    "forbidden": (401, 11008, "Invalid API key or Invalid API key/application pair"),
    "throttled": (429, 11005, "Making too many requests"),
    "bad_json": (400, 11100, "Bad request format"),
    "request_too_large": (400, 40033, "Request too large"),
    "unknown_instance": (404, 11101, "Resource does not exist"),
    "route_not_found": (404, 11101, "Resource does not exist"),
    "method_not_allowed": (405, 11103, "Method not allowed"),
    "not_found": (404, 30102, "Input does not exist"),
    "url_not_allowed": (400, 30106, "Invalid URL"),
    "url_fetch_failed": (400, 30002, "Download failed"),
    "url_timeout": (400, 30002, "Download failed"),
    "bad_base64": (400, 30101, "Input unsupported format"),
    "empty_image": (400, 30101, "Input unsupported format"),
    "not_an_image": (400, 30101, "Input unsupported format"),
    "truncated_image": (400, 30101, "Input unsupported format"),
    "unsupported_format": (400, 30101, "Input unsupported format"),
    "too_small": (400, 30104, "Input invalid argument"),
    "too_large": (400, 30104, "Input invalid argument"),
    "too_many_pixels": (400, 30104, "Input invalid argument"),
    "too_many_bytes": (400, 30104, "Input invalid argument"),
    "not_ready": (503, 40031, "Server unavailable"),
    "internal": (500, 98004, "Internal server issue"),
    "cloud_unavailable": (503, 40031, "Server unavailable"),
    "cloud_timeout": (503, 40031, "Server unavailable"),
}
SEARCH_INVALID = (400, 40002, "Invalid search request")


def _obj(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError("bad_param", f"{name} must be an object", name)
    return value


def _concept_terms(raw: Any, where: str) -> list[ConceptTerm]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ApiError("bad_param", f"{where}.concepts must be a list", where)
    terms = []
    for concept in raw:
        concept = _obj(concept, f"{where}.concepts[]")
        cid, name = concept.get("id"), concept.get("name")
        if not (isinstance(cid, str) and cid) and not (isinstance(name, str) and name):
            raise ApiError("bad_param", "each concept needs an id or a name", where)
        value = concept.get("value", 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError("bad_param", "a concept value must be 1 or 0", where)
        terms.append(ConceptTerm(cid or None, name or None, include=value >= 0.5))
    return terms


def _negated(tags: dict[str, str], terms: list[ConceptTerm]) -> Predicate:
    """An item passes unless it matches every tag and concept term of the filter."""

    def keep(item: Mapping[str, Any]) -> bool:
        own = item.get("tags") or {}
        matched = all(str(own.get(k)) == v for k, v in tags.items()) and all(
            has_concept(item, t) == t.include for t in terms
        )
        return not matched

    return keep


def _all_of(first: Predicate | None, second: Predicate) -> Predicate:
    if first is None:
        return second
    return lambda item: first(item) and second(item)


class ClarifaiContract(Contract):
    name = "clarifai"
    limits = ImageLimits(max_bytes=20 * MB, formats=FORMATS, max_pixels=85_000_000)

    def routes(self) -> list[Route]:
        return [
            Route("/v2/annotations/searches", ("POST",), self.search),
            Route("/v2/users/<user_id>/apps/<app_id>/annotations/searches", ("POST",), self.search),
        ]

    def owns(self, path: str) -> bool:
        return path.startswith("/v2/") and not path.startswith("/v2/image/")

    def credential(self, req: Request) -> str | None:
        return bearer(req.headers.get("Authorization"), "Key", "Bearer")

    def parse(self, req: Request, **params: str) -> SearchQuery:
        body = json_object(req)
        app_id = params.get("app_id") or _obj(body.get("user_app_id"), "user_app_id").get("app_id")
        searches = body.get("searches")
        if not isinstance(searches, list) or len(searches) != 1:
            raise ApiError("bad_request", "searches must hold exactly one search")
        query = _obj(_obj(searches[0], "searches[0]").get("query"), "query")
        ranks = query.get("ranks") or []
        if not isinstance(ranks, list) or not ranks:
            raise ApiError("bad_request", "query.ranks must be a non-empty list")
        sources: list[ImageSource] = []
        filters = Filters()
        for rank in ranks:
            self._rank(_obj(rank, "ranks[]"), sources, filters)
        raw_filters = query.get("filters") or []
        if not isinstance(raw_filters, list):
            raise ApiError("bad_param", "query.filters must be a list", "filters")
        for flt in raw_filters:
            self._filter(_obj(flt, "filters[]"), filters)
        page_info = _obj(body.get("pagination"), "pagination")
        page = in_range(as_int(page_info.get("page", 1), "page"), "page", 1, 10_000)
        per_page = in_range(
            as_int(page_info.get("per_page", 20), "per_page"), "per_page", 1, MAX_PER_PAGE
        )
        return SearchQuery(
            instance=as_str(app_id, "app_id", 128) if app_id else None,
            sources=sources,
            limits=self.limits,
            top_k=per_page,
            offset=(page - 1) * per_page,
            filters=filters,
        )

    def _rank(self, rank: dict, sources: list[ImageSource], filters: Filters) -> None:
        ann = _obj(rank.get("annotation"), "annotation")
        data = _obj(ann.get("data"), "annotation.data")
        image = _obj(data.get("image"), "annotation.data.image")
        found = False
        input_id = ann.get("input_id") or image.get("input_id")
        if input_id:
            sources.append(ImageSource("id", text=as_str(input_id, "input_id", 1024)))
            found = True
        if image.get("base64"):
            sources.append(ImageSource("base64", text=as_str(image["base64"], "base64", 30 * MB)))
            found = True
        elif image.get("url"):
            sources.append(ImageSource("url", text=as_str(image["url"], "url", 2048)))
            found = True
        terms = _concept_terms(data.get("concepts"), "annotation.data")
        filters.concepts.extend(terms)
        if not found and not terms:
            raise ApiError(
                "bad_request", "a rank needs an image (url, base64), input_id or concepts"
            )

    def _filter(self, flt: dict, filters: Filters) -> None:
        ann = _obj(flt.get("annotation") or flt.get("input"), "filters[].annotation")
        data = _obj(ann.get("data"), "filters[].annotation.data")
        tags = as_tags(data["metadata"], "metadata") if data.get("metadata") is not None else {}
        terms = _concept_terms(data.get("concepts"), "filters[].annotation.data")
        negate = flt.get("negate", False)
        if not isinstance(negate, bool):
            raise ApiError("bad_param", "negate must be true or false", "negate")
        if negate:  # "flip the meaning of this part of the query"
            if tags or terms:
                filters.expression = _all_of(filters.expression, _negated(tags, terms))
            return
        filters.tags.update(tags)
        filters.concepts.extend(terms)

    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        hits = []
        mark = has_cloud_hits(outcome)
        for hit in outcome.hits:
            item = hit.item
            concepts = [
                {
                    "id": str(c.get("id")),
                    "name": c.get("name"),
                    "value": c.get("value"),
                    "app_id": "main",
                }
                for c in item.get("concepts") or []
            ]
            tags = item.get("tags") or {}
            # input.data.metadata is a free-form Struct: the one place an extra key is
            # valid for every Clarifai client, proto-based or not.
            metadata = {**tags, "lensbox_source": hit.source} if mark else tags
            hits.append(
                {
                    "score": hit.score,
                    "input": {
                        "id": item["id"],
                        "data": {
                            "image": {"url": item_url(item, req.host_url)},
                            "metadata": metadata,
                        },
                    },
                    "annotation": {
                        "id": f"{item['id']}-annotation",
                        "input_id": item["id"],
                        "data": {"concepts": concepts, "metadata": tags},
                    },
                }
            )
        status = {"code": SUCCESS, "description": "Ok", "req_id": request_id()}
        return json_response({"status": status, "hits": hits})

    def render_error(self, error: ApiError) -> Response:
        http, code, description = ERRORS.get(error.code, SEARCH_INVALID)
        status = {
            "code": code,
            "description": description,
            "details": error.message,
            "req_id": request_id(),
        }
        return json_response({"status": status}, http)
