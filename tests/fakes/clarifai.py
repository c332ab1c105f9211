"""Fake Clarifai v2: ``POST /v2/annotations/searches``.

Requires ``Authorization: Key <PAT>`` and ``user_app_id {user_id, app_id}`` naming the app;
the query is ``searches[0].query.ranks[0].annotation.data.image.base64``.  Replies carry
``status {code, description, req_id}`` (10000 = success) and ``hits[]: score, input {id,
data {image {url, image_info}, metadata}}, annotation``; pagination via ``per_page``.
Codes are Clarifai's status codes (11009 key not found, CONN_THROTTLED as the rate-limit
page shows it, by name).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tests.fakes.base import FakeProvider, Recorded, Reply

PATH = "/v2/annotations/searches"


class FakeClarifai(FakeProvider):
    name = "clarifai"

    def __init__(self, *, pat: str, user_id: str, app_id: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.pat = pat
        self.user_id = user_id
        self.app_id = app_id

    def status(self, code: Any, description: str, details: str = "") -> dict[str, Any]:
        st = {"code": code, "description": description, "req_id": self.request_id()}
        if details:
            st["details"] = details
        return {"status": st}

    def authenticate(self, rec: Recorded) -> Reply | None:
        scheme, _, presented = rec.headers.get("Authorization", "").partition(" ")
        if scheme == "Key" and presented == self.pat:
            return None
        details = f"key {presented}" if self.echo_secret else ""
        return 401, self.status(11009, "API key not found", details)

    def handle(self, rec: Recorded) -> Reply:
        if rec.path != PATH:
            return 404, self.status(11101, "Resource does not exist")
        try:
            body = json.loads(rec.body)
            ids = body["user_app_id"]
            image = body["searches"][0]["query"]["ranks"][0]["annotation"]["data"]["image"]
            base64.b64decode(image["base64"], validate=True)
        except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
            return 400, self.status(11102, "Invalid request", "malformed search")
        if ids != {"user_id": self.user_id, "app_id": self.app_id}:
            return 404, self.status(11101, "Resource does not exist", "app not found")
        per_page = int(body.get("pagination", {}).get("per_page", 20))
        hits = [self.hit(c) for c in self.catalog[:per_page]]
        return 200, {**self.status(10000, "Ok"), "id": "search-1", "hits": hits}

    @staticmethod
    def hit(c: dict[str, Any]) -> dict[str, Any]:
        return {
            "score": c["score"],
            "input": {
                "id": c["id"],
                "data": {
                    "image": {
                        "url": c["url"],
                        "image_info": {
                            "width": c["width"],
                            "height": c["height"],
                            "format": "JPEG",
                        },
                    },
                    "metadata": {"title": c["title"], "page_url": c["page_url"], **c["tags"]},
                },
                "status": {"code": 30000, "description": "Download complete"},
            },
            "annotation": {
                "id": f"ann-{c['id']}",
                "input_id": c["id"],
                "data": {"concepts": [{"id": "thing", "name": "thing", "value": 1}]},
            },
        }

    def error_reply(self, mode: str, rec: Recorded) -> Reply:
        if mode == "401":
            return 401, self.status(11009, "API key not found")
        if mode == "429":
            return 429, self.status(
                "CONN_THROTTLED",
                "Making too many requests",
                "exceeded limit of 15 requests per second",
            )
        return 500, self.status(98004, "Internal issue")
