"""Fake Yandex Search API v2 REST: ``POST /v2/image/search_by_image``.

Accepts ``Authorization: Api-Key <key>`` or ``Bearer <IAM token>``; the body is camelCase
JSON with ``folderId`` and exactly one of ``data`` (base64, <= 3 MiB of image), ``url``,
``id``.  The reply has ``images[]`` (url, format, width, height, passage, host, pageTitle,
pageUrl; int64 as strings, as proto3 JSON writes them), ``page``, ``maxPage``, ``id``
(CBIR id).  Errors are gRPC-gateway JSON ``{"code", "message", "details"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from tests.fakes.base import FakeProvider, Recorded, Reply

PATH = "/v2/image/search_by_image"
MAX_DATA = 3 * 1024 * 1024


def grpc_error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "details": []}


class FakeYandex(FakeProvider):
    name = "yandex"

    def __init__(self, *, api_key: str, iam_token: str, folder_id: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.api_key = api_key
        self.iam_token = iam_token
        self.folder_id = folder_id

    def authenticate(self, rec: Recorded) -> Reply | None:
        auth = rec.headers.get("Authorization", "")
        scheme, _, presented = auth.partition(" ")
        if (scheme == "Api-Key" and presented == self.api_key) or (
            scheme == "Bearer" and presented == self.iam_token
        ):
            return None
        msg = "The token is invalid" if scheme == "Bearer" else "Unknown api key"
        if self.echo_secret:
            msg += f" '{presented}'"
        return 401, grpc_error(16, msg)

    def handle(self, rec: Recorded) -> Reply:
        if rec.path != PATH:
            return 404, grpc_error(5, "Not Found")
        try:
            body = json.loads(rec.body)
        except ValueError:
            return 400, grpc_error(3, "Invalid JSON payload")
        if body.get("folderId") != self.folder_id:
            return 403, grpc_error(7, "Permission denied")
        given = [k for k in ("url", "data", "id") if body.get(k)]
        if len(given) != 1:
            return 400, grpc_error(3, "exactly one of url, data, id is required")
        if "data" in given:
            try:
                image = base64.b64decode(body["data"], validate=True)
            except (binascii.Error, ValueError):
                return 400, grpc_error(3, "data: invalid base64")
            if len(image) > MAX_DATA:
                return 400, grpc_error(3, "data: too large")
            cbir = hashlib.sha1(image).hexdigest()
        else:
            cbir = hashlib.sha1(str(body[given[0]]).encode()).hexdigest()
        return 200, self.success(cbir)

    def success(self, cbir: str) -> dict[str, Any]:
        images = [
            {
                "url": c["url"],
                "format": "IMAGE_FORMAT_JPEG",
                "width": str(c["width"]),
                "height": str(c["height"]),
                "passage": f"{c['title']} on {c['host']}",
                "host": c["host"],
                "pageTitle": c["title"],
                "pageUrl": c["page_url"],
            }
            for c in self.catalog
        ]
        return {"images": images, "page": "0", "maxPage": "4", "id": f"{cbir}-cbir"}

    def error_reply(self, mode: str, rec: Recorded) -> Reply:
        if mode == "401":
            return 401, grpc_error(16, "Unauthenticated")
        if mode == "429":
            return 429, grpc_error(8, "Resource exhausted: too many requests")
        return 500, grpc_error(13, "Internal error")
