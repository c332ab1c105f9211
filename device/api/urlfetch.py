"""Fetch a query image by URL without turning the box into an open proxy.

Only hosts on the configured allow-list are contacted, every redirect is checked against
the same list before it is followed, the body is read with a byte cap and an overall
deadline, and environment proxies are ignored (the allow-list must describe the real peer).
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from lensbox.device.api.errors import ApiError

CHUNK = 64 * 1024


@dataclass(frozen=True)
class UrlPolicy:
    allow_hosts: tuple[str, ...]
    timeout_s: float = 5.0
    max_redirects: int = 3

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


def fetch(url: str, policy: UrlPolicy, max_bytes: int) -> bytes:
    """The body at ``url`` (at most ``max_bytes``) or an :class:`ApiError`."""
    if not isinstance(url, str) or len(url) > 2048:
        raise ApiError("bad_param", "the image URL must be a string of at most 2048 characters")
    if not policy.allow_hosts:
        raise ApiError("url_not_allowed", "this server does not fetch image URLs (no allow-list)")
    if not policy.allows(url):
        host = urlsplit(url).hostname or url
        raise ApiError("url_not_allowed", f"{host!r} is not on the server's url allow-list")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _CheckedRedirect(policy))
    request = urllib.request.Request(url, headers={"User-Agent": "lensbox", "Accept": "image/*"})
    deadline = time.monotonic() + policy.timeout_s
    try:
        with opener.open(request, timeout=policy.timeout_s) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ApiError(
                    "too_many_bytes", f"the image at the URL is {length} bytes, over {max_bytes}"
                )
            return _read_capped(resp, max_bytes, deadline, policy.timeout_s)
    except ApiError:
        raise
    except urllib.error.HTTPError as exc:
        raise ApiError("url_fetch_failed", f"the image URL answered HTTP {exc.code}") from exc
    except (socket.timeout, TimeoutError) as exc:
        raise ApiError(
            "url_timeout", f"the image URL did not answer in {policy.timeout_s:g} s"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise ApiError(
                "url_timeout", f"the image URL did not answer in {policy.timeout_s:g} s"
            ) from exc
        raise ApiError("url_fetch_failed", f"cannot fetch the image URL ({reason})") from exc


def _read_capped(resp, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise ApiError("url_timeout", f"the image URL took longer than {timeout_s:g} s")
        chunk = resp.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("too_many_bytes", f"the image at the URL is over {max_bytes} bytes")
        chunks.append(chunk)
