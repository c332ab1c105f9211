"""Alibaba Cloud Image Search, ``SearchImageByPic`` (RPC style).

``POST /`` or ``GET /`` with ``Action=SearchImageByPic`` and the parameters as query string,
form fields (url-encoded or multipart, where ``PicContent`` may be an uploaded file, as the
2020-12-14 API takes it) or a JSON body; the action may also come in the ``x-acs-action``
header, as the official SDK (``alibabacloud-tea-openapi``) sends it by default.
``InstanceName`` selects the bundle; ``ScoreThreshold`` drops hits scoring below it.

Authentication, as the SDKs sign (auth.py): an ``ACS3-HMAC-SHA256`` ``Authorization``
header (the SDK default) or the RPC ``Signature`` parameter (HMAC-SHA1, the SDK's ``v2``),
verified against ``server.access_keys`` (AccessKeyId -> secret), with a freshness window
and a nonce that cannot be replayed. Failures answer Alibaba's common codes:
``SignatureDoesNotMatch``, ``InvalidTimeStamp.Expired``, ``SignatureNonceUsed``,
``IncompleteSignature`` (400) and ``InvalidAccessKeyId.NotFound`` (404). An unsigned
request may still give one of ``server.api_keys`` as its ``AccessKeyId``.

Response and error names follow the documentation: ``Auctions``, ``Head``, ``PicInfo``,
``RequestId``, ``Code``, ``Msg``, ``Success``; errors carry the documented name in ``Code``
with its HTTP status (a search without a picture is ``BadRequest``). Throttling is
``DeniedRequest`` (403, "denied due to instance flow control"), the documented code for
exceeding the instance's QPS.

The same RPC dispatcher takes the catalog actions of the Image Search API (a live catalog
under `lensbox serve`, see writes.py):

* ``AddImage``: ``InstanceName``, ``ProductId``, ``PicName`` (the pair names one photo; a
  second AddImage with the same pair replaces it), ``PicContent`` (base64 or upload; the
  search limits apply), ``CategoryId``, ``CustomContent``, ``IntAttr``..``IntAttr4``,
  ``StrAttr``..``StrAttr4``, ``Region`` (x1,x2,y1,y2: only that part is indexed), ``Crop``
  -> ``{RequestId, Success, Code, Message, PicInfo{CategoryId, Region}}``. A new photo's
  item id is ``ProductId/PicName``.
* ``DeleteImage``: ``ProductId`` and optional ``PicName`` (all photos of the product
  without it), or ``IsDeleteByFilter=true`` with ``Filter`` -> ``{RequestId, Success,
  Code, Message, Data{PicNames}}``; success even when nothing matched, as documented.

Both answer only after the change is journaled (fsync'd); a box that takes no changes
answers ``InstanceStatusError`` (409, "Your instance is unavailable.").
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from typing import Any

from flask import Request, Response, g, request

from lensbox.device.api.alibaba_upload import OssError, Uploads
from lensbox.device.api.auth import SignatureError, Signatures
from lensbox.device.api.contract import (
    Contract,
    Route,
    has_cloud_hits,
    json_response,
    request_id,
)
from lensbox.device.api.errors import ApiError
from lensbox.device.api.params import as_bool, as_int, as_str, in_range, load_json, pic_name
from lensbox.device.embedding.subject import Box
from lensbox.device.imaging.decode import ImageInfo
from lensbox.device.search.expression import FilterError, parse_filter
from lensbox.device.serving.query import (
    Filters,
    ImageLimits,
    ImageSource,
    SearchOutcome,
    SearchQuery,
)
from lensbox.device.serving.writes import product_items

ACTION = "SearchImageByPic"
ADD, DELETE = "AddImage", "DeleteImage"
AUTHORIZE_UPLOAD = "AuthorizeFileUpload"  # OpenPlatform: the SDKs' *Advance calls
ATTR_SUFFIXES = ("", "2", "3", "4")  # IntAttr, IntAttr2 ... IntAttr4 (and StrAttr...)
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
    "missing_image": (400, "BadRequest"),
    "empty_image": (400, "BadRequest"),
    "unsupported_format": (400, "UnsupportedPicFormat"),
    "not_an_image": (400, "UnsupportedPicFormat"),
    "truncated_image": (400, "UnsupportedPicFormat"),
    "too_small": (400, "UnsupportedPicPixels"),
    "too_large": (400, "UnsupportedPicPixels"),
    "too_many_pixels": (400, "UnsupportedPicPixels"),
    "incorrect_orientation": (400, "IncorrectOrientation"),
    "unsupported_action": (500, "UnsupportedOperationType"),
    "not_ready": (500, "AccessEngineFailed"),
    "read_only": (409, "InstanceStatusError"),
    "not_found": (400, "BadRequest"),
    "internal": (500, "UnknownException"),
    "cloud_unavailable": (500, "AccessEngineFailed"),
    "cloud_timeout": (500, "NetworkException"),
}
# a signature that does not verify (auth.SignatureError.reason) -> Alibaba's common codes
SIGNATURE_ERRORS: dict[str, tuple[int, str]] = {
    "signature": (400, "SignatureDoesNotMatch"),
    "expired": (400, "InvalidTimeStamp.Expired"),
    "nonce": (400, "SignatureNonceUsed"),
    "incomplete": (400, "IncompleteSignature"),
    "unknown_key": (404, "InvalidAccessKeyId.NotFound"),
}
MESSAGES = {
    "SignatureDoesNotMatch": "Specified signature is not matched with our calculation.",
    "InvalidTimeStamp.Expired": "Specified time stamp or date value is expired.",
    "SignatureNonceUsed": "Specified signature nonce was used already.",
    "IncompleteSignature": "The request signature does not conform to Aliyun standards.",
    "InvalidAccessKeyId.NotFound": "Specified access key is not found.",
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
    "NoSpecifiedPic": "The content of an image is not specified in the HTTP POST body.",
    "InstanceStatusError": "Your instance is unavailable.",
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
        max_bytes=4 * MB,
        formats=FORMATS,
        min_side=100,
        max_side=4096,
        max_pixels=4096 * 4096,
        reject_rotated=True,
    )

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        server = ctx.server
        self.signatures = Signatures(
            server.access_keys, server.auth_required, server.signature_max_skew_s
        )
        self.uploads = Uploads(server.https_port, self.limits.max_bytes)

    def routes(self) -> list[Route]:
        return [Route("/", ("GET", "POST"), self.dispatch)]

    def dispatch(self) -> Response:
        """The RPC ``Action``: the catalog actions here, anything else is a search (whose
        parser answers a missing or unsupported action)."""
        if Uploads.is_upload(request):  # the PostObject of an *Advance call
            return self.uploads.receive(request)
        action = self._params(request).get("action")
        g.alibaba_action = action
        if action == AUTHORIZE_UPLOAD:
            return json_response(self.uploads.authorize(request.host, request_id()))
        if action == ADD:
            return self.add_image()
        if action == DELETE:
            return self.delete_image()
        return self.search()

    def owns(self, path: str) -> bool:
        return path == "/"

    def _params(self, req: Request) -> dict[str, Any]:
        """Query string, form and JSON body merged; names matched case-insensitively."""
        cached = g.get("alibaba_params")
        if cached is not None:
            return cached
        merged: dict[str, Any] = {k.lower(): v for k, v in req.args.items()}
        if req.headers.get("x-acs-action"):  # the SDK's default (ACS3) request style
            merged.setdefault("action", req.headers["x-acs-action"])
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
        """A verified AccessKeyId (ACS3 header or RPC ``Signature``), else the unsigned
        ``AccessKeyId`` (then it must be one of ``server.api_keys``)."""
        if req.headers.get("Authorization", "").startswith("ACS3-"):
            body = req.get_data(cache=True)  # before the form is parsed: it is hashed
            headers = {k.lower(): v for k, v in req.headers.items()}
            return self.signatures.acs3(req.method, req.path, dict(req.args.items()), headers, body)
        if Uploads.is_upload(req):  # signed by the grant AuthorizeFileUpload handed out
            return self.uploads.verify(req)
        if self._params(req).get("signature") not in (None, ""):
            return self.signatures.rpc(req.method, self._signed_params(req))
        value = self._params(req).get("accesskeyid")
        return value if isinstance(value, str) and value else None

    @staticmethod
    def _signed_params(req: Request) -> dict[str, str]:
        """Every query / form (/ JSON) parameter with its original name: what an RPC
        ``Signature`` covers (uploaded files are not signed)."""
        signed: dict[str, str] = {}
        if req.mimetype == "application/json":
            body = req.get_json(silent=True)
            if isinstance(body, dict):
                signed.update({str(k): _text(v) for k, v in body.items()})
        else:
            signed.update(req.form.to_dict())
        signed.update(req.args.to_dict())
        return signed

    def parse(self, req: Request, **params: str) -> SearchQuery:
        p = self._params(req)
        action = p.get("action")
        if not action:
            raise ApiError("bad_request", "Action is required (Action=SearchImageByPic)")
        if action != ACTION:
            raise ApiError(
                "unsupported_action", f"the action {str(action)[:64]!r} is not supported"
            )
        instance = self._instance(p)
        num = as_int(p.get("num", 10), "Num", "bad_paging")
        if num > 100:
            raise ApiError("overflow_return_num", f"Num is {num}; at most 100", "Num")
        in_range(num, "Num", 1, None, "bad_paging")
        start = in_range(as_int(p.get("start", 0), "Start"), "Start", 0, None)
        if start > 499 or start + num > 500:
            raise ApiError("overflow_result_num", "Start + Num must not exceed 500", "Start")
        self._threshold(p)  # a bad one is refused before searching
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

    def _threshold(self, p: dict[str, Any]) -> float | None:
        value = p.get("scorethreshold")
        if value in (None, ""):
            return None
        try:
            threshold = float(value)
        except (TypeError, ValueError):
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise ApiError(
                "bad_param", "ScoreThreshold must be a number from 0 to 1", "ScoreThreshold"
            )
        return threshold

    def _instance(self, p: dict[str, Any]) -> str:
        instance = p.get("instancename")
        if not instance or not isinstance(instance, str) or len(instance) > 64:
            raise ApiError("unknown_instance", "InstanceName is required")
        return instance

    def _picture(self, value: Any) -> ImageSource:
        if value is None or value == "":
            raise ApiError("missing_image", "PicContent is required")
        if hasattr(value, "read"):  # an uploaded file
            return ImageSource.from_bytes(value.read(self.limits.max_bytes + 1))
        if isinstance(value, str):  # the URL of a picture uploaded to this box (*Advance)
            uploaded = self.uploads.take(value)
            if uploaded is not None:
                return ImageSource.from_bytes(uploaded)
        return ImageSource("base64", text=as_str(value, "PicContent", 8 * MB))

    def _filters(self, p: dict[str, Any]) -> Filters:
        filters = Filters(
            distinct_product=as_bool(p.get("distinctproductid", False), "DistinctProductId")
        )
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

    # -- catalog actions --------------------------------------------------------------
    def add_image(self) -> Response:
        p = self._params(request)
        instance = self._instance(p)
        product = _required(p, "ProductId", 512)
        name = _required(p, "PicName", 512)
        service = self.ctx.service
        data = service.image_bytes(self._picture(p.get("piccontent")), self.limits)
        info = service.check_image(data, self.limits)
        as_bool(p.get("crop", True), "Crop")  # items are indexed with the bundle's own views
        region = parse_region(p["region"]) if p.get("region") not in (None, "") else None
        fields = self._fields(p, product, name)
        limits = self.limits
        if region is not None:
            data = _crop(data, region, info)
            limits = dataclasses.replace(self.limits, min_side=2, reject_rotated=False)

        def photo_id(catalog: Any) -> str:
            same = product_items(catalog, product, name)  # ProductId + PicName: one photo
            return same[0]["id"] if same else f"{product}/{name}"

        self.ctx.writer.put(instance, photo_id, [data], fields, limits)
        shown = region or Box(0, 0, info.width, info.height)
        return json_response(
            {
                "RequestId": request_id(),
                "Success": True,
                "Code": 0,
                "Message": "success",
                "PicInfo": {
                    "CategoryId": fields.get("category_id", GENERIC_CATEGORY),
                    "Region": region_text(shown),
                },
            }
        )

    def _fields(self, p: dict[str, Any], product: str, name: str) -> dict[str, Any]:
        fields: dict[str, Any] = {"product_id": product, "source": name}
        category = p.get("categoryid")
        if category not in (None, ""):
            value = as_int(category, "CategoryId", "bad_category")
            if value != GENERIC_CATEGORY:
                fields["category_id"] = value
        if p.get("customcontent") not in (None, ""):
            fields["custom_content"] = as_str(p["customcontent"], "CustomContent", 4096)
        ints = {
            f"int_attr{n}": as_int(p[f"intattr{n}"], f"IntAttr{n}")
            for n in ATTR_SUFFIXES
            if p.get(f"intattr{n}") not in (None, "")
        }
        strs = {
            f"str_attr{n}": as_str(p[f"strattr{n}"], f"StrAttr{n}", 128)
            for n in ATTR_SUFFIXES
            if p.get(f"strattr{n}") not in (None, "")
        }
        if ints:
            fields["int_attrs"] = ints
        if strs:
            fields["str_attrs"] = strs
        return fields

    def delete_image(self) -> Response:
        p = self._params(request)
        instance = self._instance(p)
        names: dict[str, str] = {}
        if as_bool(p.get("isdeletebyfilter", False), "IsDeleteByFilter"):
            try:
                predicate = parse_filter(_required(p, "Filter", 4096))
            except FilterError as exc:
                raise ApiError("bad_filter", f"Filter: {exc}", "Filter") from exc

            def matching(catalog: Any) -> list[dict]:
                return [it for _, it in catalog.all_items() if predicate(it)]
        else:
            product = _required(p, "ProductId", 512)
            name = p.get("picname")
            name = as_str(name, "PicName", 512) if name not in (None, "") else None

            def matching(catalog: Any) -> list[dict]:
                return product_items(catalog, product, name)

        def ids(catalog: Any) -> list[str]:
            found = matching(catalog)
            names.update({it["id"]: pic_name(it) for it in found})
            return [it["id"] for it in found]

        done = self.ctx.writer.delete(instance, ids)
        return json_response(
            {
                "RequestId": request_id(),
                "Success": True,
                "Code": 0,
                "Message": "success",
                "Data": {"PicNames": [names[i] for i in done.ids]},
            }
        )

    # -- render -----------------------------------------------------------------------
    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        service = self.ctx.service
        inst = service.find(outcome.instance)  # None: a cloud-only answer
        category = query.filters.category_id
        if category is None:
            top = outcome.hits[0].item.get("category_id") if outcome.hits else None
            category = GENERIC_CATEGORY if top is None else top
        # a catalog that named its categories (category_id = toys) keeps name -> id
        table = (inst.bundle.manifest.get("categories") or {}) if inst else {}
        names = {int(v): str(k) for k, v in table.items()}
        region = outcome.region or (outcome.subjects[0] if outcome.subjects else None)
        if region is None and outcome.image_size:
            region = Box(0, 0, *outcome.image_size)
        pic_info: dict[str, Any] = {
            "CategoryId": category,
            "Region": region_text(region) if region else "",
            "MultiRegion": [{"Region": region_text(b)} for b in outcome.subjects],
            "AllCategories": [
                {"Name": names.get(c, str(c)), "Id": c}
                for c in (service.categories(inst) if inst else [])
            ]
            + [{"Name": "Other", "Id": GENERIC_CATEGORY}],
        }
        hits, total = outcome.hits, outcome.total
        threshold = self._threshold(self._params(req))
        if threshold is not None:  # hits come best first: everything after the cut is below
            hits = [h for h in hits if h.score >= threshold]
            if len(hits) < len(outcome.hits):
                total = query.offset + len(hits)
        auctions = [self._auction(h.item, h.score) for h in hits]
        if has_cloud_hits(outcome):  # extra key; Alibaba's SDK models ignore unknown keys
            for auction, hit in zip(auctions, hits):
                auction["LensboxSource"] = hit.source
        return json_response(
            {
                "Auctions": auctions,
                "Head": {
                    "DocsFound": len(hits),  # "the number of images returned"
                    "DocsReturn": total,  # "the number that match the conditions"
                    "SearchTime": round(outcome.timings.get("total_ms", 0.0)),
                },
                "PicInfo": pic_info,
                "RequestId": request_id(),
                "Code": 0,
                "Msg": "success",
                "Success": True,
            }
        )

    def _auction(self, item: Mapping[str, Any], score: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "CategoryId": item.get("category_id")
            if item.get("category_id") is not None
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
        if isinstance(error, OssError):
            return error.response()
        if isinstance(error, SignatureError):
            status, code = SIGNATURE_ERRORS[error.reason]
        else:
            status, code = ERRORS.get(error.code, (400, "BadRequest"))
        if error.code in ("missing_image", "empty_image") and g.get("alibaba_action") == ADD:
            code = "NoSpecifiedPic"
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


def _text(value: Any) -> str:
    """A JSON value as the SDKs stringify a parameter before signing it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _required(p: dict[str, Any], name: str, max_len: int) -> str:
    value = p.get(name.lower())
    if value in (None, ""):
        raise ApiError("bad_param", f"{name} is required", name)
    return as_str(value, name, max_len)


def _crop(data: bytes, region: Box, info: ImageInfo) -> bytes:
    """Only ``Region`` of the photo, as PNG (what gets indexed)."""
    from PIL import Image

    box = region.clip(info.width, info.height)
    if box.width < 2 or box.height < 2:
        raise ApiError(
            "bad_region",
            f"Region {region_text(region)} is outside the {info.width}x{info.height} image",
            "Region",
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            part = img.convert("RGB").crop((box.x, box.y, box.x + box.width, box.y + box.height))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # the header parsed but the pixels do not (a truncated file): the client's photo
        raise ApiError("truncated_image", f"cannot read the image ({exc})") from exc
    buf = io.BytesIO()
    part.save(buf, "PNG")
    return buf.getvalue()
