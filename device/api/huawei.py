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

from typing import Any

from flask import Request, Response, request

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
from lensbox.device.api.query import Filters, ImageLimits, ImageSource, SearchOutcome, SearchQuery

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
}


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

    def credential(self, req: Request) -> str | None:
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
            {"path": h["id"], "sim": h["score"], "tags": h["item"].get("tags") or {}}
            for h in outcome.hits
        ]
        if has_cloud_hits(outcome):  # extra key; Huawei's SDK models ignore unknown keys
            for row, hit in zip(result, outcome.hits):
                row["lensbox_source"] = hit["source"]
        return json_response({"count": outcome.total, "result": result})

    def render_error(self, error: ApiError) -> Response:
        if error.code in ERRORS:
            status, code = ERRORS[error.code]
        elif error.code in IMAGE_ERRORS:
            status, code = 400, "IS.0002"  # "The type of the request parameter is not supported."
        else:
            status = 400
            code = "IS.0002" if error.code in ("bad_param", "bad_region") else "IS.0001"
        return json_response({"error_code": code, "error_msg": error.message}, status)
