"""API keys and request signatures, checked the same way whatever style the contract uses.

Keys are required unless the server is bound to loopback (see ``ServerConfig``); each
contract only knows how to *find* the credential in its own request style.

Two providers' SDKs do not send a key but *sign* the request with an AccessKey pair
(``server.access_keys``: AccessKeyId -> secret). The signatures are verified here, with the
same canonicalisation the official SDKs use:

* Alibaba ``ACS3-HMAC-SHA256`` (the default of ``alibabacloud-tea-openapi``): the
  ``Authorization`` header over the method, path, sorted query, the signed headers and the
  body's SHA-256 (``x-acs-content-sha256``, checked against the body itself); freshness from
  ``x-acs-date``, replay protection from ``x-acs-signature-nonce``.
* Alibaba RPC ``Signature`` (HMAC-SHA1, ``SignatureVersion=1.0``, the SDK's ``v2``
  algorithm): over every query and form parameter; ``Timestamp`` and ``SignatureNonce``.
* Huawei ``SDK-HMAC-SHA256`` (``huaweicloudsdkcore``'s AK/SK signer): the
  ``Authorization`` header over method, path (with a trailing ``/``), sorted query, signed
  headers and the body's SHA-256; freshness from ``X-Sdk-Date``.

A verified request carries a :class:`Verified` credential, which the :class:`Authenticator`
accepts. A bad one raises :class:`SignatureError` whose ``reason`` each contract renders
with its provider's documented code (Alibaba ``SignatureDoesNotMatch``,
``InvalidTimeStamp.Expired``, ``SignatureNonceUsed``, ``InvalidAccessKeyId.NotFound``;
Huawei ``APIGW.0301``).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Literal
from urllib.parse import quote, quote_plus, unquote

from lensbox.device.api.errors import ApiError

SignatureReason = Literal["signature", "expired", "nonce", "unknown_key", "incomplete"]
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def bearer(header: str | None, *schemes: str) -> str | None:
    """The token of an ``Authorization: <scheme> <token>`` header, for any of ``schemes``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() in {s.lower() for s in schemes} and token.strip():
        return token.strip()
    return None


class Verified(str):
    """An AccessKeyId whose request signature was checked against its configured secret."""


class SignatureError(ApiError):
    """A signed request that does not verify; ``reason`` picks the provider's code."""

    def __init__(self, reason: SignatureReason, message: str) -> None:
        code = "unauthenticated" if reason in ("incomplete",) else "forbidden"
        super().__init__(code, message)
        self.reason: SignatureReason = reason


class Authenticator:
    def __init__(self, keys: tuple[str, ...], required: bool) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self.required = required

    def check(self, credential: str | None) -> None:
        """Raise ``unauthenticated`` (no credential) or ``forbidden`` (a wrong one)."""
        if not self.required or isinstance(credential, Verified):
            return
        if not credential:
            raise ApiError("unauthenticated", "an API key is required")
        given = credential.encode()
        # compare against every key so timing says nothing about which one is close
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise ApiError("forbidden", "the API key is not valid")


class NonceCache:
    """Nonces seen within the freshness window (bounded: the oldest go first)."""

    def __init__(self, ttl_s: float, capacity: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, key_id: str, nonce: str, now: float) -> bool:
        """True the first time (key_id, nonce) is seen; False for a replay."""
        entry = f"{key_id}\0{nonce}"
        with self._lock:
            while self._seen:
                oldest, at = next(iter(self._seen.items()))
                if at > now - self.ttl_s and len(self._seen) < self.capacity:
                    break
                del self._seen[oldest]
            if entry in self._seen:
                return False
            self._seen[entry] = now
            return True


class Signatures:
    """Verifies the providers' request signatures against ``server.access_keys``."""

    def __init__(
        self,
        secrets: Mapping[str, str],
        required: bool,
        max_skew_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secrets = dict(secrets)
        self.required = required
        self.max_skew_s = max_skew_s
        self.clock = clock
        self.nonces = NonceCache(2 * max_skew_s)

    # -- shared --------------------------------------------------------------------
    def _secret(self, key_id: str) -> str | None:
        """The secret of ``key_id``; None when the key is unknown but need not be verified
        (auth off: a loopback box accepts any SDK's made-up key pair)."""
        secret = self.secrets.get(key_id)
        if secret is None and (self.required or self.secrets):
            raise SignatureError("unknown_key", f"the AccessKeyId {key_id[:64]!r} is not known")
        return secret

    def _fresh(self, when: float | None, what: str) -> None:
        if when is None:
            raise SignatureError("incomplete", f"{what} is missing or malformed")
        if abs(self.clock() - when) > self.max_skew_s:
            raise SignatureError(
                "expired", f"{what} is more than {int(self.max_skew_s)} s away from the box's clock"
            )

    def _once(self, key_id: str, nonce: str | None) -> None:
        if not nonce:
            raise SignatureError("incomplete", "the signature nonce is missing")
        if not self.nonces.first_use(key_id, nonce, self.clock()):
            raise SignatureError("nonce", "the signature nonce was used already")

    @staticmethod
    def _match(expected: str, given: str) -> None:
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise SignatureError("signature", "the request signature does not match")

    # -- Alibaba ACS3-HMAC-SHA256 ----------------------------------------------------
    def acs3(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> str:
        """The AccessKeyId of a valid ``ACS3-HMAC-SHA256`` request (``headers`` lower-cased)."""
        auth = headers.get("authorization", "")
        scheme, _, rest = auth.partition(" ")
        if scheme != "ACS3-HMAC-SHA256":
            raise SignatureError("incomplete", f"unsupported signature scheme {scheme[:32]!r}")
        fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part.strip())
        key_id = fields.get("Credential", "")
        signed = fields.get("SignedHeaders", "")
        given = fields.get("Signature", "")
        if not key_id or not signed or not given:
            raise SignatureError(
                "incomplete", "Authorization needs Credential, SignedHeaders, Signature"
            )
        names = signed.split(";")
        if "x-acs-date" not in names or "x-acs-signature-nonce" not in names:
            raise SignatureError(
                "incomplete", "x-acs-date and x-acs-signature-nonce must be signed"
            )
        secret = self._secret(key_id)
        if secret is None:
            return key_id
        payload = hashlib.sha256(body).hexdigest()
        if headers.get("x-acs-content-sha256", payload) != payload:
            raise SignatureError("signature", "x-acs-content-sha256 does not match the body")
        canonical_query = "&".join(
            f"{k}={quote(v, safe='~')}" for k, v in sorted(query.items()) if v is not None
        )
        canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in names)
        canonical = (
            f"{method}\n{path or '/'}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload}"
        )
        to_sign = f"ACS3-HMAC-SHA256\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        self._match(expected, given)
        self._fresh(_iso_time(headers.get("x-acs-date")), "x-acs-date")
        self._once(key_id, headers.get("x-acs-signature-nonce"))
        return Verified(key_id)

    # -- Alibaba RPC Signature (HMAC-SHA1) ---------------------------------------------
    def rpc(self, method: str, params: Mapping[str, str]) -> str:
        """The AccessKeyId of a valid RPC-signed request (query and form parameters, with
        their original names)."""
        key_id = params.get("AccessKeyId") or ""
        given = params.get("Signature") or ""
        if not key_id or not given:
            raise SignatureError("incomplete", "AccessKeyId and Signature are required")
        if params.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
            raise SignatureError("incomplete", "SignatureMethod must be HMAC-SHA1")
        secret = self._secret(key_id)
        if secret is None:
            return key_id
        canonical = "&".join(
            f"{quote(k, safe='~')}={quote(v, safe='~')}"
            for k, v in sorted(params.items())
            if k != "Signature" and v is not None
        )
        to_sign = f"{method}&%2F&{quote_plus(canonical, safe='~')}"
        digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
        self._match(base64.b64encode(digest).decode(), given)
        self._fresh(_iso_time(params.get("Timestamp")), "Timestamp")
        self._once(key_id, params.get("SignatureNonce"))
        return Verified(key_id)

    # -- Huawei SDK-HMAC-SHA256 --------------------------------------------------------
    def sdk_hmac(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> str:
        """The AK of a valid ``SDK-HMAC-SHA256`` request (``headers`` lower-cased)."""
        auth = headers.get("authorization", "")
        scheme, _, rest = auth.strip().partition(" ")
        if scheme != "SDK-HMAC-SHA256":
            raise SignatureError("incomplete", f"unsupported signature scheme {scheme[:32]!r}")
        fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part.strip())
        key_id, signed, given = (
            fields.get("Access", ""),
            fields.get("SignedHeaders", ""),
            fields.get("Signature", ""),
        )
        if not key_id or not signed or not given:
            raise SignatureError(
                "incomplete", "Authorization needs Access, SignedHeaders, Signature"
            )
        names = signed.split(";")
        if "x-sdk-date" not in names:
            raise SignatureError("incomplete", "X-Sdk-Date must be signed")
        secret = self._secret(key_id)
        if secret is None:
            return key_id
        payload = headers.get("x-sdk-content-sha256") or (
            hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        )
        if payload == "UNSIGNED-PAYLOAD":
            # the SDK leaves only non-JSON bodies unsigned; every Huawei route here takes JSON
            if headers.get("content-type", "").startswith("application/json"):
                raise SignatureError("signature", "a JSON body must be signed")
        elif body and payload != hashlib.sha256(body).hexdigest():
            raise SignatureError("signature", "X-Sdk-Content-Sha256 does not match the body")
        uri = "/".join(quote(part, safe="~") for part in unquote(path).split("/"))
        if not uri.endswith("/"):
            uri += "/"
        canonical_query = "&".join(
            f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query)
        )
        canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in names)
        canonical = (
            f"{method.upper()}\n{uri}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload}"
        )
        date = headers.get("x-sdk-date", "")
        to_sign = f"SDK-HMAC-SHA256\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        self._match(expected, given)
        self._fresh(_basic_time(date), "X-Sdk-Date")
        return Verified(key_id)


def _iso_time(text: str | None) -> float | None:
    """``2026-01-02T03:04:05Z`` -> epoch seconds."""
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


_BASIC = re.compile(r"^\d{8}T\d{6}Z$")


def _basic_time(text: str | None) -> float | None:
    """``20260102T030405Z`` -> epoch seconds."""
    if not text or not _BASIC.match(text):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None
