"""lensbox's own API (``/v1/...``), documented in openapi.yaml next to this file.

``POST /v1/search`` takes the image three ways: a multipart upload (field ``image``), the
raw image as the body (``Content-Type: image/*`` or ``application/octet-stream``), or JSON
with exactly one of ``base64``, ``url`` or ``id``. Parameters travel in the JSON body, or as
form fields / query-string parameters for the other two.

Catalog changes (a live catalog under `lensbox serve`; writes.py): ``PUT /v1/items/<id>``
adds or replaces an item from one or more photos (multipart fields ``image`` + a JSON
``fields`` field, JSON with ``base64`` / ``images`` / ``url`` and ``fields``, or the raw
photo as the body with ``?fields=<json>``); ``PATCH /v1/items/<id>`` changes fields and
keeps the photos; ``DELETE /v1/items/<id>`` deletes. Each answers once the change is
journaled (fsync'd) and visible to the next search. ``instance`` as a query parameter (or
JSON / form field) picks the bundle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Request, Response, request

from lensbox.device.api.auth import bearer
from lensbox.device.api.contract import Contract, Route, json_response
from lensbox.device.api.errors import ApiError
from lensbox.device.api.params import (
    as_bool,
    as_int,
    as_str,
    as_tags,
    box_from_xywh,
    in_range,
    json_object,
    loads_text,
    pic_name,
)
from lensbox.device.bundle.format import THUMBNAILS
from lensbox.device.bundle.thumbnails import thumbnail_for
from lensbox.device.embedding.subject import Box
from lensbox.device.search.expression import FilterError, parse_filter
from lensbox.device.serving.query import (
    ConceptTerm,
    FamilyMode,
    Filters,
    ImageLimits,
    ImageSource,
    SearchOutcome,
    SearchQuery,
    SourceKind,
)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_TOP_K = 100
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_OFFSET = 10_000
MAX_VERIFY = 100  # as [search] verify
FAMILY_MODES: tuple[FamilyMode, ...] = ("none", "moderate", "strict")
FLAT_FILTERS = ("category_id", "tags", "host", "family_mode", "distinct_product", "expression")


def box_json(box: Box | None) -> dict | None:
    if box is None:
        return None
    return {"x": box.x, "y": box.y, "width": box.width, "height": box.height}


def item_metadata(item: Mapping[str, Any]) -> dict:
    return {
        "title": item.get("title"),
        "page_url": item.get("page_url"),
        "host": item.get("host"),
        "category_id": item.get("category_id"),
        "tags": item.get("tags") or {},
        "product_id": item.get("product_id"),
        "custom_content": item.get("custom_content"),
        "int_attrs": item.get("int_attrs") or {},
        "str_attrs": item.get("str_attrs") or {},
        "adult": bool(item.get("adult")),
        "file": pic_name(item),
        "width": item.get("width"),
        "height": item.get("height"),
        "format": item.get("format"),
    }


def _region_json(region: Any) -> list[list[float]] | None:
    """The matched item's outline in the query image (4 corners, pixels), or None."""
    if not region:
        return None
    return [[round(float(x), 1), round(float(y), 1)] for x, y in region]


class NativeContract(Contract):
    name = "native"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        server = ctx.server
        self.limits = ImageLimits(
            max_bytes=min(MAX_IMAGE_BYTES, server.max_request_bytes),
            min_side=16,
            max_side=16384,
            max_pixels=server.max_pixels,
        )

    def routes(self) -> list[Route]:
        return [
            Route("/v1/search", ("POST",), self.search),
            Route("/v1/items", ("GET",), self.list_items),
            Route("/v1/items/<path:item_id>/image", ("GET",), self.get_item_image),
            Route("/v1/items/<path:item_id>", ("GET",), self.get_item),
            Route("/v1/items/<path:item_id>", ("PUT",), self.put_item),
            Route("/v1/items/<path:item_id>", ("PATCH",), self.patch_item),
            Route("/v1/items/<path:item_id>", ("DELETE",), self.delete_item),
            Route("/v1/bundles", ("GET",), self.get_bundles),
            Route("/v1/openapi.yaml", ("GET",), self.get_openapi, public=True),
        ]

    def owns(self, path: str) -> bool:
        return True  # the fallback: anything no provider contract claims

    def credential(self, req: Request) -> str | None:
        return bearer(req.headers.get("Authorization"), "Bearer") or req.headers.get("X-API-Key")

    # -- parse ------------------------------------------------------------------------
    def parse(self, req: Request, **params: str) -> SearchQuery:
        if req.mimetype == "application/json":
            body = json_object(req)
            sources = self._json_sources(body)
        elif req.mimetype == "multipart/form-data":
            body = _flat_to_body({**req.args.to_dict(), **req.form.to_dict()})
            upload = req.files.get("image")
            if upload is None:
                raise ApiError("missing_image", "multipart uploads need a file field 'image'")
            sources = [ImageSource.from_bytes(upload.read(self.limits.max_bytes + 1))]
        else:
            body = _flat_to_body(req.args.to_dict())
            data = req.get_data(cache=False)
            if not data:
                raise ApiError(
                    "missing_image",
                    "send the image as the body, as multipart field 'image', or JSON with "
                    "base64, url or id",
                )
            sources = [ImageSource.from_bytes(data)]
        return self._query(body, sources)

    def _json_sources(self, body: dict[str, Any]) -> list[ImageSource]:
        given = [k for k in ("base64", "url", "id") if body.get(k) not in (None, "")]
        if len(given) != 1:
            raise ApiError(
                "missing_image" if not given else "ambiguous_image",
                "give exactly one of base64, url or id",
            )
        key = given[0]
        text = as_str(body[key], key, 64 * 1024 * 1024)
        kinds: dict[str, SourceKind] = {"base64": "base64", "url": "url", "id": "id"}
        return [ImageSource(kinds[key], text=text)]

    def _query(self, body: dict[str, Any], sources: list[ImageSource]) -> SearchQuery:
        top_k = in_range(as_int(body.get("top_k", 10), "top_k"), "top_k", 1, MAX_TOP_K)
        offset = in_range(as_int(body.get("offset", 0), "offset"), "offset", 0, MAX_OFFSET)
        region = box_from_xywh(body["region"]) if body.get("region") not in (None, "") else None
        instance = body.get("instance")
        if instance is not None:
            instance = as_str(instance, "instance", 100)
        return SearchQuery(
            instance=instance,
            sources=sources,
            limits=self.limits,
            top_k=top_k,
            offset=offset,
            region=region,
            crop=as_bool(body.get("crop", False), "crop"),
            filters=self._filters(body.get("filters") or {}, instance),
            verify=self._verify(body.get("verify")),
        )

    @staticmethod
    def _verify(raw: Any) -> int | None:
        """The request's verification budget: candidates checked first (0: none, the
        global and visual-word ranking as it is); unset: the bundle's budget."""
        if raw in (None, ""):
            return None
        return in_range(as_int(raw, "verify"), "verify", 0, MAX_VERIFY)

    def _filters(self, raw: Any, instance: str | None = None) -> Filters:
        if not isinstance(raw, dict):
            raise ApiError("bad_param", "filters must be an object", "filters")
        unknown = set(raw) - {*FLAT_FILTERS, "concepts"}
        if unknown:
            raise ApiError("bad_param", f"unknown filters: {', '.join(sorted(unknown))}", "filters")
        filters = Filters()
        if raw.get("category_id") not in (None, ""):
            filters.category_id = self._category(raw["category_id"], instance)
        filters.tags = as_tags(raw.get("tags"))
        if raw.get("host"):
            filters.site = as_str(raw["host"], "host", 253)
        mode = str(raw.get("family_mode") or "none").lower()
        if mode not in FAMILY_MODES:
            raise ApiError("bad_param", f"family_mode must be one of {FAMILY_MODES}", "family_mode")
        filters.family_mode = mode
        filters.distinct_product = as_bool(raw.get("distinct_product", False), "distinct_product")
        if raw.get("expression"):
            try:
                filters.expression = parse_filter(
                    as_str(raw["expression"], "expression", 4096), named_str_attrs=True
                )
            except FilterError as exc:
                raise ApiError("bad_filter", f"bad filter expression: {exc}", "expression") from exc
        filters.concepts = _concepts(raw.get("concepts") or {})
        return filters

    # -- render -----------------------------------------------------------------------
    def _category(self, value: Any, instance: str | None) -> int:
        """An integer id, or a category name the instance's bundle numbered at build."""
        table: dict[str, int] = {}
        if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
            inst = self.ctx.service.instance(instance)
            table = inst.bundle.manifest.get("categories") or {}
            if value in table:
                return int(table[value])
            known = ", ".join(table) or "none; this catalog has integer ids only"
            raise ApiError(
                "bad_param", f"no category named {value!r:.60} (names: {known})", "category_id"
            )
        return as_int(value, "category_id")

    def render(self, outcome: SearchOutcome, query: SearchQuery, req: Request) -> Response:
        emb = outcome.query
        size = outcome.image_size
        body = {
            "query_id": outcome.query_id,
            "instance": outcome.instance,
            "total": outcome.total,
            "top_k": query.top_k,
            "offset": query.offset,
            "hits": [
                {
                    "id": h.id,
                    "score": h.score,
                    "source": h.source,
                    "score_kind": h.score_kind,
                    "verdict": h.verdict,
                    "inliers": h.inliers,
                    "region": _region_json(h.region),
                    "metadata": item_metadata(h.item),
                }
                for h in outcome.hits
            ],
            "query": {
                "cached": outcome.cached,
                "image": {"width": size[0], "height": size[1]} if size else None,
                "region": box_json(outcome.region),
                "subjects": [box_json(b) for b in outcome.subjects],
                "concepts": [
                    {"id": c.id, "name": c.name, "value": c.value}
                    for c in (emb.concepts if emb else [])
                ],
            },
            "timings": {k: round(v, 3) for k, v in outcome.timings.items()},
        }
        if outcome.fallback is not None:
            body["fallback"] = outcome.fallback
        return json_response(body)

    def render_error(self, error: ApiError) -> Response:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.param:
            body["param"] = error.param
        return json_response({"error": body}, error.status)

    # -- other endpoints --------------------------------------------------------------
    def get_item(self, item_id: str) -> Response:
        inst = self.ctx.service.instance(request.args.get("instance"))
        item = inst.catalog.get(item_id)
        if item is None:
            raise ApiError("not_found", f"no catalog item with id {item_id!r}")
        return json_response(item_json(inst.name, inst.catalog, item))

    def list_items(self) -> Response:
        """A page of the catalog in its stored order (bundle rows, then items added on the
        box); ``q`` keeps items whose id or title contains it (case-insensitive)."""
        inst = self.ctx.service.instance(request.args.get("instance"))
        limit = in_range(as_int(request.args.get("limit", 50), "limit"), "limit", 1, MAX_TOP_K)
        offset = in_range(as_int(request.args.get("offset", 0), "offset"), "offset", 0, None)
        needle = as_str(request.args.get("q", ""), "q", 200).strip().lower()
        page: list[dict] = []
        matched = 0
        for _row, item in inst.catalog.all_items(chunk=500):
            if needle and not _matches(item, needle):
                continue
            if offset <= matched < offset + limit:
                page.append({"id": item["id"], "metadata": item_metadata(item)})
            matched += 1
            if not needle and matched >= offset + limit:
                break
        total = matched if needle else inst.catalog.count()
        return json_response(
            {"instance": inst.name, "total": total, "offset": offset, "limit": limit, "items": page}
        )

    def get_item_image(self, item_id: str) -> Response:
        """The item's picture: the small JPEG stored in the bundle at build time (the source
        photos stay on the workstation that built it)."""
        inst = self.ctx.service.instance(request.args.get("instance"))
        item = inst.catalog.get(item_id)
        if item is None:
            if inst.catalog.get(f"{item_id}/image") is not None:  # an id ending in "/image"
                return self.get_item(f"{item_id}/image")
            raise ApiError("not_found", f"no catalog item with id {item_id!r}")
        bundle_path = Path(inst.bundle.path)
        jpeg = thumbnail_for(bundle_path, item)
        if jpeg is None:
            if not (bundle_path / THUMBNAILS).is_file():
                why = "this bundle has no thumbnails (built without them, or by an older lensbox)"
            else:
                why = "the item was added or given a new photo on the box after the build"
            raise ApiError("not_found", f"no image for item {item_id!r}: {why}")
        resp = Response(jpeg, mimetype="image/jpeg")
        resp.set_etag(hashlib.sha256(jpeg).hexdigest()[:32])
        resp.headers["Cache-Control"] = "private, max-age=300"
        resp.make_conditional(request)  # updates resp in place (and returns it, as werkzeug's)
        return resp

    # -- catalog changes --------------------------------------------------------------
    def put_item(self, item_id: str) -> Response:
        images, fields, instance = self._item_upload(request)
        done = self.ctx.writer.put(instance, item_id, images, fields, self.limits)
        return json_response(self._change(done, "put"), 200 if done.replaced else 201)

    def patch_item(self, item_id: str) -> Response:
        body = json_object(request)
        unknown = set(body) - {"fields", "instance"}
        if unknown:
            raise ApiError(
                "bad_param",
                f'unknown keys {", ".join(sorted(unknown))}; send {{"fields": {{...}}}}',
                "fields",
            )
        done = self.ctx.writer.update(self._instance(body), item_id, body.get("fields"))
        return json_response(self._change(done, "update"))

    def delete_item(self, item_id: str) -> Response:
        done = self.ctx.writer.delete(request.args.get("instance"), [item_id])
        if done.change is None:
            raise ApiError("not_found", f"no catalog item with id {item_id!r}")
        return json_response(
            {"id": item_id, "instance": done.instance, "op": "delete", "seq": done.change.seq}
        )

    def _instance(self, body: dict[str, Any]) -> str | None:
        value = body.get("instance") or request.args.get("instance")
        return as_str(value, "instance", 100) if value is not None else None

    def _item_upload(self, req: Request) -> tuple[list[bytes], Any, str | None]:
        """(photos, fields, instance) from multipart, JSON or a raw photo body."""
        service, limits = self.ctx.service, self.limits
        if req.mimetype == "multipart/form-data":
            form = req.form.to_dict()
            uploads = req.files.getlist("image")
            if not uploads:
                raise ApiError("missing_image", "multipart uploads need file field(s) 'image'")
            images = [
                service.image_bytes(ImageSource.from_bytes(u.read(limits.max_bytes + 1)), limits)
                for u in uploads
            ]
            return images, _json_field(form.get("fields")), self._instance(form)
        if req.mimetype == "application/json":
            body = json_object(req)
            unknown = set(body) - {"base64", "images", "url", "fields", "instance"}
            if unknown:
                raise ApiError("bad_param", f"unknown keys {', '.join(sorted(unknown))}")
            return self._json_photos(body), body.get("fields"), self._instance(body)
        data = req.get_data(cache=False)
        if not data:
            raise ApiError(
                "missing_image",
                "send the photo as multipart field 'image', as "
                "the body, or JSON with base64, images or url",
            )
        images = [service.image_bytes(ImageSource.from_bytes(data), limits)]
        return images, _json_field(req.args.get("fields")), self._instance({})

    def _json_photos(self, body: dict[str, Any]) -> list[bytes]:
        sources: list[ImageSource] = []
        if body.get("base64") not in (None, ""):
            sources.append(
                ImageSource("base64", text=as_str(body["base64"], "base64", 64 * 1024 * 1024))
            )
        if body.get("images") not in (None, []):
            photos = body["images"]
            if not isinstance(photos, list) or len(photos) > 16:
                raise ApiError(
                    "bad_param", "images must be a list of at most 16 base64 strings", "images"
                )
            sources += [
                ImageSource("base64", text=as_str(t, "images", 64 * 1024 * 1024)) for t in photos
            ]
        if body.get("url") not in (None, ""):
            sources.append(ImageSource("url", text=as_str(body["url"], "url", 2048)))
        if not sources:
            raise ApiError("missing_image", "give the photo as base64, images or url")
        return [self.ctx.service.image_bytes(src, self.limits) for src in sources]

    def _change(self, done: Any, op: str) -> dict[str, Any]:
        now = self.ctx.service.instances.get(done.instance)
        item = done.item
        body: dict[str, Any] = {
            "id": done.ids[0],
            "instance": done.instance,
            "op": op,
            "seq": done.change.seq,
            "created": not done.replaced,
        }
        if now is not None and item is not None:
            body["item"] = item_json(done.instance, now.catalog, item)
        return body

    def get_bundles(self) -> Response:
        bundles = []
        for name in self.ctx.service.names():
            inst = self.ctx.service.instance(name)
            bundle = inst.bundle
            manifest = bundle.manifest
            bundles.append(
                {
                    "name": name,
                    "path": str(bundle.path),
                    "items": inst.catalog.count(),
                    "vectors": len(bundle.vectors),
                    "dims": bundle.dims,
                    "disk_bytes": bundle.disk_bytes,
                    "model_sha256": manifest.get("model", {}).get("sha256"),
                    "format_version": manifest.get("format_version"),
                    "manifest": manifest,
                    "live": inst.catalog.stats(),
                }
            )
        return json_response({"bundles": bundles})

    def get_openapi(self) -> Response:
        return Response(OPENAPI_PATH.read_text(encoding="utf-8"), mimetype="application/yaml")


def item_json(instance: str, catalog: Any, item: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Item`` shape of openapi.yaml."""
    vectors = catalog.item_vectors(item["id"])
    return {
        "id": item["id"],
        "instance": instance,
        "metadata": item_metadata(item),
        "concepts": item.get("concepts") or [],
        "vectors": 0 if vectors is None else len(vectors),
    }


def _matches(item: Mapping[str, Any], needle: str) -> bool:
    return needle in str(item["id"]).lower() or needle in str(item.get("title") or "").lower()


def _json_field(text: str | None) -> Any:
    """A form / query parameter holding a JSON object (``fields``)."""
    if text in (None, ""):
        return None
    return loads_text(text, "fields", "bad_param", "fields")


def _flat_to_body(flat: dict[str, str]) -> dict[str, Any]:
    """Form / query-string parameters -> the JSON body shape."""
    body: dict[str, Any] = {k: v for k, v in flat.items() if k not in FLAT_FILTERS}
    filters: dict[str, Any] = {k: flat[k] for k in FLAT_FILTERS if flat.get(k) not in (None, "")}
    concepts = {}
    for key in ("include", "exclude"):
        value = body.pop(f"concepts_{key}", None)
        if value:
            concepts[key] = [c.strip() for c in value.split(",") if c.strip()]
    if concepts:
        filters["concepts"] = concepts
    body["filters"] = filters
    return body


def _concepts(raw: Any) -> list[ConceptTerm]:
    if not isinstance(raw, dict) or set(raw) - {"include", "exclude"}:
        raise ApiError("bad_param", "concepts must be {include: [...], exclude: [...]}", "concepts")
    terms = []
    for key in ("include", "exclude"):
        values = raw.get(key) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ApiError("bad_param", f"concepts.{key} must be a list of strings", "concepts")
        terms += [ConceptTerm(v, v, key == "include") for v in values]
    return terms
