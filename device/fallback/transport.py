"""One POST with a hard deadline, on the standard library only (the device has no requests).

Every socket operation gets ``timeout = time left``, re-armed before each read, so a
server that drips bytes cannot hold the call past its deadline.  Network failures are
typed on the spot: refused / unresolvable / unreachable is ``offline`` (fail fast, never
retried), a reset or short read is ``unavailable``.  Error messages never quote request
headers (http.client's own header errors do, so they are replaced, not wrapped).
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from lensbox.device.fallback.errors import CloudError

OFFLINE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)
CHUNK = 64 * 1024


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def classify_exception(exc: BaseException, provider: str) -> CloudError:
    """Map a transport exception onto a CloudError without quoting it (it may hold headers)."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, socket.gaierror):
        return CloudError("offline", provider, "cannot resolve the provider's host name")
    if isinstance(exc, ConnectionRefusedError):
        return CloudError("offline", provider, "connection refused")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return CloudError("timeout", provider, "no answer before the deadline")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CloudError("unavailable", provider, "TLS certificate check failed", retryable=False)
    if isinstance(exc, ssl.SSLError):
        return CloudError("unavailable", provider, "TLS error")
    if isinstance(exc, (http.client.HTTPException, ConnectionError)):
        return CloudError("unavailable", provider, f"connection dropped ({type(exc).__name__})")
    if isinstance(exc, OSError):
        if exc.errno in OFFLINE_ERRNOS:
            return CloudError("offline", provider, f"network unreachable ({exc.strerror})")
        return CloudError("unavailable", provider, f"network error ({type(exc).__name__})")
    if isinstance(exc, ValueError):
        return CloudError("misconfigured", provider, "invalid request header or URL")
    return CloudError("bad_response", provider, f"unexpected client error ({type(exc).__name__})")


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("bad url")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        ctx = ssl.create_default_context()
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ctx
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    return conn, path, parts.netloc


def host_header(url: str) -> str:
    """The Host value http.client sends for this URL (signers must sign exactly it)."""
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def _read_body(
    conn: http.client.HTTPConnection,
    resp: http.client.HTTPResponse,
    deadline: float,
    max_bytes: int,
    provider: str,
) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CloudError("timeout", provider, "reply still arriving at the deadline")
        if conn.sock is not None:
            conn.sock.settimeout(left)
        chunk = resp.read1(CHUNK)
        if not chunk:
            if resp.length:  # EOF before Content-Length bytes: read1 does not raise for it
                raise CloudError(
                    "unavailable", provider, "connection dropped mid-reply", resp.status
                )
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise CloudError(
                "bad_response", provider, f"reply larger than {max_bytes} bytes", resp.status
            )
        chunks.append(chunk)


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    deadline: float,
    provider: str,
    *,
    max_bytes: int = 8 << 20,
    attempt_timeout: float | None = None,
) -> HttpResponse:
    """POST ``body``; return the reply whatever its status.  Raises CloudError only."""
    end = deadline
    if attempt_timeout is not None:
        end = min(end, time.monotonic() + attempt_timeout)
    left = end - time.monotonic()
    if left <= 0:
        raise CloudError("timeout", provider, "deadline passed before the request was sent")
    conn = None
    try:
        conn, path, _ = _connection(url, left)
        conn.request("POST", path, body=body, headers=dict(headers))
        if conn.sock is not None:
            conn.sock.settimeout(max(0.001, end - time.monotonic()))
        resp = conn.getresponse()
        data = _read_body(conn, resp, end, max_bytes, provider)
        resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        return HttpResponse(resp.status, resp_headers, data)
    except Exception as exc:  # every failure becomes a typed CloudError
        raise classify_exception(exc, provider) from None
    finally:
        if conn is not None:
            conn.close()


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a numeric Retry-After header (HTTP-date form is ignored)."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
