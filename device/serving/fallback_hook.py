"""The cloud fallback in the search path: the local catalog first, a cloud provider when
the local answer is weak (or the query names an instance the box does not hold).

One :class:`CloudFallback` per app, built only when ``fallback.enabled`` (nothing leaves
the box otherwise). For each search it

1. runs the local search over the first ``offset + top_k`` hits (the cloud has no paging
   of its own, so the merged list is paged here);
2. asks :meth:`FallbackRouter.should_ask` with the best local score; when yes, sends the
   query image (never anything else) with a deadline of ``fallback.timeout_s`` — the
   router never raises and returns by the deadline;
3. merges local and cloud hits per ``fallback.policy`` into native hit dicts, each with
   ``source`` = ``local`` or ``cloud:<provider>``;
4. on a provider failure answers the caller's contract error (``on_error = "error"``:
   throttled -> its throttling error, timeout -> ``cloud_timeout``, anything else ->
   ``cloud_unavailable``) or the local answer (``on_error = "local_only"``).

The cloud is not asked for a search by id (no image bytes: the id names an embedding),
a concept-only search, or a search with catalog filters (category, tags, expression,
concepts, distinct product): a provider cannot honour them. A ``site`` filter is applied
to cloud hits by host. What happened is reported in :class:`FallbackReport` (the
``X-Lensbox-Fallback`` header, native ``fallback``) and counted in /metrics.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from lensbox.device.api.errors import ApiError
from lensbox.device.config.fallback import FallbackConfig
from lensbox.device.fallback import (
    CloudError,
    FallbackOutcome,
    FallbackRouter,
)
from lensbox.device.search.engine import Hit
from lensbox.device.serving.filters import host_matches
from lensbox.device.serving.metrics import Metrics
from lensbox.device.serving.query import Filters, SearchOutcome, SearchQuery
from lensbox.device.serving.service import SearchService

LOCAL = "local"
# Providers page at most ~100 results; deeper pages of a merged answer are local only.
CLOUD_MAX_TOP_K = 100


@dataclass
class FallbackReport:
    """What the fallback did for one search.

    ``state``: ``answered`` (a provider answered now), ``cached`` (its answer came from
    the fallback cache), ``failed`` (no provider answered; ``reason`` is the error kind),
    ``not_asked`` (``reason``: local_strong, no_image, filters, no_provider).
    """

    state: str
    reason: str | None = None
    provider: str | None = None
    hits: int = 0  # cloud hits in the answered page
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fallback_header(report: dict[str, Any]) -> str:
    """``answered; provider=yandex; hits=5`` / ``not_asked; reason=local_strong``."""
    parts = [str(report["state"])]
    for key in ("provider", "reason"):
        if report.get(key):
            parts.append(f"{key}={report[key]}")
    if report["state"] in ("answered", "cached"):
        parts.append(f"hits={report['hits']}")
    return "; ".join(parts)


def catalog_filters(filters: Filters) -> bool:
    """Filters over catalog columns a cloud answer cannot honour."""
    return bool(
        filters.category_id is not None
        or filters.tags
        or filters.expression is not None
        or filters.concepts
        or filters.distinct_product
    )


def cloud_api_error(err: CloudError) -> ApiError:
    """A provider failure as the common API error the caller's contract renders. The text
    names the provider and the kind; ``err.message`` is already redacted by the provider
    client and never built from request headers."""
    status = f" (HTTP {err.http_status})" if err.http_status else ""
    code = f" [{err.code}]" if err.code else ""
    text = f"cloud fallback to {err.provider} failed: {err.kind}{status}{code}: {err.message}"
    if err.kind == "throttled":
        exc = ApiError("throttled", text)
        exc.retry_after = max(1, math.ceil(err.retry_after or 1))
        return exc
    return ApiError("cloud_timeout" if err.kind == "timeout" else "cloud_unavailable", text)


class CloudFallback:
    """Local search + cloud fallback for every contract (see module doc)."""

    def __init__(
        self,
        config: FallbackConfig,
        service: SearchService,
        metrics: Metrics,
        router: FallbackRouter | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.metrics = metrics
        self.router = router if router is not None else FallbackRouter(config)

    def status(self) -> dict[str, Any]:
        """For /healthz: switches, breakers, cache size (never credentials)."""
        return self.router.status()

    # -- one search --------------------------------------------------------------------
    def run(self, query: SearchQuery) -> SearchOutcome:
        started = time.perf_counter()
        window = query.offset + query.top_k
        try:
            local = self.service.run(dataclasses.replace(query, offset=0, top_k=window))
        except ApiError as exc:
            if exc.code != "unknown_instance":
                raise
            return self._cloud_only(query, exc, started)
        best = max((h.score for h in local.hits), default=None)
        calibrated = self._calibrated(local.instance)
        reason = self._not_asked(query, best, local.image, calibrated)
        if reason is not None:
            self.metrics.fallback_not_asked(reason)
            return self._answer(
                local,
                local.hits,  # ranked by the service
                local.total,
                query,
                started,
                FallbackReport("not_asked", reason),
            )
        assert local.image is not None
        cloud = self._ask(local.image, window, best, query, calibrated)
        if self.router.should_fail(cloud):
            assert cloud.error is not None
            raise cloud_api_error(cloud.error)
        merged = self.router.merge(local.hits, cloud, window, calibrated)
        n_cloud = sum(1 for h in merged if h.source != LOCAL)
        total = n_cloud + (local.total if len(merged) > n_cloud else 0)
        return self._answer(
            local, merged, total, query, started, self._report(cloud, merged, query)
        )

    def _calibrated(self, instance: str) -> float | None:
        """The "match" threshold the builder measured for this instance's bundle."""
        try:
            calibration = self.service.instance(instance).catalog.engine.calibration
        except (ApiError, AttributeError):
            return None
        return calibration.match if calibration.source == "bundle" else None

    def _not_asked(
        self,
        query: SearchQuery,
        best: float | None,
        image: bytes | None,
        calibrated: float | None = None,
    ):
        if not self.router.should_ask(best, calibrated):
            return "local_strong" if self.router.active_providers() else "no_provider"
        if image is None:
            return "no_image"
        if catalog_filters(query.filters):
            return "filters"
        return None

    def _ask(
        self,
        image: bytes,
        window: int,
        best: float | None,
        query: SearchQuery,
        calibrated: float | None = None,
    ) -> FallbackOutcome:
        deadline = time.monotonic() + self.config.timeout_s
        cloud = self.router.search(
            image, min(window, CLOUD_MAX_TOP_K), best, deadline=deadline, calibrated=calibrated
        )
        if cloud.skipped:
            self.metrics.fallback_not_asked(cloud.skipped)
        else:
            answered = cloud.provider if cloud.error is None else None
            self.metrics.fallback_asked(
                answered, cloud.from_cache, [(e.provider, e.kind) for e in cloud.errors]
            )
        if query.filters.site and cloud.hits:
            site = query.filters.site
            cloud.hits = [
                h
                for h in cloud.hits
                if host_matches({"host": h.host, "page_url": h.page_url}, site)
            ]
        return cloud

    def _report(
        self, cloud: FallbackOutcome, merged: list[Hit], query: SearchQuery
    ) -> FallbackReport:
        elapsed = round(cloud.elapsed * 1e3, 1)
        if cloud.skipped:
            return FallbackReport("not_asked", cloud.skipped, elapsed_ms=elapsed)
        if cloud.error is not None:
            return FallbackReport(
                "failed", cloud.error.kind, cloud.error.provider, elapsed_ms=elapsed
            )
        page = merged[query.offset : query.offset + query.top_k]
        used = sum(1 for h in page if h.source != LOCAL)
        return FallbackReport(
            "cached" if cloud.from_cache else "answered", None, cloud.provider, used, elapsed
        )

    def _answer(
        self,
        local: SearchOutcome,
        hits: list[Hit],
        total: int,
        query: SearchQuery,
        started: float,
        report: FallbackReport,
    ) -> SearchOutcome:
        timings = dict(local.timings)
        if report.state != "not_asked" or report.elapsed_ms:
            timings["cloud_ms"] = report.elapsed_ms
        timings["total_ms"] = (time.perf_counter() - started) * 1e3
        return dataclasses.replace(
            local,
            hits=hits[query.offset : query.offset + query.top_k],
            total=total,
            timings=timings,
            fallback=report.to_dict(),
        )

    # -- an instance this box does not hold --------------------------------------------
    def _cloud_only(self, query: SearchQuery, missing: ApiError, started: float) -> SearchOutcome:
        """Answer from the cloud alone; without a usable cloud answer the local answer
        stands, and that is the contract's unknown-instance error."""
        if not self.router.should_ask(None):
            raise missing
        if catalog_filters(query.filters):
            self.metrics.fallback_not_asked("filters")
            raise missing
        got = self.service.query_image(query)
        if got is None:
            self.metrics.fallback_not_asked("no_image")
            raise missing
        data, size = got
        window = query.offset + query.top_k
        cloud = self._ask(data, window, None, query)
        if cloud.error is not None:
            if self.router.should_fail(cloud):
                raise cloud_api_error(cloud.error)
            raise ApiError(
                missing.code,
                f"{missing.message}; the cloud fallback failed too "
                f"({cloud.error.provider}: {cloud.error.kind})",
                missing.param,
            )
        if cloud.skipped:
            raise missing
        merged = self.router.merge([], cloud, window)
        report = self._report(cloud, merged, query)
        elapsed = (time.perf_counter() - started) * 1e3
        return SearchOutcome(
            instance=query.instance or "default",
            query_id=None,
            hits=merged[query.offset : window],
            total=len(merged),
            query=None,
            region=None,
            subjects=[],
            image_size=size,
            cached=False,
            timings={"search_ms": 0.0, "cloud_ms": report.elapsed_ms, "total_ms": elapsed},
            image=data,
            fallback=report.to_dict(),
        )
