"""Alibaba Cloud Image Search, RPC action ``SearchImageByPic`` on an instance.

Requests are signed with Alibaba's RPC signature v1 (what the SDKs do):

1. every parameter (common + action, query and form body alike, except ``Signature``) is
   percent-encoded per RFC 3986 (space -> %20, ``*`` -> %2A, ``~`` kept), sorted by name
   and joined as ``k=v&k=v`` (the canonicalized query string);
2. ``StringToSign = METHOD + "&" + enc("/") + "&" + enc(canonicalized)``;
3. ``Signature = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))``.

Common parameters: Format=JSON, Version, AccessKeyId, SignatureMethod=HMAC-SHA1,
SignatureVersion=1.0, SignatureNonce (unique per request), Timestamp (UTC ISO 8601),
RegionId.  ``PicContent`` (base64) travels in the form body so the image never appears in
a URL; small parameters go in the query string, as the SDK does.

Hits: ``Auctions[]`` with ``Score`` 0–1 (API 2020-12-14; older replies without it get a
rank-derived score).  Throttling is documented as ``403 DeniedRequest``; it is typed
``throttled``, not ``auth``, by its code.
"""

from __future__ import annotations

import base64
import hmac
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from lensbox.device.config.fallback import AlibabaConfig
from lensbox.device.fallback.base import CloudHit, CloudProvider, clamp01, rank_score, register
from lensbox.device.fallback.credentials import resolve
from lensbox.device.fallback.errors import CloudError, ErrorKind, kind_for_status
from lensbox.device.fallback.transport import HttpResponse, retry_after

AUTH_CODES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "InvalidTimeStamp",
    "SignatureNonceUsed",
    "NoPermission",
    "Forbidden",
    "InvalidSecurityToken",
    "MissingSecurityToken",
)
THROTTLE_CODES = ("DeniedRequest", "Throttling")
UNAVAILABLE_CODES = ("ServiceUnavailable", "InternalError", "UnknownException")


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba's signature requires (quote keeps only A-Za-z0-9-_.~)."""
    return quote(str(value), safe="~")


def canonicalized_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))


def string_to_sign(params: Mapping[str, str], method: str = "POST") -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonicalized_query(params))}"


def rpc_signature(params: Mapping[str, str], secret: str, method: str = "POST") -> str:
    """Alibaba RPC signature v1 of ``params`` (which must not contain ``Signature``)."""
    mac = hmac.new(
        (secret + "&").encode("utf-8"), string_to_sign(params, method).encode("utf-8"), "sha1"
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def _code_kind(code: str) -> ErrorKind | None:
    if code.startswith(AUTH_CODES):
        return "auth"
    if code.startswith(THROTTLE_CODES):
        return "throttled"
    if code.startswith(UNAVAILABLE_CODES):
        return "unavailable"
    return None


@register("alibaba")
class AlibabaProvider(CloudProvider):
    name = "alibaba"
    max_image_bytes = 4 * 1024 * 1024

    config: AlibabaConfig

    def _credentials(self) -> tuple[str, str]:
        cfg = self.config
        key_id = resolve(cfg.access_key_id, self.name, "access_key_id", self.environ)
        secret = resolve(cfg.access_key_secret, self.name, "access_key_secret", self.environ)
        self._known = [secret.reveal()]
        return key_id.reveal(), secret.reveal()

    def check_ready(self) -> None:
        self._credentials()

    def signed_request(
        self, image: bytes, top_k: int, key_id: str, secret: str
    ) -> tuple[str, bytes]:
        """(url, form body) of a signed SearchImageByPic call."""
        query = {
            "Format": "JSON",
            "Version": self.config.api_version,
            "AccessKeyId": key_id,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "RegionId": self.config.region_id,
            "Action": "SearchImageByPic",
            "InstanceName": self.config.instance_name,
            "Num": str(max(1, min(100, top_k))),
            "Start": "0",
        }
        if self.config.category_id is not None:
            query["CategoryId"] = str(self.config.category_id)
        if self.config.crop is not None:
            query["Crop"] = "true" if self.config.crop else "false"
        form = {"PicContent": base64.b64encode(image).decode("ascii")}
        query["Signature"] = rpc_signature({**query, **form}, secret, "POST")
        url = f"{self.config.base_url}/?{canonicalized_query(query)}"
        return url, canonicalized_query(form).encode("ascii")

    def search(self, image: bytes, top_k: int, deadline: float) -> list[CloudHit]:
        self.check_image(image)
        key_id, secret = self._credentials()
        url, body = self.signed_request(image, top_k, key_id, secret)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        resp, doc = self.post_json(url, body, headers, deadline)
        if not isinstance(doc, dict):
            raise CloudError("bad_response", self.name, "reply is not a JSON object", 200)
        if doc.get("Success") is False or doc.get("Code") not in (0, "0", None):
            raise self.error(resp, doc)
        return self.hits(doc, top_k)

    def error(self, resp: HttpResponse, doc: dict[str, Any]) -> CloudError:
        code = str(doc.get("Code", "") or "")
        kind = _code_kind(code) or kind_for_status(resp.status)
        if resp.status == 200 and kind == "rejected" and not code:
            kind = "bad_response"
        return CloudError(
            kind,
            self.name,
            self.clean(doc.get("Message") or doc.get("Msg") or "request failed"),
            http_status=resp.status,
            code=code or None,
            retry_after=retry_after(resp.headers),
        )

    def hits(self, doc: dict[str, Any], top_k: int) -> list[CloudHit]:
        auctions = doc.get("Auctions", [])
        if not isinstance(auctions, list):
            raise CloudError("bad_response", self.name, "'Auctions' is not a list", 200)
        out = []
        for rank, a in enumerate(auctions[:top_k]):
            if not isinstance(a, dict) or not a.get("ProductId"):
                raise CloudError("bad_response", self.name, "auction without ProductId", 200)
            score = clamp01(a.get("Score"))
            product, pic = str(a["ProductId"]), str(a.get("PicName") or "")
            out.append(
                CloudHit(
                    id=f"{product}/{pic}" if pic else product,
                    score=score if score is not None else rank_score(rank, top_k),
                    score_kind="similarity" if score is not None else "rank",
                    rank=rank,
                    source=self.hit_source(),
                    title=pic or None,
                    tags={"pic_name": pic} if pic else {},
                    extra=_extra(a),
                    raw=a,
                )
            )
        return out


def _extra(a: dict[str, Any]) -> dict[str, Any]:
    """Alibaba's fields onto lensbox's catalog columns (which were modelled on them)."""
    extra: dict[str, Any] = {"product_id": str(a["ProductId"])}
    if a.get("CategoryId") is not None:
        extra["category_id"] = a["CategoryId"]
    if a.get("CustomContent"):
        extra["custom_content"] = a["CustomContent"]
    ints, strs = {}, {}
    for suffix in ("", "2", "3", "4"):
        if a.get(f"IntAttr{suffix}") is not None:
            ints[f"int_attr{suffix}"] = a[f"IntAttr{suffix}"]
        if a.get(f"StrAttr{suffix}") is not None:
            strs[f"str_attr{suffix}"] = a[f"StrAttr{suffix}"]
    if ints:
        extra["int_attrs"] = ints
    if strs:
        extra["str_attrs"] = strs
    return extra
