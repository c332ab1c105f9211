"""Huawei Cloud ImageSearch: ``POST /v1/{project_id}/{instance_name}/image/search``.

Two ways to authenticate, both documented:

* ``auth = "token"``: ``X-Auth-Token: <IAM token>`` (tokens expire after 24 h: point
  ``token`` at a file a refresher rewrites; it is re-read on every query);
* ``auth = "aksk"``: API Gateway signing, algorithm ``SDK-HMAC-SHA256``::

      CanonicalRequest = METHOD \\n CanonicalURI \\n CanonicalQueryString \\n
                         CanonicalHeaders \\n SignedHeaders \\n hex(sha256(body))
      StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
      Signature        = hex(HMAC-SHA256(SK, StringToSign))
      Authorization: SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<h1;h2>, Signature=<sig>

  CanonicalURI is the path with each segment RFC 3986-encoded and always ending in "/";
  CanonicalHeaders are ``name:value`` lines (names lower-cased, values trimmed, sorted),
  each ending in "\\n"; X-Sdk-Date is ``YYYYMMDDTHHMMSSZ`` (UTC) and must be within
  15 minutes of the gateway's clock.  Note: the gateway locks an AK for 5 minutes after
  5 consecutive signature failures, one more reason the circuit breaker counts auth errors.

Hits: ``result[]: path, sim (0–1), tags``; errors ``{error_code, error_msg}`` (IS.xxxx
from the service, APIGW.xxxx from the gateway: APIGW.0301/0307 auth, APIGW.0308 throttled).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from lensbox.device.config.fallback import HuaweiConfig
from lensbox.device.fallback.base import CloudHit, CloudProvider, clamp01, register, str_tags
from lensbox.device.fallback.credentials import resolve
from lensbox.device.fallback.errors import CloudError, ErrorKind, kind_for_status
from lensbox.device.fallback.transport import HttpResponse, host_header, retry_after

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
AUTH_CODES = ("APIGW.0301", "APIGW.0303", "APIGW.0305", "APIGW.0307")
THROTTLE_CODES = ("APIGW.0308",)


def _enc(value: str) -> str:
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    uri = "/".join(_enc(seg) for seg in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        key, _, value = part.partition("=")
        if key:
            pairs.append((_enc(unquote(key)), _enc(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str, url: str, headers: Mapping[str, str], signed: list[str], body: bytes
) -> str:
    parts = urlsplit(url)
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    canon_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    return "\n".join(
        [
            method.upper(),
            canonical_uri(parts.path or "/"),
            canonical_query(parts.query),
            canon_headers,
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def sign_request(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    ak: str,
    sk: str,
    now: float | None = None,
) -> dict[str, str]:
    """Headers with X-Sdk-Date, Host and Authorization added (APIG SDK-HMAC-SHA256)."""
    out = dict(headers)
    out["X-Sdk-Date"] = time.strftime(DATE_FORMAT, time.gmtime(now))
    out["Host"] = host_header(url)
    signed = sorted(k.lower() for k in out)
    creq = canonical_request(method, url, out, signed, body)
    to_sign = "\n".join(
        [ALGORITHM, out["X-Sdk-Date"], hashlib.sha256(creq.encode("utf-8")).hexdigest()]
    )
    sig = hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return out


@register("huawei")
class HuaweiProvider(CloudProvider):
    name = "huawei"
    max_image_bytes = 10 * 1024 * 1024  # AK/SK signing covers bodies up to 12 MB (base64)

    config: HuaweiConfig

    @property
    def url(self) -> str:
        c = self.config
        project, instance = quote(c.project_id, safe=""), quote(c.instance_name, safe="")
        return f"{c.base_url}/v1/{project}/{instance}/image/search"

    def check_ready(self) -> None:
        self.headers(b"")

    def headers(self, body: bytes) -> dict[str, str]:
        base = {"Content-Type": "application/json"}
        if self.config.auth == "token":
            token = resolve(self.config.token, self.name, "token", self.environ)
            self._known = [token.reveal()]
            return {**base, "X-Auth-Token": token.reveal()}
        ak = resolve(self.config.access_key, self.name, "access_key", self.environ)
        sk = resolve(self.config.secret_key, self.name, "secret_key", self.environ)
        self._known = [sk.reveal()]
        return sign_request("POST", self.url, base, body, ak.reveal(), sk.reveal())

    def search(self, image: bytes, top_k: int, deadline: float) -> list[CloudHit]:
        self.check_image(image)
        payload = {
            "file": base64.b64encode(image).decode("ascii"),
            "limit": max(1, min(100, top_k)),
            "offset": 0,
        }
        body = json.dumps(payload).encode("utf-8")
        resp, doc = self.post_json(self.url, body, self.headers(body), deadline)
        if not isinstance(doc, dict) or "error_code" in doc:
            raise self.error(resp, doc if isinstance(doc, dict) else {})
        return self.hits(doc, top_k)

    def error(self, resp: HttpResponse, doc: dict[str, Any]) -> CloudError:
        code = str(doc.get("error_code") or "")
        kind: ErrorKind = kind_for_status(resp.status)
        if code.startswith(AUTH_CODES):
            kind = "auth"
        elif code.startswith(THROTTLE_CODES):
            kind = "throttled"
        elif resp.status == 200:
            kind = "bad_response"
        return CloudError(
            kind,
            self.name,
            self.clean(doc.get("error_msg") or "request failed"),
            http_status=resp.status,
            code=code or None,
            retry_after=retry_after(resp.headers),
        )

    def hits(self, doc: dict[str, Any], top_k: int) -> list[CloudHit]:
        result = doc.get("result", [])
        if not isinstance(result, list):
            raise CloudError("bad_response", self.name, "'result' is not a list", 200)
        out = []
        for rank, r in enumerate(result[:top_k]):
            score = clamp01(r.get("sim")) if isinstance(r, dict) else None
            if not isinstance(r, dict) or not r.get("path") or score is None:
                raise CloudError("bad_response", self.name, "result without path or sim", 200)
            path = str(r["path"])
            is_url = path.startswith(("http://", "https://"))
            out.append(
                CloudHit(
                    id=path,
                    score=score,
                    rank=rank,
                    source=self.hit_source(),
                    url=path if is_url else None,
                    host=urlsplit(path).hostname if is_url else None,
                    tags=str_tags(r.get("tags")),
                    raw=r,
                )
            )
        return out
