"""Prometheus metrics in the plain-text exposition format (version 0.0.4), hand-written:
a few counters and histograms do not justify a client library on a Pi.

Gauges (catalog sizes, pending changes...) are read when /metrics is scraped, from the
collectors registered with :meth:`Metrics.add_collector`; they hold no state here.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable

log = logging.getLogger("lensbox.api")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.values: dict[Labels, float] = defaultdict(float)

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] += amount

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        out += [f"{self.name}{_labels(k)} {_num(v)}" for k, v in sorted(self.values.items())]
        return out


def render_gauge(name: str, help_text: str, values: Iterable[tuple[Labels, float]]) -> list[str]:
    """One gauge family; ``values`` are (labels, value) pairs."""
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    out += [f"{name}{_labels(k)} {_num(v)}" for k, v in sorted(values)]
    return out


class Histogram:
    def __init__(self, name: str, help_text: str, buckets=LATENCY_BUCKETS) -> None:
        self.name, self.help = name, help_text
        self.buckets = tuple(buckets)
        self.counts: dict[Labels, list[int]] = {}
        self.sums: dict[Labels, float] = defaultdict(float)

    def observe(self, value: float, labels: Labels = ()) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        counts[bisect_left(self.buckets, value)] += 1
        self.sums[labels] += value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, counts in sorted(self.counts.items()):
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), counts):
                running += count
                le = (("le", _num(bound)),)
                out.append(f"{self.name}_bucket{_labels(labels, le)} {running}")
            out.append(f"{self.name}_sum{_labels(labels)} {self.sums[labels]:.6f}")
            out.append(f"{self.name}_count{_labels(labels)} {running}")
        return out


class Metrics:
    """Everything the daemon exports; thread-safe (one lock, updates are tiny)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = Counter("lensbox_http_requests_total", "HTTP requests by route and status")
        self.latency = Histogram(
            "lensbox_http_request_duration_seconds", "HTTP request latency by route"
        )
        self.embeddings = Counter(
            "lensbox_embeddings_total", "query images run through the model, by instance"
        )
        self.embed_time = Histogram("lensbox_embed_seconds", "time to embed one query image")
        self.search_time = Histogram("lensbox_search_seconds", "time to rank and filter")
        self.wait_time = Histogram(
            "lensbox_interpreter_wait_seconds", "time a request waited for a free interpreter"
        )
        self.cache = Counter(
            "lensbox_query_cache_total", "search-by-id lookups by result (hit, item, miss)"
        )
        self.url_fetches = Counter("lensbox_url_fetches_total", "url queries fetched, by result")
        # Cloud fallback (device/serving/fallback_hook.py); all stay empty while it is off.
        self.fb_asked = Counter(
            "lensbox_fallback_asked_total", "searches that consulted the cloud fallback"
        )
        self.fb_answered = Counter(
            "lensbox_fallback_answered_total", "fallback calls a provider answered, by provider"
        )
        self.fb_cache = Counter(
            "lensbox_fallback_cache_hits_total", "fallback answers served from its cache"
        )
        self.fb_errors = Counter(
            "lensbox_fallback_errors_total", "failed provider calls, by provider and kind"
        )
        self.fb_not_asked = Counter(
            "lensbox_fallback_not_asked_total", "searches that did not ask the cloud, by reason"
        )
        self.changes = Counter(
            "lensbox_catalog_changes_total",
            "acknowledged (journaled) catalog changes, by instance and op (put, update, delete)",
        )
        self._collectors: list[Callable[[], list[str]]] = []

    def _all(self):
        return (
            self.requests,
            self.latency,
            self.embeddings,
            self.embed_time,
            self.search_time,
            self.wait_time,
            self.cache,
            self.url_fetches,
            self.fb_asked,
            self.fb_answered,
            self.fb_cache,
            self.fb_errors,
            self.fb_not_asked,
            self.changes,
        )

    def add_collector(self, collect: Callable[[], list[str]]) -> None:
        """``collect()`` returns exposition lines (gauges), called at every scrape."""
        self._collectors.append(collect)

    def changed(self, instance: str, op: str) -> None:
        with self._lock:
            self.changes.inc((("instance", instance), ("op", op)))

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests.inc((("method", method), ("route", route), ("status", str(status))))
            self.latency.observe(seconds, (("route", route),))

    def embedded(self, instance: str, seconds: float, wait: float) -> None:
        with self._lock:
            self.embeddings.inc((("instance", instance),))
            self.embed_time.observe(seconds, (("instance", instance),))
            self.wait_time.observe(wait)

    def searched(self, instance: str, seconds: float) -> None:
        with self._lock:
            self.search_time.observe(seconds, (("instance", instance),))

    def cache_lookup(self, result: str) -> None:
        with self._lock:
            self.cache.inc((("result", result),))

    def url_fetch(self, result: str) -> None:
        with self._lock:
            self.url_fetches.inc((("result", result),))

    def fallback_not_asked(self, reason: str) -> None:
        with self._lock:
            self.fb_not_asked.inc((("reason", reason),))

    def fallback_asked(
        self, provider: str | None, from_cache: bool, errors: list[tuple[str, str]]
    ) -> None:
        """One consulted fallback: ``provider`` answered (None: nobody did), ``errors`` are
        (provider, kind) of every failed call on the way."""
        with self._lock:
            self.fb_asked.inc()
            if provider is not None:
                self.fb_answered.inc((("provider", provider),))
                if from_cache:
                    self.fb_cache.inc((("provider", provider),))
            for name, kind in errors:
                self.fb_errors.inc((("kind", kind), ("provider", name)))

    def render(self) -> str:
        with self._lock:
            lines = [line for metric in self._all() for line in metric.render()]
        for collect in self._collectors:
            try:
                lines += collect()
            except Exception:  # a scrape must not fail because one gauge did
                log.exception("metrics collector %r failed", collect)
        return "\n".join(lines) + "\n"
