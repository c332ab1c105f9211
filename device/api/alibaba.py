"""Alibaba Cloud Image Search, ``SearchImageByPic`` (RPC style).

``POST /`` or ``GET /`` with ``Action=SearchImageByPic`` and the parameters as query string,
form fields (url-encoded or multipart, where ``PicContent`` may be an uploaded file, as the
2020-12-14 API takes it) or a JSON body. ``InstanceName`` selects the bundle. The caller's
``AccessKeyId`` is its API key (request signatures are not verified: accept a configured id).

Response and error names follow the documentation: ``Auctions``, ``Head``, ``PicInfo``,
``RequestId``, ``Code``, ``Msg``, ``Success``; errors carry the documented name in ``Code``
with its HTTP status. Throttling is ``DeniedRequest`` (403, "denied due to instance flow
control"), the documented code for exceeding the instance's QPS.
"""

from __future__ import annotations

from typing import Any

from flask import Request, Response, g
from lensbox.device.api.alibaba_filter import FilterError, parse_filter
from lensbox.device.api.contract import (
    Contract,
    Route,
    has_cloud_hits,
    json_response,
    request_id,
)
from lensbox.device.api.errors import ApiError
from lensbox.device.api.params import as_bool, as_int, as_str, in_range, load_json, pic_name
from lensbox.device.api.query import Filters, ImageLimits, ImageSource, SearchOutcome, SearchQuery
from lensbox.device.embedding.subject import Box

ACTION = "SearchImageByPic"
GENERIC_CATEGORY = 88888888
MB = 1024 * 1024
FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF", "PPM"})

# common code -> (HTTP status, Alibaba error code)
ERRORS: dict[str, tuple[int, str]] = {
    "throttled": (403, "DeniedRequest"),
    "unauthenticated": (403, "NoPermission"),
    "forbidden": (403, "NoPermission"),
    "unknown_instance": (400, "InvalidInstance"),
    "bad_filter": (400, "InvalidFilterClause"),
    "overflow_return_num": (400, "OverflowMaxReturnNum"),
    "overflow_result_num": (400, "OverflowMaxResultNum"),
    "bad_paging": (400, "InvalidNumParameter"),
    "bad_category": (400, "InvalidCategory"),
    "missing_image": (400, "NoSpecifiedSearchPic"),
    "empty_image": (400, "NoSpecifiedSearchPic"),
    "unsupported_format": (400, "UnsupportedPicFormat"),
    "not_an_image": (400, "UnsupportedPicFormat"),
    "truncated_image": (400, "UnsupportedPicFormat"),
    "too_small": (400, "UnsupportedPicPixels"),
    "too_large": (400, "UnsupportedPicPixels"),
    "too_many_pixels": (400, "UnsupportedPicPixels"),
    "incorrect_orientation": (400, "IncorrectOrientation"),
    "unsupported_action": (500, "UnsupportedOperationType"),
    "not_ready": (500, "AccessEngineFailed"),
    "internal": (500, "UnknownException"),
    "cloud_unavailable": (500, "AccessEngineFailed"),
    "cloud_timeout": (500, "NetworkException"),
}
MESSAGES = {
    "DeniedRequest": "Your request was denied due to instance flow control.",
    "NoPermission": "You are not authorized to perform this operation.",
    "InvalidInstance": "The specified instance name is invalid.",
    "InvalidFilterClause": "The specified filtering condition is invalid.",
    "OverflowMaxReturnNum": "The specified number of results for each request exceeds the "
    "maximum of 100.",
    "OverflowMaxResultNum": "The specified number of total results exceeds the maximum of 500.",
    "InvalidNumParameter": "The specified parameter num is invalid.",
    "InvalidCategory": "The specified category is invalid.",
    "UnsupportedPicFormat": "The specified image format is invalid.",
    "UnsupportedPicPixels": "The specified pixels is not supported.",
    "IncorrectOrientation": "The image contains incorrect rotation flags in the meta data.",
    "UnsupportedOperationType": "The specified action is not supported.",
    "UnknownException": "An internal server error occurred.",
    "AccessEngineFailed": "An error occurred while accessing the search engine.",
    "NetworkException": "A network error occurred.",
    "BadRequest": "The request has invalid parameters.",
    "NoSpecifiedSearchPic": "The search image is not specified.",
}


def region_text(box: Box) -> str:
    """Alibaba's region form: x1,x2,y1,y2 (upper-left x, lower-right x, ...)."""
    return f"{box.x},{box.x + box.width},{box.y},{box.y + box.height}"


def parse_region(text: Any) -> Box:
    try:
        x1, x2, y1, y2 = (int(v) for v in str(text).split(","))
    except ValueError as exc:
        raise ApiError("bad_region", "Region must be x1,x2,y1,y2 in pixels", "Region") from exc
    if x1 < 0 or y1 < 0 or x2 - x1 < 2 or y2 - y1 < 2:
        raise ApiError("bad_region", "Region needs 0 <= x1 < x2 and 0 <= y1 < y2", "Region")
    return Box(x1, y1, x2 - x1, y2 - y1)


class AlibabaContract(Contract):
    name = "alibaba"
    limits = ImageLimits(
        max_bytes=4 * MB, formats=FORMATS, min_side=100, max_side=4096,
        max_pixels=4096 * 4096, reject_rotated=True,
    )

    def routes(self) -> list[Route]:
        return [Route("/", ("GET", "POST"), self.search)]

    def owns(self, path: str) -> bool:
        return path == "/"

    def _params(self, req: Request) -> dict[str, Any]:
        """Query string, form and JSON body merged; names matched case-insensitively."""
        cached = g.get("alibaba_params")
        if cached is not None:
            return cached
        merged: dict[str, Any] = {k.lower(): v for k, v in req.args.items()}
        if req.mimetype == "application/json" and req.content_length:
            body = load_json(req)
            if not isinstance(body, dict):
                raise ApiError("bad_json", "the request body must be a JSON object")
            merged.update({str(k).lower(): v for k, v in body.items()})
        elif req.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            merged.update({k.lower(): v for k, v in req.form.items()})
            for key, upload in req.files.items():
                merged[key.lower()] = upload
        g.alibaba_params = merged
        return merged

    def credential(self, req: Request) -> str | None:
        value = self._params(req).get("accesskeyid")
        return value if isinstance(value, str) and value else None

    def parse(self, req: Request, **params: str) -> SearchQuery:
        p = self._params(req)
        action = p.get("action")
        if not action:
            raise ApiError("bad_request", "Action is required (Action=SearchImageByPic)")
        if action != ACTION:
            raise ApiError(
                "unsupported_action", f"the action {str(action)[:64]!r} is not supported"
            )
        instance = p.get("instancename")
        if not instance or not isinstance(instance, str) or len(instance) > 64:
            raise ApiError("unknown_instance", "InstanceName is required")
        num = as_int(p.get("num", 10), "Num", "bad_paging")
        if num > 100:
            raise ApiError("overflow_return_num", f"Num is {num}; at most 100", "Num")
        in_range(num, "Num", 1, None, "bad_paging")
        start = in_range(as_int(p.get("start", 0), "Start"), "Start", 0, None)
        if start > 499 or start + num > 500:
            raise ApiError("overflow_result_num", "Start + Num must not exceed 500", "Start")
        return SearchQuery(
            instance=instance,
            sources=[self._picture(p.get("piccontent"))],
            limits=self.limits,
            top_k=num,
            offset=start,
            region=parse_region(p["region"]) if p.get("region") not in (None, "") else None,
            crop=as_bool(p.get("crop", True), "Crop"),
            filters=self._filters(p),
        )

    def _picture(self, value: Any) -> ImageSource:
        if value is None or value == "":
            raise ApiError("missing_image", "PicContent is required")
        if hasattr(value, "read"):  # an uploaded file
            return ImageSource.from_bytes(value.read(self.limits.max_bytes + 1))
        return ImageSource("base64", text=as_str(value, "PicContent", 8 * MB))

    def _filters(self, p: dict[str, Any]) -> Filters:
        filters = Filters(distinct_product=as_bool(p.get("distinctproductid", False),
                                                   "DistinctProductId"))
        category = p.get("categoryid")
        if category not in (None, ""):
            value = as_int(category, "CategoryId", "bad_category")
            if value != GENERIC_CATEGORY:  # "generic search: 88888888 whatever is given"
                filters.category_id = value
        expression = p.get("filter")
        if expression not in (None, ""):
            try:
                filters.expression = parse_filter(as_str(expression, "Filter", 4096))
            except (FilterError, ApiError) as exc:
                raise ApiError("bad_filter", f"Filter: {exc}", "Filter") from exc
        return filters

    # -- render -----------------------------------------------------------------------
    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        inst = self.ctx.service.instances.get(outcome.instance)  # None: a cloud-only answer
        category = query.filters.category_id
        if category is None:
            top = outcome.hits[0]["item"].get("category_id") if outcome.hits else None
            category = GENERIC_CATEGORY if top is None else top
        region = outcome.region or (outcome.subjects[0] if outcome.subjects else None)
        if region is None and outcome.image_size:
            region = Box(0, 0, *outcome.image_size)
        pic_info: dict[str, Any] = {
            "CategoryId": category,
            "Region": region_text(region) if region else "",
            "MultiRegion": [{"Region": region_text(b)} for b in outcome.subjects],
            "AllCategories": [{"Name": str(c), "Id": c}
                              for c in (inst.categories() if inst else [])]
            + [{"Name": "Other", "Id": GENERIC_CATEGORY}],
        }
        auctions = [self._auction(h["item"], h["score"]) for h in outcome.hits]
        if has_cloud_hits(outcome):  # extra key; Alibaba's SDK models ignore unknown keys
            for auction, hit in zip(auctions, outcome.hits):
                auction["LensboxSource"] = hit["source"]
        return json_response({
            "Auctions": auctions,
            "Head": {
                "DocsFound": len(outcome.hits),  # "the number of images returned"
                "DocsReturn": outcome.total,  # "the number that match the conditions"
                "SearchTime": round(outcome.timings.get("total_ms", 0.0)),
            },
            "PicInfo": pic_info,
            "RequestId": request_id(),
            "Code": 0,
            "Msg": "success",
            "Success": True,
        })

    def _auction(self, item: dict, score: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "CategoryId": item.get("category_id") if item.get("category_id") is not None
            else GENERIC_CATEGORY,
            "PicName": pic_name(item),
            "ProductId": item.get("product_id") or item["id"],
            "Score": score,
            "SortExprValues": f"{score:.6g};0",
        }
        if item.get("custom_content"):
            out["CustomContent"] = item["custom_content"]
        for key, value in sorted((item.get("int_attrs") or {}).items()):
            out[key.replace("int_attr", "IntAttr")] = value
        for key, value in sorted((item.get("str_attrs") or {}).items()):
            out[key.replace("str_attr", "StrAttr")] = value
        return out

    def render_error(self, error: ApiError) -> Response:
        status, code = ERRORS.get(error.code, (400, "BadRequest"))
        return json_response(
            {
                "RequestId": request_id(),
                "Code": code,
                "Message": f"{MESSAGES.get(code, code)} {error.message}".strip(),
                "Msg": error.message,
                "Success": False,
            },
            status,
        )
