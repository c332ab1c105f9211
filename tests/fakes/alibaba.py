"""Fake Alibaba Cloud Image Search: RPC ``SearchImageByPic`` over POST.

Verifies the RPC signature v1 server-side, independently of the client's code: every
parameter from the query string and the form body except ``Signature``, RFC 3986-encoded,
sorted, ``POST&%2F&<enc(canonical)>``, HMAC-SHA1 with ``secret + "&"``, base64.  Also
checks the common parameters (AccessKeyId known, SignatureMethod, SignatureVersion,
unique SignatureNonce, Timestamp within 15 minutes, Format, Version).  Replies copy the
documentation's success example; errors use POP's shape with the documented codes and
HTTP statuses (403 DeniedRequest is the documented throttling error).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from calendar import timegm
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from tests.fakes.base import FakeProvider, Recorded, Reply

HOST_ID = "imagesearch.cn-shanghai.aliyuncs.com"
MAX_PIC = 4 * 1024 * 1024


def _pe(s: str) -> str:
    # Alibaba's documented rule, written out: encode, then fix the three special cases.
    return quote(s, safe="").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


def expected_signature(params: dict[str, str], secret: str) -> str:
    canonical = "&".join(_pe(k) + "=" + _pe(params[k]) for k in sorted(params))
    to_sign = "POST&" + _pe("/") + "&" + _pe(canonical)
    digest = hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class FakeAlibaba(FakeProvider):
    name = "alibaba"

    def __init__(
        self, *, key_id: str, secret: str, instance: str, version: str = "2020-12-14", **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.key_id = key_id
        self.secret = secret
        self.instance = instance
        self.version = version
        self.nonces: set[str] = set()

    def error(self, status: int, code: str, message: str) -> Reply:
        return status, {
            "RequestId": self.request_id(),
            "HostId": HOST_ID,
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=ImageSearch",
        }

    @staticmethod
    def params(rec: Recorded) -> dict[str, str]:
        query = parse_qsl(urlsplit(rec.path).query, keep_blank_values=True)
        form = parse_qsl(rec.body.decode("ascii"), keep_blank_values=True)
        return dict(query + form)

    def authenticate(self, rec: Recorded) -> Reply | None:
        p = self.params(rec)
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
            if not p.get(name):
                return self.error(400, "MissingParameter", f"{name} is mandatory.")
        if p["AccessKeyId"] != self.key_id:
            return self.error(
                404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
            )
        if p.get("SignatureMethod") != "HMAC-SHA1" or p.get("SignatureVersion") != "1.0":
            return self.error(400, "IncompleteSignature", "The request signature does not conform.")
        try:
            ts = timegm(time.strptime(p["Timestamp"], "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            return self.error(400, "InvalidTimeStamp.Format", "Specified time stamp is invalid.")
        if abs(time.time() - ts) > 15 * 60:
            return self.error(400, "InvalidTimeStamp.Expired", "Specified time stamp expired.")
        presented = p.pop("Signature")
        want = expected_signature(p, self.secret)
        if not hmac.compare_digest(presented, want):
            # The real service appends the string it signed (it holds no secret).
            canonical = "&".join(_pe(k) + "=" + _pe(p[k]) for k in sorted(p))
            msg = (
                "Specified signature is not matched with our calculation. server string to "
                f"sign is:POST&%2F&{_pe(canonical)[:120]}"
            )
            return self.error(400, "SignatureDoesNotMatch", msg)
        if p["SignatureNonce"] in self.nonces:
            return self.error(400, "SignatureNonceUsed", "Specified signature nonce was used.")
        self.nonces.add(p["SignatureNonce"])
        return None

    def handle(self, rec: Recorded) -> Reply:
        p = self.params(rec)
        if p.get("Format") != "JSON" or p.get("Version") != self.version:
            return self.error(400, "BadRequest", "The request has invalid parameters.")
        if p.get("Action") != "SearchImageByPic":
            return self.error(
                500, "UnsupportedOperationType", "The specified action is not supported."
            )
        if p.get("InstanceName") != self.instance:
            return self.error(400, "InvalidInstance", "The specified instance name is invalid.")
        try:
            pic = base64.b64decode(p.get("PicContent", ""), validate=True)
        except (binascii.Error, ValueError):
            pic = b""
        if not pic or len(pic) > MAX_PIC:
            return self.error(400, "UnsupportedPicFormat", "The specified image format is invalid.")
        num = int(p.get("Num", "10"))
        if num > 100:
            return self.error(
                400,
                "OverflowMaxReturnNum",
                "The specified number of results for each request exceeds the maximum of 100.",
            )
        start = int(p.get("Start", "0"))
        return 200, self.success(self.catalog[start : start + num])

    def success(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        auctions = [
            {
                "CategoryId": 88888888,
                "PicName": f"{c['id']}.jpg",
                "SortExprValues": "5.37633353624177e+24;0",
                "Score": c["score"],
                "ProductId": c["id"],
                "CustomContent": c["title"],
                "IntAttr": c["width"],
                "StrAttr": c["tags"]["color"],
            }
            for c in items
        ]
        return {
            "Auctions": auctions,
            "Head": {"DocsReturn": len(auctions), "DocsFound": len(self.catalog), "SearchTime": 95},
            "PicInfo": {
                "CategoryId": 88888888,
                "Region": "111,697,113,774",
                "AllCategories": [{"Name": "Other", "Id": 88888888}],
                "MultiRegion": [{"Region": "111,697,113,774"}],
            },
            "RequestId": self.request_id(),
            "Msg": "success",
            "Success": True,
            "Code": 0,
        }

    def error_reply(self, mode: str, rec: Recorded) -> Reply:
        if mode == "401":
            return self.error(
                403, "NoPermission", "You are not authorized to perform this operation."
            )
        if mode == "429":
            return self.error(
                403, "DeniedRequest", "Your request was denied due to instance flow control."
            )
        return self.error(500, "UnknownException", "An internal server error occurred.")
