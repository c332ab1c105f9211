"""The provider interface, the hit every provider returns, and the registry by name.

A provider makes exactly one attempt per :meth:`CloudProvider.search` call and raises
:class:`CloudError` when it fails; retries, circuit breaking, caching and the deadline
guarantee live in :mod:`lensbox.device.fallback.router`, once, for all providers.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from lensbox.device.fallback.credentials import Secret
from lensbox.device.fallback.errors import CloudError, redact
from lensbox.device.fallback.transport import HttpResponse, post

ScoreKind = Literal["similarity", "rank"]


@dataclass
class CloudHit:
    """One result from a cloud provider, in provider-neutral form.

    ``score`` is the provider's 0–1 similarity when it gives one (``score_kind =
    "similarity"``); Yandex gives none, so its score is derived from the rank
    (``score_kind = "rank"``, see :func:`rank_score`) and only orders hits.
    ``extra`` carries item-like fields some providers have (product_id, category_id,
    int_attrs, str_attrs, custom_content, format, concepts).
    """

    id: str
    score: float
    source: str  # "cloud:<provider>"
    rank: int = 0
    score_kind: ScoreKind = "similarity"
    title: str | None = None
    url: str | None = None
    page_url: str | None = None
    host: str | None = None
    width: int | None = None
    height: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def provider(self) -> str:
        return self.source.split(":", 1)[-1]


def rank_score(rank: int, top_k: int) -> float:
    """A 0–1 score for a provider that only ranks: strictly decreasing with rank, never
    1.0 (a rank is not evidence of an exact match): 1 - (rank + 1) / (top_k + 1)."""
    return round(max(0.0, 1.0 - (rank + 1) / (max(top_k, rank + 1) + 1)), 6)


def clamp01(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if v != v:  # NaN
        return None
    return min(1.0, max(0.0, v))


def as_int(value: Any) -> int | None:
    """int64 fields arrive as JSON strings in proto3 JSON ("640"); accept both."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def str_tags(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


class CloudProvider(ABC):
    """Search by image on one cloud service.  Subclasses set ``name``."""

    name: str = ""
    max_image_bytes: int | None = None

    def __init__(
        self,
        config: Any = None,
        *,
        environ: Mapping[str, str] | None = None,
        max_response_bytes: int = 8 << 20,
        attempt_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.environ = environ
        self.max_response_bytes = max_response_bytes
        self.attempt_timeout = attempt_timeout
        # Credential values read for the current call, so errors can be redacted.
        self._known: list[str] = []

    @abstractmethod
    def search(self, image: bytes, top_k: int, deadline: float) -> list[CloudHit]:
        """One attempt; ``deadline`` is absolute ``time.monotonic()``.  Raises CloudError."""

    def _secrets(self) -> list[str]:
        """Every credential value this provider may send, for redaction."""
        return list(self._known)

    def check_ready(self) -> None:
        """Raise CloudError(misconfigured) if a credential cannot be read, so the router
        can tell "nothing was sent" from a failed call; overridden by providers."""
        return None

    def check_image(self, image: bytes) -> None:
        if not image:
            raise CloudError("rejected", self.name, "empty image")
        if self.max_image_bytes is not None and len(image) > self.max_image_bytes:
            raise CloudError(
                "rejected",
                self.name,
                f"image is {len(image)} bytes; the provider accepts at most "
                f"{self.max_image_bytes} (nothing was sent)",
            )

    def parse_json(self, resp: HttpResponse) -> Any:
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CloudError(
                "bad_response",
                self.name,
                f"reply is not JSON ({len(resp.body)} bytes, "
                f"content-type {resp.headers.get('content-type', 'none')})",
                http_status=resp.status,
            ) from None

    def error(self, resp: HttpResponse, doc: dict[str, Any]) -> CloudError:
        """The provider's error reply as a typed CloudError; each provider maps its codes."""
        raise NotImplementedError

    def post_json(
        self, url: str, body: bytes, headers: dict[str, str], deadline: float
    ) -> tuple[HttpResponse, Any]:
        """One POST within ``deadline``; a non-200 reply raises the provider's own error."""
        resp = post(
            url,
            body,
            headers,
            deadline,
            self.name,
            max_bytes=self.max_response_bytes,
            attempt_timeout=self.attempt_timeout,
        )
        if resp.status != 200:
            raise self.error(resp, self.error_doc(resp))
        return resp, self.parse_json(resp)

    @staticmethod
    def error_doc(resp: HttpResponse) -> dict[str, Any]:
        """The JSON error body if there is one; a proxy's HTML 502 page gives {} and the
        error is then typed by HTTP status alone."""
        try:
            doc = json.loads(resp.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def clean(self, text: Any) -> str:
        return redact(str(text), self._secrets())

    def hit_source(self) -> str:
        return f"cloud:{self.name}"


ProviderFactory = Callable[..., CloudProvider]
REGISTRY: dict[str, ProviderFactory] = {}


def register(name: str) -> Callable[[ProviderFactory], ProviderFactory]:
    """Class decorator: make a provider constructible by name from its config section."""

    def deco(factory: ProviderFactory) -> ProviderFactory:
        REGISTRY[name] = factory
        return factory

    return deco


def make_provider(name: str, section: Any, **kwargs: Any) -> CloudProvider:
    """Build the provider ``name`` from its config section (e.g. ``config.yandex``)."""
    # Importing the modules registers the four built-in providers.
    from lensbox.device.fallback import alibaba, clarifai, huawei, yandex  # noqa: F401

    try:
        factory = REGISTRY[name]
    except KeyError:
        raise CloudError("misconfigured", name, f"no provider named {name!r}") from None
    return factory(section, **kwargs)


__all__ = [
    "CloudHit",
    "CloudProvider",
    "Secret",
    "as_int",
    "clamp01",
    "make_provider",
    "rank_score",
    "register",
    "str_tags",
]
