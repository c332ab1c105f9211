"""Yandex Search API v2, REST: ``POST /v2/image/search_by_image``.

Auth is ``Authorization: Api-Key <key>`` (service-account API key) or ``Bearer <IAM token>``
(IAM tokens live 12 h: point ``iam_token`` at a file a refresher rewrites; it is re-read
on every query).  The body is camelCase proto3 JSON: ``folderId`` and exactly one of
``data`` (base64, at most 3 MiB of image), ``url``, ``id``.

Yandex returns no similarity score, only an order, so hits carry ``score_kind = "rank"``
and a rank-derived score (:func:`rank_score`).  One page is fetched per query (page 0);
hits beyond ``top_k`` are dropped.  Errors come as gRPC-gateway JSON
``{"code": <grpc code>, "message": ..., "details": [...]}``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from lensbox.device.config.fallback import YandexConfig
from lensbox.device.fallback.base import CloudHit, CloudProvider, as_int, rank_score, register
from lensbox.device.fallback.credentials import Secret, resolve
from lensbox.device.fallback.errors import CloudError, ErrorKind, kind_for_status
from lensbox.device.fallback.transport import HttpResponse, retry_after

PATH = "/v2/image/search_by_image"

# google.rpc.Code -> kind
GRPC_KINDS: dict[int, ErrorKind] = {
    3: "rejected",  # INVALID_ARGUMENT
    4: "timeout",  # DEADLINE_EXCEEDED
    7: "auth",  # PERMISSION_DENIED
    8: "throttled",  # RESOURCE_EXHAUSTED
    13: "unavailable",  # INTERNAL
    14: "unavailable",  # UNAVAILABLE
    16: "auth",  # UNAUTHENTICATED
}


@register("yandex")
class YandexProvider(CloudProvider):
    name = "yandex"
    max_image_bytes = 3 * 1024 * 1024

    config: YandexConfig

    def _credential(self) -> tuple[str, Secret]:
        if self.config.auth == "api_key":
            secret = resolve(self.config.api_key, self.name, "api_key", self.environ)
            scheme = "Api-Key"
        else:
            secret = resolve(self.config.iam_token, self.name, "iam_token", self.environ)
            scheme = "Bearer"
        self._known = [secret.reveal()]
        return scheme, secret

    def check_ready(self) -> None:
        self._credential()

    def request_body(self, image: bytes) -> dict[str, Any]:
        body: dict[str, Any] = {
            "folderId": self.config.folder_id,
            "data": base64.b64encode(image).decode("ascii"),
        }
        if self.config.family_mode:
            body["familyMode"] = self.config.family_mode
        if self.config.site:
            body["site"] = self.config.site
        return body

    def search(self, image: bytes, top_k: int, deadline: float) -> list[CloudHit]:
        self.check_image(image)
        scheme, secret = self._credential()
        headers = {
            "Authorization": f"{scheme} {secret.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        payload = json.dumps(self.request_body(image)).encode("utf-8")
        resp, doc = self.post_json(self.config.base_url + PATH, payload, headers, deadline)
        return self.hits(doc, top_k, resp.status)

    def error(self, resp: HttpResponse, doc: dict[str, Any]) -> CloudError:
        grpc = as_int(doc.get("code"))
        kind = GRPC_KINDS.get(grpc) if grpc is not None else None
        return CloudError(
            kind or kind_for_status(resp.status),
            self.name,
            self.clean(doc.get("message") or "request failed"),
            http_status=resp.status,
            code=str(grpc) if grpc is not None else None,
            retry_after=retry_after(resp.headers),
        )

    def hits(self, doc: Any, top_k: int, status: int) -> list[CloudHit]:
        images = doc.get("images", []) if isinstance(doc, dict) else None
        if not isinstance(images, list):
            raise CloudError("bad_response", self.name, "no 'images' list", http_status=status)
        out = []
        for rank, img in enumerate(images[:top_k]):
            if not isinstance(img, dict) or not img.get("url"):
                raise CloudError("bad_response", self.name, "image without url", status)
            out.append(
                CloudHit(
                    id=str(img["url"]),
                    score=rank_score(rank, top_k),
                    score_kind="rank",
                    rank=rank,
                    source=self.hit_source(),
                    title=img.get("pageTitle", img.get("page_title")),
                    url=img["url"],
                    page_url=img.get("pageUrl", img.get("page_url")),
                    host=img.get("host"),
                    width=as_int(img.get("width")),
                    height=as_int(img.get("height")),
                    extra=_extra(img),
                    raw=img,
                )
            )
        return out


def _extra(img: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    fmt = img.get("format")
    if isinstance(fmt, str) and fmt.startswith("IMAGE_FORMAT_"):
        extra["format"] = fmt[len("IMAGE_FORMAT_") :].lower()
    if img.get("passage"):
        extra["custom_content"] = img["passage"]
    return extra
