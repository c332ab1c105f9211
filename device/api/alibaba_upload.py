"""The Alibaba SDK's file uploads (``SearchImageByPicAdvance``, ``AddImageAdvance``), on the box.

Given a file stream, the official SDK does not send ``PicContent`` itself. It asks OpenPlatform
``AuthorizeFileUpload`` (an RPC on ``Config.open_platform_endpoint``) for an OSS PostObject
grant (``AccessKeyId``, ``EncodedPolicy``, ``Signature``, ``ObjectKey``, ``Bucket``,
``Endpoint``), POSTs the file as ``multipart/form-data`` to ``https://{Bucket}.{Endpoint}/``
(HTTPS is hard-coded in the SDK's ``_post_ossobject``), then calls the action with
``PicContent = http://{Bucket}.{Endpoint}/{ObjectKey}``.

The box plays both parts: ``AuthorizeFileUpload`` grants an upload to *itself* (the host
the client reached, split at its first dot into ``Bucket`` and ``Endpoint`` with the HTTPS
port, so ``Bucket.Endpoint`` is the box again: use an IP address or a dotted name), the
HTTPS listener (``server.https_port``) takes the PostObject form (policy signature, expiry,
key and size checked as OSS does, errors as OSS's XML ``<Error><Code>``), and a
``PicContent`` URL naming a granted key is read from memory. Uploads are kept in memory
(bounded in count and bytes, for ``TTL_S``) and used once; nothing is written to disk.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from flask import Request, Response

from lensbox.device.api.auth import Verified
from lensbox.device.api.errors import ApiError

UPLOAD_KEY_ID = "LENSBOXUPLOAD"
PREFIX = "lensbox-upload/"
TTL_S = 600.0
MAX_FILES = 64
MAX_TOTAL_BYTES = 64 * 1024 * 1024


class OssError(ApiError):
    """An upload refused as OSS refuses one: an XML ``<Error>`` with OSS's code."""

    def __init__(self, status: int, oss_code: str, message: str) -> None:
        super().__init__("forbidden" if status == 403 else "bad_request", message)
        self.http_status = status
        self.oss_code = oss_code

    def response(self) -> Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{escape(self.oss_code)}</Code><Message>{escape(self.message)}</Message>"
            f"<RequestId>{uuid.uuid4().hex.upper()}</RequestId><HostId>lensbox</HostId></Error>"
        )
        return Response(body, status=self.http_status, mimetype="application/xml")


class Uploads:
    """Grants, receives and hands out uploaded pictures."""

    def __init__(self, https_port: int | None, max_bytes: int) -> None:
        self.https_port = https_port
        self.max_bytes = max_bytes
        self._secret = secrets.token_bytes(32)
        self._files: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    # -- AuthorizeFileUpload ----------------------------------------------------------
    def authorize(self, host: str, request_id: str) -> dict[str, Any]:
        if self.https_port is None:
            raise ApiError(
                "unsupported_action",
                "file uploads need the HTTPS listener: set server.https_port, "
                "server.https_cert and server.https_key",
            )
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        bucket, dot, rest = name.partition(".")
        if not dot or not bucket or not rest:
            raise ApiError(
                "bad_request",
                f"reach the box by an IP address or a dotted host name to upload files "
                f"(Bucket.Endpoint must name the box again), not {name[:64]!r}",
            )
        key = f"{PREFIX}{uuid.uuid4().hex}"
        expires = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + TTL_S))
        policy = {
            "expiration": expires,
            "conditions": [["eq", "$key", key], ["content-length-range", 0, self.max_bytes]],
        }
        encoded = base64.b64encode(json.dumps(policy).encode()).decode()
        return {
            "RequestId": request_id,
            "AccessKeyId": UPLOAD_KEY_ID,
            "EncodedPolicy": encoded,
            "Signature": self._sign(encoded),
            "ObjectKey": key,
            "Bucket": bucket,
            "Endpoint": f"{rest}:{self.https_port}",
            "UseAccelerate": False,
        }

    def _sign(self, encoded_policy: str) -> str:
        digest = hmac.new(self._secret, encoded_policy.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    # -- PostObject -------------------------------------------------------------------
    @staticmethod
    def is_upload(req: Request) -> bool:
        """A PostObject form (or something trying to be one)."""
        if req.method != "POST" or req.args.get("Action") or req.headers.get("x-acs-action"):
            return False
        if req.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return False
        return "OSSAccessKeyId" in req.form or "policy" in req.form

    def verify(self, req: Request) -> str:
        """The grant's id once the form's policy and signature check out (OssError if not)."""
        if req.mimetype != "multipart/form-data":
            raise OssError(
                400,
                "InvalidArgument",
                "Bucket POST must be of the enclosure-type multipart/form-data.",
            )
        form = req.form
        key_id, policy, signature = (
            form.get("OSSAccessKeyId", ""),
            form.get("policy", ""),
            form.get("Signature", ""),
        )
        if not key_id or not policy or not signature:
            raise OssError(
                400, "InvalidArgument", "OSSAccessKeyId, policy and Signature are required."
            )
        if key_id != UPLOAD_KEY_ID:
            raise OssError(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
            )
        if not hmac.compare_digest(self._sign(policy).encode(), signature.encode()):
            raise OssError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        return Verified(key_id)

    def receive(self, req: Request) -> Response:
        """Store the file of a verified PostObject form; 201 with OSS's XML answer."""
        form = req.form
        try:
            policy = json.loads(base64.b64decode(form.get("policy", ""), validate=True))
            expires = calendar.timegm(time.strptime(policy["expiration"][:19], "%Y-%m-%dT%H:%M:%S"))
            conditions = policy["conditions"]
        except (ValueError, KeyError, TypeError) as exc:
            raise OssError(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from exc
        if expires < time.time():
            raise OssError(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        key = form.get("key", "")
        wanted = next((c[2] for c in conditions if c[:2] == ["eq", "$key"]), None)
        if not key or key != wanted:
            raise OssError(
                403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: key"
            )
        upload = req.files.get("file")
        if upload is None:
            raise OssError(
                400,
                "InvalidArgument",
                "The body of your POST request is not well-formed multipart/form-data: no file.",
            )
        data = upload.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise OssError(
                400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."
            )
        self._put(key, data)
        status = form.get("success_action_status", "204")
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest().upper()  # OSS: an MD5
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse>'
            f"<Bucket>lensbox</Bucket><Location>{escape(req.host_url + key)}</Location>"
            f'<Key>{escape(key)}</Key><ETag>"{etag}"</ETag></PostResponse>'
        )
        code = 201 if status == "201" else 200 if status == "200" else 204
        return Response(body if code != 204 else "", status=code, mimetype="application/xml")

    def _put(self, key: str, data: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            self._files[key] = (now, data)
            total = sum(len(d) for _, d in self._files.values())
            while self._files and (
                len(self._files) > MAX_FILES
                or total > MAX_TOTAL_BYTES
                or next(iter(self._files.values()))[0] < now - TTL_S
            ):
                _old, (_at, gone) = self._files.popitem(last=False)
                total -= len(gone)

    # -- PicContent ---------------------------------------------------------------------
    def take(self, pic_content: str) -> bytes | None:
        """The uploaded bytes a ``PicContent`` URL names (used once); None if it names none."""
        if not pic_content.startswith(("http://", "https://")):
            return None
        key = urlsplit(pic_content).path.lstrip("/")
        if not key.startswith(PREFIX):
            return None
        with self._lock:
            entry = self._files.pop(key, None)
        if entry is None or entry[0] < time.monotonic() - TTL_S:
            raise ApiError("bad_request", "PicContent names an upload this box does not hold")
        return entry[1]
