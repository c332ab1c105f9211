"""[search]: which bundle(s) to load and how hard to search them."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from lensbox.device.config.base import Section
from lensbox.device.embedding.views import ALL_VIEWS

if TYPE_CHECKING:
    from lensbox.device.features.rerank import RerankSettings


class BundleBudget(Section):
    """``[search.bundles.<name>]``: one bundle's verification budget, where it differs
    from ``[search]`` (a catalog of flat posters verifies cheaply; 3D objects rarely do)."""

    verify: int | None = Field(None, ge=0, le=100, description="as [search] verify")
    verify_more: int | None = Field(None, ge=0, le=100, description="as [search] verify_more")

    def apply(self, rerank: RerankSettings) -> RerankSettings:
        """``rerank`` with this bundle's budget."""
        if self.verify is not None:
            rerank = replace(rerank, verify=self.verify)
        if self.verify_more is not None:
            rerank = replace(rerank, verify_more=self.verify_more)
        return rerank


class SearchConfig(Section):
    threads: int = Field(2, ge=1, le=16, description="TFLite/XNNPACK threads per interpreter")
    runtime: Literal["auto", "ai-edge-litert", "tflite-runtime"] = "auto"
    query_views: tuple[str, ...] = ("full", "center", "subject")
    candidates: int | None = Field(
        None,
        ge=1,
        le=10000,
        description="Annoy candidates for the query's centre crop, re-ranked exactly; each other "
        "view gets 1/20 (unset: by catalog size)",
    )
    search_k: int | None = Field(
        None,
        ge=-1,
        description="Annoy search_k for the centre crop, 1/20 of it for each other view "
        "(-1: trees x candidates for every view; unset: by catalog size)",
    )
    exact_below: int = Field(200_000, ge=0, description="exact scan below this many vectors")
    exact_cache_mb: int = Field(
        0, ge=0, description="float32 copy for exact scans (0: score the int8 vectors in blocks)"
    )
    verify: int = Field(
        20,
        ge=0,
        le=100,
        description="most shortlisted items checked by geometric verification per query "
        "(the cost budget: ~5-10 ms each; 0: rank by the global descriptor and visual words off)",
    )
    verify_more: int = Field(
        10,
        ge=0,
        le=100,
        description="when none of the first `verify` items verified well, up to this many "
        "more are checked, the visual-word channel's first (0: the `verify` budget only)",
    )
    visual_words: bool = Field(True, description="the visual-word channel beside the global one")
    confident: float = Field(
        0.6,
        ge=0,
        le=2,
        description="the cascade: a global top hit at least this similar and `margin` ahead "
        "of the next is answered without verification (above 1: always verify)",
    )
    margin: float = Field(0.1, ge=0, le=2, description="see `confident`")
    full_first: bool = Field(
        True,
        description="the cascade's first stage: search the full frame alone first and stop "
        "there when `confident`/`margin` hold (one model run); false: every query embeds "
        "all `query_views`",
    )
    other_view_weight: float = Field(
        0.3,
        gt=0,
        le=1,
        description="query views other than `center` count this much and the centre crop "
        "the rest (the camera is aimed at the item; the full frame also sees what is around "
        "it); 1: every view on its own",
    )

    bundles: dict[str, BundleBudget] = Field(
        default_factory=dict,
        description="per bundle (instance name): its own verification budget",
    )

    @field_validator("query_views")
    @classmethod
    def _views(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v not in ALL_VIEWS]
        if bad or not value:
            raise ValueError(f"unknown views {bad}; choose from {list(ALL_VIEWS)}")
        return value

    def settings(self):
        from lensbox.device.features.rerank import RerankSettings
        from lensbox.device.search.engine import SearchSettings

        return SearchSettings(
            self.query_views,
            self.candidates,
            self.search_k,
            self.exact_below,
            self.exact_cache_mb,
            RerankSettings(
                verify=self.verify,
                verify_more=self.verify_more,
                words=self.visual_words,
                confident=self.confident,
                margin=self.margin,
            ),
            other_view_weight=self.other_view_weight,
            full_first=self.full_first,
        )
