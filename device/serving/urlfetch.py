"""Fetch a query image by URL without turning the box into an open proxy.

Only hosts on the configured allow-list are contacted, every redirect is checked against
the same list before it is followed, environment proxies are ignored (the allow-list must
describe the real peer), the body is read with a byte cap, and the *whole* fetch (connect,
redirects, headers, body) has one deadline: when it passes the sockets are shut down, so
an image host that answers a byte a second cannot hold a worker. At most
``max_concurrent`` fetches run at once (fewer than the server's workers), so slow hosts
can never occupy every worker: the others are refused as ``throttled`` right away.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lensbox.device.api.errors import ApiError

CHUNK = 64 * 1024


@dataclass(frozen=True)
class UrlPolicy:
    allow_hosts: tuple[str, ...]
    timeout_s: float = 5.0
    max_redirects: int = 3
    max_concurrent: int = 3
    _slots: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_slots", threading.BoundedSemaphore(self.max_concurrent))

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        host = parts.hostname.lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        for entry in self.allow_hosts:
            entry = entry.lower().strip()
            if _has_port(entry):
                entry_host, _, entry_port = entry.rpartition(":")
            else:
                entry_host, entry_port = entry, ""
            entry_host = entry_host.strip("[]")
            if entry_port and int(entry_port) != port:
                continue
            if entry_host.startswith("*."):
                if host.endswith(entry_host[1:]):
                    return True
            elif host == entry_host:
                return True
        return False


def _has_port(entry: str) -> bool:
    if entry.count(":") > 1 and not entry.startswith("["):
        return False  # a bare IPv6 address
    head, sep, tail = entry.rpartition(":")
    return bool(sep) and tail.isdigit() and head != ""


class _CheckedRedirect(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an allowed host, and only so many times."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy
        self.count = 0

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.count += 1
        if self.count > self.policy.max_redirects:
            raise ApiError("url_fetch_failed", f"more than {self.policy.max_redirects} redirects")
        if not self.policy.allows(newurl):
            raise ApiError(
                "url_not_allowed",
                f"the image URL redirects to {urlsplit(newurl).hostname or newurl!r}, "
                "which is not on the server's url allow-list",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """One deadline for a whole fetch: at expiry every socket it opened is shut down."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.01, self.at - time.monotonic())

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _DeadlineConnection(http.client.HTTPConnection):
    """Connects within what is left of the deadline; the deadline can shut its socket."""

    def __init__(self, host: str, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        self.timeout = min(self.timeout or self.deadline.remaining(), self.deadline.remaining())
        super().connect()
        self.deadline.register(self.sock)


class _DeadlineHttpsConnection(_DeadlineConnection, http.client.HTTPSConnection):
    """The same over TLS (the TLS socket is the one registered)."""


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPConnection:
        return _DeadlineConnection(host, self.deadline, **kwargs)

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(self._connection, req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPConnection:
        return _DeadlineHttpsConnection(host, self.deadline, **kwargs)

    def https_open(self, req: urllib.request.Request) -> Any:
        # _context: what HTTPSHandler.__init__ made (private, so not in typeshed).
        context = self._context  # type: ignore[attr-defined]
        return self.do_open(self._connection, req, context=context)


def fetch(url: str, policy: UrlPolicy, max_bytes: int) -> bytes:
    """The body at ``url`` (at most ``max_bytes``) or an :class:`ApiError`."""
    if not isinstance(url, str) or len(url) > 2048:
        raise ApiError("bad_param", "the image URL must be a string of at most 2048 characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise ApiError("bad_param", "the image URL must not hold spaces or control characters")
    if not policy.allow_hosts:
        raise ApiError("url_not_allowed", "this server does not fetch image URLs (no allow-list)")
    if not policy.allows(url):
        host = urlsplit(url).hostname or url
        raise ApiError("url_not_allowed", f"{host!r} is not on the server's url allow-list")
    if not policy._slots.acquire(blocking=False):
        err = ApiError(
            "throttled",
            f"{policy.max_concurrent} image URL fetches are already in progress; retry shortly "
            "or send the image itself",
        )
        err.retry_after = 1
        raise err
    try:
        return _fetch(url, policy, max_bytes)
    finally:
        policy._slots.release()


def _fetch(url: str, policy: UrlPolicy, max_bytes: int) -> bytes:
    deadline = _Deadline(policy.timeout_s)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _CheckedRedirect(policy),
        _HttpHandler(deadline),
        _HttpsHandler(deadline),
    )
    request = urllib.request.Request(url, headers={"User-Agent": "lensbox", "Accept": "image/*"})
    late = ApiError("url_timeout", f"the image URL did not answer in {policy.timeout_s:g} s")
    try:
        with opener.open(request, timeout=policy.timeout_s) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ApiError(
                    "too_many_bytes", f"the image at the URL is {length} bytes, over {max_bytes}"
                )
            data = _read_capped(resp, max_bytes, deadline.at, policy.timeout_s)
            if deadline.expired:  # the shutdown may read as a clean end of the body
                raise late
            return data
    except ApiError:
        raise
    except Exception as exc:
        if deadline.expired:
            raise late from exc
        if isinstance(exc, urllib.error.HTTPError):
            raise ApiError("url_fetch_failed", f"the image URL answered HTTP {exc.code}") from exc
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, (socket.timeout, TimeoutError)) or isinstance(
            reason, (socket.timeout, TimeoutError)
        ):
            raise late from exc
        if isinstance(exc, (urllib.error.URLError, OSError, ValueError, http.client.HTTPException)):
            raise ApiError("url_fetch_failed", f"cannot fetch the image URL ({reason})") from exc
        raise
    finally:
        deadline.cancel()


def _read_capped(resp, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise ApiError("url_timeout", f"the image URL took longer than {timeout_s:g} s")
        chunk = resp.read1(CHUNK) if hasattr(resp, "read1") else resp.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("too_many_bytes", f"the image at the URL is over {max_bytes} bytes")
        chunks.append(chunk)
