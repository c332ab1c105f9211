"""API keys, checked the same way whatever header style the contract uses to carry them.

Keys are required unless the server is bound to loopback (see ``ServerConfig``); each
contract only knows how to *find* the credential in its own request style.
"""

from __future__ import annotations

import hmac

from lensbox.device.api.errors import ApiError


def bearer(header: str | None, *schemes: str) -> str | None:
    """The token of an ``Authorization: <scheme> <token>`` header, for any of ``schemes``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() in {s.lower() for s in schemes} and token.strip():
        return token.strip()
    return None


class Authenticator:
    def __init__(self, keys: tuple[str, ...], required: bool) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self.required = required

    def check(self, credential: str | None) -> None:
        """Raise ``unauthenticated`` (no credential) or ``forbidden`` (a wrong one)."""
        if not self.required:
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
