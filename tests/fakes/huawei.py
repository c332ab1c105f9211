"""Fake Huawei Cloud ImageSearch: ``POST /v1/{project_id}/{instance_name}/image/search``.

Authenticates like the API gateway: ``X-Auth-Token`` equal to the known token, or an
``SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...`` Authorization header whose
signature it recomputes from the request as received (method, path with each segment
encoded and a trailing "/", sorted query, the signed headers' received values, sha256 of
the received body, X-Sdk-Date within 15 minutes) with the known secret key.  Failures
answer 401 ``APIGW.0301``; throttling 429 ``APIGW.0308`` (API gateway error codes);
service errors ``{"error_code": "IS.xxxx", "error_msg"}`` as the ImageSearch page shows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from calendar import timegm
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from tests.fakes.base import FakeProvider, Recorded, Reply


def apigw_error(code: str, msg: str) -> dict[str, Any]:
    return {"error_msg": msg, "error_code": code, "request_id": FakeProvider.request_id()}


def verify_aksk(rec: Recorded, keys: dict[str, str]) -> str | None:
    """None if the request's SDK-HMAC-SHA256 signature is right, else why not."""
    auth = rec.headers.get("Authorization", "")
    algo, _, rest = auth.partition(" ")
    if algo != "SDK-HMAC-SHA256":
        return "Authorization not found"
    fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
    ak, signed, sig = fields.get("Access"), fields.get("SignedHeaders"), fields.get("Signature")
    if not ak or not signed or not sig or ak not in keys:
        return "verify aksk signature fail"
    date = next((v for k, v in rec.headers.items() if k.lower() == "x-sdk-date"), "")
    try:
        when = timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return "verify aksk signature fail"
    if abs(time.time() - when) > 15 * 60:
        return "verify aksk signature fail"
    received = {k.lower(): v.strip() for k, v in rec.headers.items()}
    names = signed.split(";")
    if "x-sdk-date" not in names or any(n not in received for n in names):
        return "verify aksk signature fail"
    parts = urlsplit(rec.path)
    segments = [quote(unquote(s), safe="~") for s in parts.path.split("/")]
    uri = "/".join(segments)
    if not uri.endswith("/"):
        uri += "/"
    query = sorted(
        (quote(k, safe="~"), quote(v, safe="~"))
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    canonical = (
        "POST\n"
        + uri
        + "\n"
        + "&".join(f"{k}={v}" for k, v in query)
        + "\n"
        + "".join(f"{n}:{received[n]}\n" for n in names)
        + "\n"
        + signed
        + "\n"
        + hashlib.sha256(rec.body).hexdigest()
    )
    to_sign = f"SDK-HMAC-SHA256\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    want = hmac.new(keys[ak].encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(want, sig) else "verify aksk signature fail"


class FakeHuawei(FakeProvider):
    name = "huawei"

    def __init__(
        self, *, project: str, instance: str, ak: str, sk: str, token: str, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.project = project
        self.instance = instance
        self.keys = {ak: sk}
        self.token = token

    @property
    def path(self) -> str:
        return f"/v1/{self.project}/{self.instance}/image/search"

    def authenticate(self, rec: Recorded) -> Reply | None:
        token = rec.headers.get("X-Auth-Token")
        if token is not None:
            if hmac.compare_digest(token, self.token):
                return None
            why = "token invalid" + (f" ({token})" if self.echo_secret else "")
        else:
            why = verify_aksk(rec, self.keys)
            if why is None:
                return None
        return 401, apigw_error("APIGW.0301", f"Incorrect IAM authentication information: {why}")

    def handle(self, rec: Recorded) -> Reply:
        if urlsplit(rec.path).path != self.path:
            return 404, apigw_error(
                "APIGW.0101", "The API does not exist or has not been published in the environment"
            )
        try:
            body = json.loads(rec.body)
        except ValueError:
            return 400, {"error_code": "IS.0002", "error_msg": "Invalid request body."}
        if not body.get("file") and not body.get("path"):
            return 400, {"error_code": "IS.0003", "error_msg": "Arguments of path can not be null."}
        if body.get("file"):
            try:
                base64.b64decode(body["file"], validate=True)
            except (binascii.Error, ValueError):
                return 400, {"error_code": "IS.0003", "error_msg": "Arguments of file is invalid."}
        limit = int(body.get("limit", 10))
        offset = int(body.get("offset", 0))
        if not 1 <= limit <= 100 or offset < 0:
            return 400, {"error_code": "IS.0003", "error_msg": "Arguments of limit is invalid."}
        items = self.catalog[offset : offset + limit]
        return 200, {
            "count": len(self.catalog),
            "result": [{"path": c["url"], "sim": c["score"], "tags": c["tags"]} for c in items],
        }

    def error_reply(self, mode: str, rec: Recorded) -> Reply:
        if mode == "401":
            return 401, apigw_error(
                "APIGW.0301", "Incorrect IAM authentication information: verify aksk signature fail"
            )
        if mode == "429":
            return 429, apigw_error(
                "APIGW.0308",
                "The throttling threshold has been reached: policy user over ratelimit",
            )
        return 500, {"error_code": "IS.0010", "error_msg": "Internal service error."}
