"""Huawei Cloud ImageSearch: ``POST /v1/{project_id}/{instance_name}/image/search``.

Body: ``file`` (base64; JPG/PNG/BMP; short side >= 100 px, long side <= 2048 px) or
``path`` (the index id of an image in the library: a catalog item id, or the query id
an earlier search answered with in ``X-Lensbox-Query-Id``); ``file`` wins if both are set.
``limit`` 1-100 (default 10), ``offset`` >= 0, ``tags`` (at most 10 key/values, all must
match), ``is_crop`` + ``box {x, y, width, height}``: with ``is_crop`` and a box the box is
searched, with ``is_crop`` alone the subject the device finds.

Response ``{count, result[{path, sim, tags}]}``; errors ``{error_code, error_msg}`` with the
documented IS.00xx codes (HTTP 400), throttling as the API gateway's ``APIGW.0308`` (429).
The page does not state a byte limit for ``file``; 10 MB of image is accepted.

The image library (a live catalog under `lensbox serve`), as the ImageSearch API pages
describe it: ``POST /v1/{project_id}/{instance_name}/image`` adds an image (``path`` is its
index id; the photo is ``file`` (base64), or downloaded from ``path`` when that is an
http(s) URL on ``server.url_allow_hosts``; ``tags``), ``PUT`` on the same URI replaces its
``tags``, ``DELETE`` (or ``POST .../image/delete``, for clients that cannot send a body with
DELETE) removes it by ``path``. Success is ``{"result": "success"}`` once the change is
journaled; errors as above. A box that takes no changes answers ``APIGW.0202`` (502).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flask import Request, Response, request

from lensbox.device.api.auth import SignatureError, Signatures
from lensbox.device.api.contract import Contract, Route, has_cloud_hits, json_response
from lensbox.device.api.errors import IMAGE_ERRORS, ApiError
from lensbox.device.api.params import (
    as_bool,
    as_int,
    as_str,
    as_tags,
    box_from_xywh,
    in_range,
    json_object,
)
from lensbox.device.embedding.subject import Box
from lensbox.device.serving.filters import Predicate
from lensbox.device.serving.query import (
    Filters,
    ImageLimits,
    ImageSource,
    SearchOutcome,
    SearchQuery,
)

MB = 1024 * 1024
PATH_RE = "/v1/<project_id>/<instance_name>/image/search"
IMAGE_RE = "/v1/<project_id>/<instance_name>/image"

ERRORS: dict[str, tuple[int, str]] = {
    "throttled": (429, "APIGW.0308"),
    "unauthenticated": (400, "IS.0005"),  # "The header is missing or empty."
    "forbidden": (400, "IS.0004"),  # "Exception verifying token."
    "missing_image": (400, "IS.0003"),
    "empty_image": (400, "IS.0003"),
    "not_found": (400, "IS.0001"),
    "bad_json": (400, "IS.0008"),
    "request_too_large": (400, "IS.0006"),
    "too_many_bytes": (400, "IS.0006"),
    "unknown_instance": (400, "IS.0007"),
    "method_not_allowed": (400, "IS.0010"),
    "url_timeout": (400, "IS.0012"),
    "internal": (400, "IS.0009"),
    "not_ready": (400, "IS.0009"),
    # cloud fallback failures, as the API gateway reports a failed / slow backend
    "cloud_unavailable": (502, "APIGW.0202"),  # "Backend unavailable."
    "cloud_timeout": (504, "APIGW.0203"),  # "Backend timeout."
    "read_only": (502, "APIGW.0202"),  # this box takes no library changes now
    # the API gateway's own answer for a path it does not serve
    "route_not_found": (404, "APIGW.0101"),
}
# AK/SK signatures that do not verify: the API gateway's "Incorrect IAM authentication
# information" (the message says which check failed)
SIGNATURE_ERROR = (401, "APIGW.0301")


class HuaweiContract(Contract):
    name = "huawei"
    limits = ImageLimits(
        max_bytes=10 * MB,
        formats=frozenset({"JPEG", "MPO", "PNG", "BMP"}),
        min_side=100,
        max_side=2048,
        max_pixels=2048 * 2048,
    )

    def routes(self) -> list[Route]:
        return [
            Route(PATH_RE, ("POST",), self.search),
            Route(IMAGE_RE, ("POST",), self.add_image),
            Route(IMAGE_RE, ("PUT",), self.modify_image),
            Route(IMAGE_RE, ("DELETE",), self.delete_image),
            Route(IMAGE_RE + "/delete", ("POST",), self.delete_image),
        ]

    def owns(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        return len(parts) >= 4 and parts[0] == "v1" and parts[3] == "image"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        server = ctx.server
        self.signatures = Signatures(
            server.access_keys, server.auth_required, server.signature_max_skew_s
        )

    def credential(self, req: Request) -> str | None:
        """A verified AK (``SDK-HMAC-SHA256`` AK/SK signing, huaweicloudsdkcore's default
        with ``BasicCredentials``), else the ``X-Auth-Token`` (one of ``server.api_keys``)."""
        if req.headers.get("Authorization", "").startswith("SDK-HMAC-SHA256"):
            body = req.get_data(cache=True)
            headers = {k.lower(): v for k, v in req.headers.items()}
            query = list(req.args.items(multi=True))
            return self.signatures.sdk_hmac(req.method, req.path, query, headers, body)
        return req.headers.get("X-Auth-Token") or None

    def parse(self, req: Request, **params: str) -> SearchQuery:
        body = json_object(req)
        source = self._source(body)
        limit = in_range(as_int(body.get("limit", 10), "limit"), "limit", 1, 100)
        offset = in_range(as_int(body.get("offset", 0), "offset"), "offset", 0, 10_000)
        tags = as_tags(body.get("tags"), "tags", max_tags=10)
        is_crop = as_bool(body.get("is_crop", False), "is_crop")
        box = body.get("box")
        region = box_from_xywh(box, "box") if is_crop and box not in (None, {}) else None
        return SearchQuery(
            instance=params["instance_name"],
            sources=[source],
            limits=self.limits,
            top_k=limit,
            offset=offset,
            region=region,
            crop=is_crop and region is None,
            filters=Filters(tags=tags),
        )

    def _source(self, body: dict[str, Any]) -> ImageSource:
        if body.get("file") not in (None, ""):
            return ImageSource("base64", text=as_str(body["file"], "file", 16 * MB))
        if body.get("path") not in (None, ""):
            return ImageSource("id", text=as_str(body["path"], "path", 1024))
        raise ApiError("missing_image", "Arguments of path can not be null.")

    # -- the image library ------------------------------------------------------------
    def add_image(self, project_id: str, instance_name: str) -> Response:
        body = json_object(request)
        path = self._path(body)
        tags = as_tags(body.get("tags"), "tags", max_tags=10)
        if body.get("file") not in (None, ""):
            source = ImageSource("base64", text=as_str(body["file"], "file", 16 * MB))
        elif path.startswith(("http://", "https://")):
            source = ImageSource("url", text=path)
        else:
            raise ApiError(
                "missing_image",
                "Arguments of file can not be null (path is not "
                "an http(s) URL to download the image from).",
            )
        data = self.ctx.service.image_bytes(source, self.limits)
        fields: dict[str, Any] = {"tags": tags}
        if source.kind == "url":
            fields["source"] = path
        self.ctx.writer.put(instance_name, path, [data], fields, self.limits)
        return json_response({"result": "success"})

    def modify_image(self, project_id: str, instance_name: str) -> Response:
        body = json_object(request)
        path = self._path(body)
        if body.get("tags") is None:
            raise ApiError("missing_image", "Arguments of tags can not be null.")
        tags = as_tags(body.get("tags"), "tags", max_tags=10)
        self.ctx.writer.update(instance_name, path, {"tags": tags})
        return json_response({"result": "success"})

    def delete_image(self, project_id: str, instance_name: str) -> Response:
        path = self._path(json_object(request))
        done = self.ctx.writer.delete(instance_name, [path])
        if done.change is None:
            raise ApiError("not_found", f"no image with path {path!r} in the library")
        return json_response({"result": "Success"})

    def _path(self, body: dict[str, Any]) -> str:
        if body.get("path") in (None, ""):
            raise ApiError("missing_image", "Arguments of path can not be null.")
        return as_str(body["path"], "path", 1024)

    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        result = [
            {"path": h.id, "sim": h.score, "tags": h.item.get("tags") or {}} for h in outcome.hits
        ]
        if has_cloud_hits(outcome):  # extra key; Huawei's SDK models ignore unknown keys
            for row, hit in zip(result, outcome.hits):
                row["lensbox_source"] = hit.source
        return json_response({"count": outcome.total, "result": result})

    def render_error(self, error: ApiError) -> Response:
        if isinstance(error, SignatureError):
            status, code = SIGNATURE_ERROR
            message = f"Incorrect IAM authentication information: {error.message}"
            return json_response({"error_code": code, "error_msg": message}, status)
        if error.code in ERRORS:
            status, code = ERRORS[error.code]
        elif error.code in IMAGE_ERRORS:
            status, code = 400, "IS.0002"  # "The type of the request parameter is not supported."
        else:
            status = 400
            code = "IS.0002" if error.code in ("bad_param", "bad_region") else "IS.0001"
        return json_response({"error_code": code, "error_msg": error.message}, status)


# -- v2: the "mms" API the current SDK (huaweicloudsdkimagesearch 3.1) speaks -------------
V2 = "/v2/<project_id>/mms/<service_name>"
NUM_PREFIX = "num:"  # custom_num_tags are kept among the item's tags under this prefix
V2_SEARCH_TYPES = frozenset({"IMAGE", "0"})


class HuaweiV2Contract(HuaweiContract):
    """Huawei ImageSearch v2 (``/v2/{project_id}/mms/{service_name}/...``), beside v1.

    ``search``: ``search_type`` IMAGE, ``image_base64`` | ``image_url``, ``limit`` (1-1000,
    default 10), ``offset``, ``min_score``, ``custom_tags`` ({key: [values]}: any value of
    each key), ``custom_num_tags`` ({key: {from, to}}), ``optional_params.box``
    ("x1,y1,x2,y2") / ``do_det`` -> ``{result: "success", data: {items[{id, score, source
    {desc, custom_tags, custom_num_tags}}], search_info{total_num, return_num, search_time,
    last_item}, image_info{box, objects}}}``. ``data/add`` (``item_id``, ``force``, ``desc``,
    tags, the image, ``optional_params.box``), ``data/update``, ``data/delete`` (by
    ``item_id``), ``data/check`` (by ``item_id``). ``service_name`` picks the bundle; errors
    as v1 (``{error_code, error_msg}``).
    """

    name = "huawei-v2"
    limits = ImageLimits(
        max_bytes=5 * MB,  # "image file size at most 5M"
        formats=frozenset({"JPEG", "MPO", "PNG", "BMP", "WEBP"}),
        min_side=64,
        max_side=4096,
        max_pixels=4096 * 4096,
        reject_rotated=True,
    )

    def routes(self) -> list[Route]:
        return [
            Route(V2 + "/search", ("POST",), self.search),
            Route(V2 + "/data/add", ("POST",), self.v2_add),
            Route(V2 + "/data/update", ("POST",), self.v2_update),
            Route(V2 + "/data/delete", ("POST",), self.v2_delete),
            Route(V2 + "/data/check", ("POST",), self.v2_check),
        ]

    def owns(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        return len(parts) >= 3 and parts[0] == "v2" and parts[2] == "mms"

    def parse(self, req: Request, **params: str) -> SearchQuery:
        body = json_object(req)
        kind = body.get("search_type", "IMAGE")
        if str(kind).upper() not in V2_SEARCH_TYPES:
            raise ApiError("bad_param", f"search_type {str(kind)[:32]!r}: only IMAGE is served")
        if body.get("last_item") not in (None, {}):
            raise ApiError("bad_param", "last_item paging is not served; use offset", "last_item")
        source = self._v2_image(body)
        limit = in_range(as_int(body.get("limit", 10), "limit"), "limit", 1, 1000)
        offset = in_range(as_int(body.get("offset", 0), "offset"), "offset", 0, 1000)
        if offset + limit > 1000:
            raise ApiError("bad_param", "offset + limit must not exceed 1000", "offset")
        _min_score(body)
        options = _object(body.get("optional_params"), "optional_params")
        region = _xyxy(options["box"]) if options.get("box") not in (None, "") else None
        do_det = as_bool(options.get("do_det", True), "optional_params.do_det")
        return SearchQuery(
            instance=params["service_name"],
            sources=[source],
            limits=self.limits,
            top_k=limit,
            offset=offset,
            region=region,
            crop=do_det and region is None,
            filters=Filters(expression=_tag_predicate(body)),
        )

    def _v2_image(self, body: dict[str, Any]) -> ImageSource:
        if body.get("image_base64") not in (None, ""):
            return ImageSource("base64", text=as_str(body["image_base64"], "image_base64", 8 * MB))
        if body.get("image_url") not in (None, ""):
            return ImageSource("url", text=as_str(body["image_url"], "image_url", 2048))
        raise ApiError("missing_image", "Arguments of image_base64 or image_url can not be null.")

    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        min_score = _min_score(json_object(req))
        hits = [h for h in outcome.hits if min_score is None or h.score >= min_score]
        total = outcome.total if len(hits) == len(outcome.hits) else query.offset + len(hits)
        items = []
        for hit in hits:
            row = {"id": hit.id, "score": hit.score, "source": _source(hit.item)}
            if hit.source != "local":
                row["lensbox_source"] = hit.source
            items.append(row)
        info: dict[str, Any] = {
            "total_num": total,
            "return_num": len(items),
            "search_time": round(outcome.timings.get("total_ms", 0.0)),
        }
        if items:
            info["last_item"] = {"score": items[-1]["score"], "id": items[-1]["id"]}
        region = outcome.region or (outcome.subjects[0] if outcome.subjects else None)
        image_info: dict[str, Any] = {
            "objects": [{"box": _box_text(b), "category": 0} for b in outcome.subjects]
        }
        if region is not None:
            image_info["box"] = _box_text(region)
        data = {"items": items, "search_info": info, "image_info": image_info}
        return json_response({"result": "success", "data": data})

    # -- data -------------------------------------------------------------------------
    def v2_add(self, project_id: str, service_name: str) -> Response:
        from lensbox.device.api.alibaba import _crop

        body = json_object(request)
        item_id = as_str(_need(body, "item_id"), "item_id", 256)
        force = as_bool(body.get("force", False), "force")
        fields = self._v2_fields(body)
        service = self.ctx.service
        inst = service.find(service_name)
        exists = inst is not None and item_id in inst.catalog
        source = self._v2_image(body)
        data = service.image_bytes(source, self.limits)
        info = service.check_image(data, self.limits)
        options = _object(body.get("optional_params"), "optional_params")
        box = _xyxy(options["box"]) if options.get("box") not in (None, "") else None
        limits = self.limits
        if box is not None:
            data = _crop(data, box, info)
            limits = dataclasses.replace(self.limits, min_side=2, reject_rotated=False)
        if not exists or force:  # "force=false: data that already exists is not added"
            self.ctx.writer.put(service_name, item_id, [data], fields, limits)
        shown = box or Box(0, 0, info.width, info.height)
        objects = [{"box": _box_text(shown), "category": 0, "category_name": ""}]
        return json_response({"result": "success", "data": {"image_info": {"objects": objects}}})

    def v2_update(self, project_id: str, service_name: str) -> Response:
        body = json_object(request)
        item_id = as_str(_need(body, "item_id"), "item_id", 256)
        inst = self.ctx.service.find(service_name)
        current = inst.catalog.get(item_id) if inst is not None else None
        if current is None:
            raise ApiError("not_found", f"no data with item_id {item_id!r}")
        fields = self._v2_fields(body, current.get("tags") or {})
        if not fields:
            raise ApiError("bad_param", "nothing to update: desc, custom_tags, custom_num_tags")
        self.ctx.writer.update(service_name, item_id, fields)
        return json_response({"result": "success"})

    def v2_delete(self, project_id: str, service_name: str) -> Response:
        body = json_object(request)
        item_id = as_str(_need(body, "item_id"), "item_id", 256)
        done = self.ctx.writer.delete(service_name, [item_id])
        data = {
            "items": [{"id": i} for i in done.ids],
            "delete_info": {"total_num": 1, "delete_num": len(done.ids)},
        }
        return json_response({"result": "success", "data": data})

    def v2_check(self, project_id: str, service_name: str) -> Response:
        body = json_object(request)
        item_id = as_str(_need(body, "item_id"), "item_id", 256)
        inst = self.ctx.service.find(service_name)
        if inst is None:
            raise ApiError("unknown_instance", f"no service {service_name!r} on this box")
        item = inst.catalog.get(item_id)
        data: dict[str, Any] = {"existed": item is not None}
        if item is not None:
            data["item_info"] = _source(item)
        return json_response({"result": "success", "data": data})

    def _v2_fields(self, body: dict[str, Any], tags: dict | None = None) -> dict[str, Any]:
        """desc -> custom_content; custom_tags and custom_num_tags -> the item's tags."""
        fields: dict[str, Any] = {}
        if body.get("desc") not in (None, ""):
            fields["custom_content"] = as_str(body["desc"], "desc", 2048)
        merged = dict(tags or {})
        changed = False
        if body.get("custom_tags") is not None:
            merged = {k: v for k, v in merged.items() if k.startswith(NUM_PREFIX)}
            merged.update(as_tags(body["custom_tags"], "custom_tags", max_tags=32))
            changed = True
        if body.get("custom_num_tags") is not None:
            nums = _object(body["custom_num_tags"], "custom_num_tags")
            merged = {k: v for k, v in merged.items() if not k.startswith(NUM_PREFIX)}
            for key, value in nums.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ApiError("bad_param", f"custom_num_tags.{key} must be a number")
                merged[NUM_PREFIX + str(key)] = repr(float(value))
            changed = True
        if changed:
            fields["tags"] = merged
        return fields


def _need(body: dict[str, Any], name: str) -> Any:
    if body.get(name) in (None, ""):
        raise ApiError("missing_image", f"Arguments of {name} can not be null.")
    return body[name]


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError("bad_param", f"{name} must be an object", name)
    return value


def _min_score(body: dict[str, Any]) -> float | None:
    value = body.get("min_score")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ApiError("bad_param", "min_score must be a number from 0 to 1", "min_score")
    return float(value)


def _xyxy(text: Any) -> Box:
    """v2's box: "x1,y1,x2,y2"."""
    try:
        x1, y1, x2, y2 = (int(float(v)) for v in str(text).split(","))
    except ValueError as exc:
        raise ApiError("bad_region", "box must be x1,y1,x2,y2", "box") from exc
    if x1 < 0 or y1 < 0 or x2 - x1 < 2 or y2 - y1 < 2:
        raise ApiError("bad_region", "box needs 0 <= x1 < x2 and 0 <= y1 < y2", "box")
    return Box(x1, y1, x2 - x1, y2 - y1)


def _box_text(box: Box) -> str:
    return f"{box.x},{box.y},{box.x + box.width},{box.y + box.height}"


def _source(item: Mapping[str, Any]) -> dict[str, Any]:
    tags = item.get("tags") or {}
    nums: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith(NUM_PREFIX):
            try:
                nums[key[len(NUM_PREFIX) :]] = float(value)
            except ValueError:
                continue
    return {
        "desc": item.get("custom_content") or item.get("title") or "",
        "custom_tags": {k: v for k, v in tags.items() if not k.startswith(NUM_PREFIX)},
        "custom_num_tags": nums,
    }


def _tag_predicate(body: dict[str, Any]) -> Predicate | None:
    """custom_tags ({key: [values]}, any value of every key) and custom_num_tags
    ({key: {from, to}}, inclusive) as one item predicate."""
    wanted: dict[str, set[str]] = {}
    for key, values in _object(body.get("custom_tags"), "custom_tags").items():
        values = values if isinstance(values, list) else [values]
        if not values or not all(isinstance(v, (str, int, float)) for v in values):
            raise ApiError("bad_param", f"custom_tags.{key} must be a list of strings")
        wanted[str(key)] = {str(v) for v in values}
    ranges: dict[str, tuple[float, float]] = {}
    for key, span in _object(body.get("custom_num_tags"), "custom_num_tags").items():
        span = _object(span, f"custom_num_tags.{key}")
        try:
            lo = float(span.get("from", float("-inf")))
            hi = float(span.get("to", float("inf")))
        except (TypeError, ValueError) as exc:
            raise ApiError("bad_param", f"custom_num_tags.{key}: from/to numbers") from exc
        ranges[NUM_PREFIX + str(key)] = (lo, hi)
    if not wanted and not ranges:
        return None

    def matches(item: Mapping[str, Any]) -> bool:
        tags = item.get("tags") or {}
        if any(str(tags.get(k)) not in vs for k, vs in wanted.items()):
            return False
        for key, (lo, hi) in ranges.items():
            try:
                value = float(tags[key])
            except (KeyError, ValueError):
                return False
            if not lo <= value <= hi:
                return False
        return True

    return matches
