"""Credentials: read when a query is sent (so a token file refreshed by cron is picked up),
wrapped so an accidental ``f"{secret}"`` or ``repr`` prints stars, never the value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lensbox.device.config.fallback import CredentialSource
from lensbox.device.fallback.errors import CloudError


class Secret:
    """A credential value; only :meth:`reveal` returns it (and only header builders and
    signers call that)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def _clean(raw: str, provider: str, where: str) -> str:
    value = raw.strip()
    if not value:
        raise CloudError("misconfigured", provider, f"credential from {where} is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        # http.client would refuse the header *and quote the value* in its error.
        raise CloudError(
            "misconfigured", provider, f"credential from {where} contains control characters"
        )
    return value


def resolve(
    source: CredentialSource,
    provider: str,
    name: str,
    environ: Mapping[str, str] | None = None,
) -> Secret:
    """The secret named by ``source``: env var first, then file, then inline value.

    Raises CloudError(misconfigured) naming *where* it looked, never what it found.
    """
    env = os.environ if environ is None else environ
    if source.env and env.get(source.env):
        return Secret(_clean(env[source.env], provider, f"env {source.env}"))
    if source.file:
        try:
            text = Path(source.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CloudError(
                "misconfigured",
                provider,
                f"{name}: cannot read file {source.file} ({exc.strerror or type(exc).__name__})",
            ) from None
        return Secret(_clean(text, provider, f"file {source.file}"))
    if source.value is not None:
        return Secret(_clean(source.value.get_secret_value(), provider, "inline value"))
    raise CloudError("misconfigured", provider, f"{name}: not found in {source.describe()}")
