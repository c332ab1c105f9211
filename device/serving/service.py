"""The one search path behind every contract: image in, hits out.

Steps for each query image: get the bytes (upload, base64, URL, or nothing at all for an
id the server already knows), check them against the contract's limits from the header
alone (decompression-bomb guard), decode, embed on a leased interpreter (region crop, or
the device's own subject detection), then rank, filter and page.

The catalog comes from the instance registry (instances.py): under `lensbox serve` the
bundle manager's current live catalog. :meth:`SearchService.instance` takes it once per
HTTP request (memoised on ``flask.g``), so everything one request does (search, item
look-ups, rendering) sees the same catalog even if a hot swap happens meanwhile. The query
cache keeps *embeddings* only (never results), keyed by the bundle's descriptor, so a
cached query searches the catalog as it is now: added items show up, deleted ones do not.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import g, has_request_context
from PIL import Image

from lensbox.device.api.errors import ApiError
from lensbox.device.api.limits import decode_base64
from lensbox.device.embedding.embedder import Concept
from lensbox.device.embedding.subject import Box
from lensbox.device.imaging.decode import (
    DecodedImage,
    ImageError,
    ImageInfo,
    decode_reduced,
    min_scale,
    probe_image,
)
from lensbox.device.imaging.frames import box_to_decoded, pipeline_sides, query_to_full
from lensbox.device.search.engine import Hit, QueryEmbedding
from lensbox.device.serving import urlfetch
from lensbox.device.serving.filters import build_predicate, concept_score
from lensbox.device.serving.instances import Instance
from lensbox.device.serving.interpreters import InterpreterSlots
from lensbox.device.serving.metrics import Metrics
from lensbox.device.serving.query import ImageLimits, ImageSource, SearchOutcome, SearchQuery
from lensbox.device.serving.query_cache import QueryCache

EXIF_ORIENTATION = 0x0112
# A subject box covering this much of the image is the image: no second model run.
WHOLE_IMAGE = 0.9


@dataclass(frozen=True)
class PreparedQuery:
    """A query image reduced to what ranking needs; what the query cache keeps."""

    query_id: str
    embedding: QueryEmbedding
    region: Box | None  # area searched: the given region or the found subject
    subjects: list[Box]  # subjects found on the whole image
    image_size: tuple[int, int]


@dataclass
class _Prepared:
    query: PreparedQuery
    cached: bool
    timings: dict[str, float]
    data: bytes | None = None  # the image bytes (None for a search by id)


def query_id_for(data: bytes, region: Box | None, crop: bool) -> str:
    """Content hash of the query: the same photo searched the same way has the same id."""
    digest = hashlib.sha256(data)
    if region is not None:
        digest.update(f"|region={region.x},{region.y},{region.width},{region.height}".encode())
    elif crop:
        digest.update(b"|crop")
    return digest.hexdigest()[:32]


class SearchService:
    def __init__(
        self,
        instances: Any,
        slots: InterpreterSlots,
        metrics: Metrics,
        cache_size: int = 256,
        url_policy: urlfetch.UrlPolicy | None = None,
        max_pixels: int = 40_000_000,
    ) -> None:
        self.instances = instances
        self.slots = slots
        self.metrics = metrics
        self.cache: QueryCache[PreparedQuery] = QueryCache(cache_size)
        self.url_policy = url_policy or urlfetch.UrlPolicy(())
        self.max_pixels = max_pixels
        self._categories: dict[str, tuple[tuple, list[int]]] = {}
        self._categories_lock = threading.Lock()
        self._refreshing: set[str] = set()

    # -- instances ------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Instance names serving now (a single bundle also answers to ``default``)."""
        return self.instances.names()

    def find(self, name: str | None) -> Instance | None:
        """The instance, taken once per HTTP request (later calls get the same object)."""
        key = name or "default"
        memo = g.setdefault("lensbox_instances", {}) if has_request_context() else None
        if memo is not None and key in memo:
            return memo[key]
        found = self.instances.get(key)
        if memo is not None and found is not None:
            memo[key] = found
        return found

    def instance(self, name: str | None) -> Instance:
        found = self.find(name)
        if found is None:
            key = name or "default"
            have = ", ".join(self.names()) or "no instance loaded yet"
            if key in self.instances.configured():
                raise ApiError("not_ready", f"instance {key!r} is not loaded (see /readyz)")
            raise ApiError("unknown_instance", f"no instance named {key!r}; this server has {have}")
        return found

    def categories(self, inst: Instance) -> list[int]:
        """Distinct category ids in the catalog (Alibaba's ``AllCategories``).

        Computed once; after the catalog changed the previous list is answered while a
        background thread recomputes it (a full scan of a large catalog must not hold up
        a search after every AddImage)."""
        version = inst.version()
        with self._categories_lock:
            cached = self._categories.get(inst.name)
            if cached is not None:
                if cached[0] != version and inst.name not in self._refreshing:
                    self._refreshing.add(inst.name)
                    threading.Thread(
                        target=self._refresh_categories,
                        args=(inst,),
                        name="lensbox-categories",
                        daemon=True,
                    ).start()
                return cached[1]
        return self._refresh_categories(inst)

    def _refresh_categories(self, inst: Instance) -> list[int]:
        version = inst.version()
        try:
            found = {it["category_id"] for _, it in inst.catalog.all_items()}
            cats = sorted(c for c in found if c is not None)
            with self._categories_lock:
                self._categories[inst.name] = (version, cats)
            return cats
        finally:
            with self._categories_lock:
                self._refreshing.discard(inst.name)

    # -- search ---------------------------------------------------------------------------
    def run(self, query: SearchQuery) -> SearchOutcome:
        started = time.perf_counter()
        inst = self.instance(query.instance)
        if not query.sources:
            if not query.filters.concepts:
                raise ApiError("missing_image", "no query image was given")
            return self._concept_search(inst, query, started)
        prepared = [self._prepare(inst, src, query) for src in query.sources]
        vectors = np.vstack([p.query.embedding.vectors for p in prepared])
        t0 = time.perf_counter()
        # Keypoints verify one query image; a multi-image query ranks by its descriptors.
        local = prepared[0].query.embedding.local if len(prepared) == 1 else None
        hits, total = self._rank(inst, vectors, query, local)
        search_s = time.perf_counter() - t0
        self.metrics.searched(inst.name, search_s)
        timings = _sum_timings(p.timings for p in prepared)
        timings["search_ms"] = search_s * 1e3
        timings["total_ms"] = (time.perf_counter() - started) * 1e3
        first = prepared[0].query
        return SearchOutcome(
            instance=inst.name,
            query_id=first.query_id,
            hits=ranked(hits),
            total=total,
            query=first.embedding,
            region=first.region,
            subjects=first.subjects,
            image_size=first.image_size,
            cached=all(p.cached for p in prepared),
            timings=timings,
            image=next((p.data for p in prepared if p.data), None),
        )

    def _rank(self, inst: Instance, vectors: np.ndarray, query: SearchQuery, local=None):
        predicate = build_predicate(query.filters)
        catalog = inst.catalog
        if not query.filters.distinct_product:
            return catalog.search_vectors(
                vectors, query.top_k, query.offset, predicate, local=local, verify=query.verify
            )
        wanted = query.offset + query.top_k
        fetch = max(3 * wanted, 50)
        while True:
            hits, total = catalog.search_vectors(
                vectors, fetch, 0, predicate, local=local, verify=query.verify
            )
            unique = distinct_products(hits)
            exhausted = fetch >= total
            if len(unique) >= wanted or exhausted:
                break
            fetch = min(total, fetch * 4)
        return unique[query.offset : wanted], len(unique)

    def _concept_search(self, inst: Instance, query: SearchQuery, started: float) -> SearchOutcome:
        """Concept ranks alone: every item carrying the concepts, best concept value first."""
        predicate = build_predicate(query.filters)
        terms = query.filters.concepts
        scored = [
            Hit(row, item["id"], round(min(1.0, concept_score(item, terms)), 4), item)
            for row, item in inst.catalog.all_items()
            if predicate is None or predicate(item)
        ]
        scored.sort(key=lambda h: (-h.score, h.row))
        if query.filters.distinct_product:
            scored = distinct_products(scored)
        page = scored[query.offset : query.offset + query.top_k]
        elapsed = (time.perf_counter() - started) * 1e3
        return SearchOutcome(
            instance=inst.name,
            query_id=None,
            hits=ranked(page),
            total=len(scored),
            query=None,
            region=None,
            subjects=[],
            image_size=None,
            cached=False,
            timings={"embed_ms": 0.0, "search_ms": elapsed, "total_ms": elapsed},
        )

    # -- one query image ------------------------------------------------------------------
    def _prepare(self, inst: Instance, source: ImageSource, query: SearchQuery) -> _Prepared:
        timings: dict[str, float] = {"decode_ms": 0.0, "embed_ms": 0.0}
        if source.kind == "id":
            return _Prepared(self._by_id(inst, source.text), True, timings)
        data = self.image_bytes(source, query.limits, timings)
        query_id = query_id_for(data, query.region, query.crop)
        hit = self.cache.get(inst.cache_key, query_id)
        if hit is not None:
            self.metrics.cache_lookup("hit")
            return _Prepared(hit, True, timings, data)
        t0 = time.perf_counter()
        decoded = self._decode(data, query, _sides(inst), query.region)
        timings["decode_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        prepared = self._embed(inst, decoded, data, query, query_id)
        timings["embed_ms"] = (time.perf_counter() - t0) * 1e3
        self.cache.put(inst.cache_key, query_id, prepared)
        return _Prepared(prepared, False, timings, data)

    def query_image(self, query: SearchQuery) -> tuple[bytes, tuple[int, int]] | None:
        """The first query image's bytes and (width, height), checked against the
        contract's limits from the header alone; None when it is given by id (or there is
        no image). For answers that need no local search (a cloud-only answer)."""
        if not query.sources or query.sources[0].kind == "id":
            return None
        data = self.image_bytes(query.sources[0], query.limits)
        info = self.check_image(data, query.limits)
        return data, (info.width, info.height)

    def image_bytes(
        self, source: ImageSource, limits: ImageLimits, timings: dict | None = None
    ) -> bytes:
        """The bytes of an upload / base64 text / allowed URL, within ``limits.max_bytes``."""
        timings = {} if timings is None else timings
        max_bytes = limits.max_bytes
        if source.kind == "base64":
            return decode_base64(source.text, max_bytes)
        if source.kind == "url":
            t0 = time.perf_counter()
            try:
                data = urlfetch.fetch(source.text, self.url_policy, max_bytes)
            except ApiError as exc:
                self.metrics.url_fetch(exc.code)
                raise
            self.metrics.url_fetch("ok")
            timings["fetch_ms"] = (time.perf_counter() - t0) * 1e3
            return data
        if not source.data:
            raise ApiError("empty_image", "the image is empty (0 bytes)")
        if len(source.data) > max_bytes:
            raise ApiError(
                "too_many_bytes",
                f"the image is {len(source.data)} bytes, over the limit of {max_bytes}",
            )
        return source.data

    def _decode(
        self,
        data: bytes,
        query: SearchQuery,
        sides: tuple[int, int],
        region: Box | None = None,
        check: bool = True,
    ) -> DecodedImage:
        """Decode at the smallest scale that keeps ``sides`` (long, short) on the whole image
        and on ``region`` (full-resolution pixels): the pixels the catalog's photos were
        decoded to by the builder, a fraction of a large photo's decode time."""
        if check:
            self.check_image(data, query.limits)
        try:
            return decode_reduced(
                data,
                query.limits.decode_limits(self.max_pixels),
                long_side=sides[0],
                short_side=sides[1],
                region=(region.width, region.height) if region is not None else None,
            )
        except ImageError as exc:
            raise ApiError.from_image_error(exc) from exc

    def check_image(self, data: bytes, limits: ImageLimits) -> ImageInfo:
        """Header-only checks against a contract's limits (format, size, rotation flag):
        no pixel is decoded. For query images and for photos added to the catalog."""
        decode_limits = limits.decode_limits(self.max_pixels)
        try:
            info = probe_image(data, decode_limits)
            fmt = "JPEG" if info.format == "MPO" else info.format
            if fmt not in limits.formats and info.format not in limits.formats:
                allowed = ", ".join(sorted(limits.formats - {"MPO"}))
                raise ApiError(
                    "unsupported_format", f"{info.format} images are not accepted here ({allowed})"
                )
            if limits.reject_rotated and _exif_orientation(data) not in (None, 1):
                raise ApiError(
                    "incorrect_orientation",
                    "the image carries an EXIF rotation flag; rotate the pixels and drop the flag",
                )
            return info
        except ImageError as exc:
            raise ApiError.from_image_error(exc) from exc

    def _embed(
        self,
        inst: Instance,
        decoded: DecodedImage,
        data: bytes,
        query: SearchQuery,
        query_id: str,
    ) -> PreparedQuery:
        """Embed the query; every box and size in the answer is in full-resolution pixels,
        whatever scale it was decoded at."""
        width, height = decoded.size
        region = query.region
        if region is not None:
            clipped = region.clip(width, height)
            if clipped.width < 2 or clipped.height < 2:
                raise ApiError(
                    "bad_region",
                    f"the region {_box_text(region)} is outside the {width}x{height} image",
                )
            decoded = self._enough(inst, decoded, data, query, clipped)
            emb = self._model_full(inst, decoded, clipped)
            subjects = [
                Box(b.x + clipped.x, b.y + clipped.y, b.width, b.height) for b in emb.subjects
            ]
            return PreparedQuery(query_id, emb, clipped, subjects, (width, height))
        emb = self._model_full(inst, decoded, None)
        subjects = list(emb.subjects)
        if not query.crop or not subjects:
            return PreparedQuery(query_id, emb, None, subjects, (width, height))
        subject = subjects[0]
        if subject.area >= WHOLE_IMAGE * width * height:
            return PreparedQuery(query_id, emb, subject, subjects, (width, height))
        decoded = self._enough(inst, decoded, data, query, subject)
        return PreparedQuery(
            query_id, self._model_full(inst, decoded, subject), subject, subjects, (width, height)
        )

    def _enough(
        self, inst: Instance, decoded: DecodedImage, data: bytes, query: SearchQuery, box: Box
    ) -> DecodedImage:
        """``decoded``, or the photo decoded again at a larger scale when cropping ``box``
        from it would leave fewer pixels than the whole image keeps (a small subject, or a
        region partly outside the image)."""
        sides = _sides(inst)
        if min_scale(decoded.size, sides, (box.width, box.height)) <= min(decoded.scale):
            return decoded
        return self._decode(data, query, sides, box, check=False)

    def _model_full(
        self, inst: Instance, decoded: DecodedImage, region: Box | None
    ) -> QueryEmbedding:
        """:meth:`_model` on the decoded pixels, its boxes, keypoints and size mapped back to
        full-resolution pixels (``region`` is given and returned in those)."""
        if not decoded.reduced:
            return self._model(inst, decoded.rgb, region)
        h, w = decoded.rgb.shape[:2]
        inner = box_to_decoded(region, decoded.scale, (w, h)) if region is not None else None
        return query_to_full(self._model(inst, decoded.rgb, inner), decoded, region)

    def _model(self, inst: Instance, rgb: np.ndarray, region: Box | None) -> QueryEmbedding:
        with self.slots.lease() as (slot, waited):
            t0 = time.perf_counter()
            emb = inst.embed(slot, rgb, region)
            elapsed = time.perf_counter() - t0
        self.metrics.embedded(inst.name, elapsed, waited)
        return emb

    def _by_id(self, inst: Instance, query_id: str) -> PreparedQuery:
        if not isinstance(query_id, str) or not query_id.strip():
            raise ApiError("bad_param", "the id must be a non-empty string")
        hit = self.cache.get(inst.cache_key, query_id)
        if hit is not None:
            self.metrics.cache_lookup("hit")
            return hit
        found = inst.catalog.item_by_id(query_id)
        if found is None:
            self.metrics.cache_lookup("miss")
            raise ApiError(
                "not_found",
                f"no query or catalog item with id {query_id!r} (query ids are kept for the "
                f"last {self.cache.capacity} searches)",
            )
        self.metrics.cache_lookup("item")
        _row, item = found
        vectors = inst.catalog.item_vectors(query_id)
        if vectors is None or not len(vectors):
            raise ApiError("not_found", f"catalog item {query_id!r} has no stored vectors")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
        concepts = [
            Concept(str(c.get("id")), str(c.get("name")), float(c.get("value", 0)))
            for c in item.get("concepts") or []
        ]
        size = (int(item.get("width") or 0), int(item.get("height") or 0))
        emb = QueryEmbedding(vectors, concepts, [], size, None)
        return PreparedQuery(query_id, emb, None, [], size)


def ranked(hits: list[Hit]) -> list[Hit]:
    """``hits`` with ``rank`` set to their place in the answer (0-based)."""
    for rank, hit in enumerate(hits):
        hit.rank = rank
    return hits


def distinct_products(hits: list[Hit]) -> list[Hit]:
    """Keep the best hit of each product_id (items without one are their own product)."""
    seen: set[str] = set()
    out = []
    for hit in hits:
        key = hit.item.get("product_id") or f"\0{hit.id}"
        if key not in seen:
            seen.add(key)
            out.append(hit)
    return out


def _exif_orientation(data: bytes) -> int | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.getexif().get(EXIF_ORIENTATION)
    except Exception:  # unreadable EXIF is not a rotation flag
        return None


def _sides(inst: Instance) -> tuple[int, int]:
    """(long, short) sides a query keeps when decoded at a reduced scale: from this bundle's
    local-feature settings, as the builder decoded the catalog's photos."""
    local = inst.engine.local
    return pipeline_sides(local.settings if local is not None else None)


def _box_text(box: Box) -> str:
    return f"x={box.x},y={box.y},w={box.width},h={box.height}"


def _sum_timings(parts) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + value
    return out
