"""Clarifai v2 visual search: ``POST /v2/annotations/searches``.

Auth: ``Authorization: Key <personal access token>``; a PAT is not bound to an app, so the
body names the app in ``user_app_id {user_id, app_id}``.  The query is one rank on the
image bytes: ``searches[].query.ranks[].annotation.data.image.base64``.

Every reply carries ``status {code, description}``; 10000 is success.  Auth codes
(11000-11002, 11007-11009) are ``auth``; throttling/limit codes (11003-11006) are
``throttled``; 10030 TRY_AGAIN is ``unavailable``.  Hits: ``hits[]: score (0–1),
input {id, data {image {url}, metadata}}, annotation``.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

from lensbox.device.config.fallback import ClarifaiConfig
from lensbox.device.fallback.base import (
    CloudHit,
    CloudProvider,
    as_int,
    clamp01,
    register,
    str_tags,
)
from lensbox.device.fallback.credentials import resolve
from lensbox.device.fallback.errors import CloudError, ErrorKind, kind_for_status
from lensbox.device.fallback.transport import HttpResponse, retry_after

PATH = "/v2/annotations/searches"
SUCCESS = 10000
STATUS_KINDS: dict[int, ErrorKind] = {
    10030: "unavailable",  # TRY_AGAIN
    11000: "auth",  # CONN_ACCOUNT_ISSUES
    11001: "auth",  # CONN_TOKEN_INVALID
    11002: "auth",  # CONN_CREDENTIALS_INVALID
    11003: "throttled",  # CONN_EXCEED_HOURLY_LIMIT
    11004: "throttled",  # CONN_EXCEED_MONTHLY_LIMIT
    11005: "throttled",  # CONN_THROTTLED
    11006: "throttled",  # CONN_EXCEEDS_LIMITS
    11007: "auth",  # CONN_INSUFFICIENT_SCOPES
    11008: "auth",  # CONN_KEY_INVALID
    11009: "auth",  # CONN_KEY_NOT_FOUND
}
# The rate-limit page shows the code as its name ("CONN_THROTTLED"); accept both forms.
STATUS_NAMES = {
    "TRY_AGAIN": 10030,
    "CONN_ACCOUNT_ISSUES": 11000,
    "CONN_TOKEN_INVALID": 11001,
    "CONN_CREDENTIALS_INVALID": 11002,
    "CONN_EXCEED_HOURLY_LIMIT": 11003,
    "CONN_EXCEED_MONTHLY_LIMIT": 11004,
    "CONN_THROTTLED": 11005,
    "CONN_EXCEEDS_LIMITS": 11006,
    "CONN_INSUFFICIENT_SCOPES": 11007,
    "CONN_KEY_INVALID": 11008,
    "CONN_KEY_NOT_FOUND": 11009,
    "SUCCESS": SUCCESS,
}


def status_code(status: Any) -> int | None:
    if not isinstance(status, dict):
        return None
    code = status.get("code")
    if isinstance(code, str) and code in STATUS_NAMES:
        return STATUS_NAMES[code]
    return as_int(code)


@register("clarifai")
class ClarifaiProvider(CloudProvider):
    name = "clarifai"

    config: ClarifaiConfig

    def _pat(self) -> str:
        pat = resolve(self.config.pat, self.name, "pat", self.environ)
        self._known = [pat.reveal()]
        return pat.reveal()

    def check_ready(self) -> None:
        self._pat()

    def request_body(self, image: bytes, top_k: int) -> dict[str, Any]:
        image_b64 = base64.b64encode(image).decode("ascii")
        rank = {"annotation": {"data": {"image": {"base64": image_b64}}}}
        return {
            "user_app_id": {"user_id": self.config.user_id, "app_id": self.config.app_id},
            "searches": [{"query": {"ranks": [rank]}}],
            "pagination": {"page": 1, "per_page": max(1, top_k)},
        }

    def search(self, image: bytes, top_k: int, deadline: float) -> list[CloudHit]:
        self.check_image(image)
        headers = {
            "Authorization": f"Key {self._pat()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        resp, doc = self.post_json(
            self.config.base_url + PATH,
            json.dumps(self.request_body(image, top_k)).encode("utf-8"),
            headers,
            deadline,
        )
        if not isinstance(doc, dict) or status_code(doc.get("status")) != SUCCESS:
            raise self.error(resp, doc if isinstance(doc, dict) else {})
        return self.hits(doc, top_k)

    def error(self, resp: HttpResponse, doc: dict[str, Any]) -> CloudError:
        status = _dict(doc.get("status"))
        code = status_code(status)
        kind = STATUS_KINDS.get(code) if code is not None else None
        if kind is None and resp.status != 200:
            kind = kind_for_status(resp.status)
        elif kind is None:  # HTTP 200 but no success: no status at all, or a query error
            kind = "bad_response" if code is None else "rejected"
        text = status.get("description") or "request failed"
        if status.get("details"):
            text = f"{text}: {status['details']}"
        return CloudError(
            kind,
            self.name,
            self.clean(text),
            http_status=resp.status,
            code=str(code) if code is not None else None,
            retry_after=retry_after(resp.headers),
        )

    def hits(self, doc: dict[str, Any], top_k: int) -> list[CloudHit]:
        hits = doc.get("hits", [])
        if not isinstance(hits, list):
            raise CloudError("bad_response", self.name, "'hits' is not a list", 200)
        out = []
        for rank, h in enumerate(hits[:top_k]):
            inp = h.get("input") if isinstance(h, dict) else None
            score = clamp01(h.get("score")) if isinstance(h, dict) else None
            if not isinstance(inp, dict) or not inp.get("id") or score is None:
                raise CloudError("bad_response", self.name, "hit without input id or score", 200)
            data = _dict(inp.get("data"))
            image = _dict(data.get("image"))
            meta = _dict(data.get("metadata"))
            info = _dict(image.get("image_info"))
            url = image.get("url") or None
            page_url = meta.get("page_url") or meta.get("url")
            out.append(
                CloudHit(
                    id=str(inp["id"]),
                    score=score,
                    rank=rank,
                    source=self.hit_source(),
                    title=meta.get("title"),
                    url=url,
                    page_url=page_url,
                    host=meta.get("host") or _host(page_url or url),
                    width=as_int(info.get("width")),
                    height=as_int(info.get("height")),
                    tags=str_tags(meta),
                    extra=_extra(data, info),
                    raw=h,
                )
            )
        return out


def _host(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when the response put an object there, else an empty one."""
    return value if isinstance(value, dict) else {}


def _extra(data: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    concepts = data.get("concepts")
    if isinstance(concepts, list):
        extra["concepts"] = [
            {"id": c.get("id"), "name": c.get("name"), "value": c.get("value")}
            for c in concepts
            if isinstance(c, dict)
        ]
    if isinstance(info.get("format"), str):
        extra["format"] = info["format"].lower()
    return extra
