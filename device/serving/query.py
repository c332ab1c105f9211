"""The common query every contract parses into, and the outcome each one renders.

A contract never searches by itself: it turns its provider's request into a
:class:`SearchQuery`, the service answers with a :class:`SearchOutcome`, and the contract
renders that in its provider's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lensbox.device.embedding.subject import Box
from lensbox.device.imaging.decode import SUPPORTED_FORMATS, DecodeLimits
from lensbox.device.search.engine import Hit, QueryEmbedding

SourceKind = Literal["bytes", "base64", "url", "id"]
FamilyMode = Literal["none", "moderate", "strict"]


@dataclass(frozen=True)
class ImageLimits:
    """A contract's own bounds on a query image (bytes, formats, pixel sides)."""

    max_bytes: int
    formats: frozenset[str] = SUPPORTED_FORMATS
    min_side: int = 16
    max_side: int = 16384
    max_pixels: int = 40_000_000
    reject_rotated: bool = False  # Alibaba: "the image cannot contain rotation settings"

    def decode_limits(self, server_max_pixels: int) -> DecodeLimits:
        return DecodeLimits(
            max_bytes=self.max_bytes,
            max_pixels=min(self.max_pixels, server_max_pixels),
            min_side=self.min_side,
            max_side=self.max_side,
        )


@dataclass(frozen=True)
class ImageSource:
    """Where the query image comes from: raw bytes, base64 text, a URL, or a known id."""

    kind: SourceKind
    data: bytes = b""
    text: str = ""  # base64 text, URL or id

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageSource:
        return cls("bytes", data=data)


@dataclass(frozen=True)
class ConceptTerm:
    """A concept to require (``include``) or to exclude, matched on id or name."""

    id: str | None
    name: str | None
    include: bool = True


@dataclass
class Filters:
    """Restrictions applied before paging; all optional."""

    category_id: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    site: str | None = None  # host (Yandex site), a sub-domain matches too
    family_mode: FamilyMode = "none"
    expression: Callable[[Mapping[str, Any]], bool] | None = None  # compiled Alibaba Filter
    concepts: list[ConceptTerm] = field(default_factory=list)
    distinct_product: bool = False

    @property
    def empty(self) -> bool:
        return (
            self.category_id is None
            and not self.tags
            and not self.site
            and self.family_mode == "none"
            and self.expression is None
            and not self.concepts
        )


@dataclass
class SearchQuery:
    """One search, contract-independent.

    ``sources`` is empty for a concept-only search (Clarifai concept ranks); several
    sources (Clarifai image ranks) are searched together, an item scoring its best match.
    """

    instance: str | None
    sources: list[ImageSource]
    limits: ImageLimits
    top_k: int = 10
    offset: int = 0
    region: Box | None = None
    crop: bool = False  # search the main subject found on the device
    filters: Filters = field(default_factory=Filters)
    verify: int | None = None  # candidates verification checks first (None: [search] verify)


@dataclass
class SearchOutcome:
    """Hits and everything a contract may report about how they were found.

    ``hits`` are :class:`Hit` objects from the engine to the contract; once
    ``ApiContext.answer`` has run each carries its ``rank``, and a cloud fallback's
    (no catalog row) its ``source`` (see lensbox.device.fallback.merge).
    """

    instance: str
    query_id: str | None
    hits: list[Hit]
    total: int
    query: QueryEmbedding | None
    region: Box | None  # the area actually searched (given region or found subject)
    subjects: list[Box]
    image_size: tuple[int, int] | None  # (width, height) of the query image
    cached: bool
    timings: dict[str, float] = field(default_factory=dict)
    # The first query image's bytes (None for a search by id): what a cloud fallback sends.
    image: bytes | None = field(default=None, repr=False)
    # What the cloud fallback did (fallback_hook.FallbackReport.to_dict()); None when off.
    fallback: dict[str, Any] | None = None
