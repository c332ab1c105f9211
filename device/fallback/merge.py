"""Cloud hits in lensbox's native hit shape, and the two policies for mixing them in.

Every hit is a :class:`~lensbox.device.search.engine.Hit` (what the API renders into any
contract): ``id``, ``score`` 0-1, ``source`` (``local`` | ``cloud:<provider>``),
``score_kind`` (``similarity`` | ``rank``), ``rank`` and ``item`` (catalog item columns).

``item`` has every catalog column (id, source, title, page_url, host, category_id, tags,
int_attrs, str_attrs, product_id, custom_content, adult, concepts, width, height, format,
content_sha256); for a cloud hit ``item["source"]`` is the image URL the provider gave and
columns the provider does not know are None (``adult`` too: unknown, not False).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Literal, cast

from lensbox.device.bundle.format import ITEM_COLUMNS
from lensbox.device.bundle.reader import Item
from lensbox.device.fallback.base import CloudHit
from lensbox.device.search.engine import Hit

LOCAL = "local"
Policy = Literal["cloud_only_when_weak", "local_then_cloud"]
EMPTY_COLLECTIONS = {"tags": dict, "int_attrs": dict, "str_attrs": dict, "concepts": list}


def _blank_item() -> dict[str, Any]:
    item: dict[str, Any] = dict.fromkeys(ITEM_COLUMNS)
    for key, factory in EMPTY_COLLECTIONS.items():
        item[key] = factory()
    return item


def cloud_hit_to_native(hit: CloudHit) -> Hit:
    """One CloudHit as a :class:`Hit` (see module doc)."""
    item = _blank_item()
    item.update(
        id=hit.id,
        source=hit.url,
        title=hit.title,
        page_url=hit.page_url,
        host=hit.host,
        width=hit.width,
        height=hit.height,
        tags=dict(hit.tags),
    )
    item.update({k: v for k, v in hit.extra.items() if k in item})
    return Hit(
        None,
        hit.id,
        float(hit.score),
        cast(Item, item),
        source=hit.source,
        score_kind=hit.score_kind,
        rank=hit.rank,
    )


def local_hit_to_native(hit: Hit, rank: int = 0) -> Hit:
    """A local hit at place ``rank`` of the answer (its ``source`` stays ``local``)."""
    return dataclasses.replace(hit, rank=rank)


def _native(hits: Iterable[Hit | CloudHit], cloud: bool) -> list[Hit]:
    out = []
    for rank, h in enumerate(hits):
        if isinstance(h, CloudHit):
            out.append(cloud_hit_to_native(h))
        elif cloud:
            out.append(h)
        else:
            out.append(local_hit_to_native(h, rank))
    return out


def _keys(hit: Hit) -> set[tuple[str, str]]:
    """Identity of a hit for de-duplication: its id and its image URL."""
    keys = {("id", str(hit.id))}
    url = hit.item.get("source") if isinstance(hit.item, dict) else None
    if url:
        keys.add(("url", str(url)))
    return keys


def _dedupe(hits: Iterable[Hit], seen: set | None = None) -> list[Hit]:
    seen = set() if seen is None else seen
    out = []
    for hit in hits:
        keys = _keys(hit)
        if keys & seen:
            continue
        seen |= keys
        out.append(hit)
    return out


def best_score(hits: Sequence[Hit]) -> float | None:
    scores = [float(h.score) for h in hits]
    return max(scores) if scores else None


def is_weak(best_local: float | None, threshold: float) -> bool:
    """No local answer (or no such instance) is the weakest answer of all."""
    return best_local is None or best_local < threshold


def merge_results(
    local_hits: Sequence[Hit],
    cloud_hits: Sequence[Hit | CloudHit],
    policy: Policy,
    threshold: float,
    top_k: int,
) -> list[Hit]:
    """Combine local and cloud hits into at most ``top_k`` hits, each ranked.

    * ``cloud_only_when_weak``: when the best local score is below ``threshold`` (or there
      are no local hits) and the cloud answered, the cloud hits replace the local ones;
      otherwise the local hits stand alone (a failed or empty cloud call keeps them).
    * ``local_then_cloud``: local hits first, in their order, then cloud hits that are not
      already present (same id or same image URL).
    """
    local = _dedupe(_native(local_hits, cloud=False))
    cloud = _native(cloud_hits, cloud=True)
    if policy == "cloud_only_when_weak":
        if cloud and is_weak(best_score(local), threshold):
            return _dedupe(cloud)[:top_k]
        return local[:top_k]
    if policy == "local_then_cloud":
        seen: set = set()
        ordered = _dedupe(local, seen) + _dedupe(cloud, seen)
        return ordered[:top_k]
    raise ValueError(f"unknown merge policy {policy!r}")
