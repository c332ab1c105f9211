"""Turn :class:`Filters` into one predicate over item dicts, and score concept-only queries.

Family mode follows Yandex: MODERATE and STRICT both hide items whose catalog row says
``adult`` (the catalog has no other notion of adult content to tell them apart).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from lensbox.device.serving.query import ConceptTerm, Filters

Predicate = Callable[[Mapping[str, Any]], bool]  # over an item (Item, or any mapping of its fields)


def host_matches(item: Mapping[str, Any], site: str) -> bool:
    """``site`` is the item's host, or a parent domain of it (``example.com`` matches
    ``shop.example.com``); the page URL's host counts when no host was given."""
    site = site.lower().strip().rstrip(".")
    if "://" in site:
        site = urlsplit(site).hostname or ""
    hosts = [item.get("host") or ""]
    if item.get("page_url"):
        hosts.append(urlsplit(str(item["page_url"])).hostname or "")
    return any(h.lower() == site or h.lower().endswith("." + site) for h in hosts if h)


def _concept_keys(item: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    concepts = item.get("concepts") or []
    ids = {str(c.get("id", "")).lower() for c in concepts}
    names = {str(c.get("name", "")).lower() for c in concepts}
    return ids, names


def has_concept(item: Mapping[str, Any], term: ConceptTerm) -> bool:
    """Match on id or name; Clarifai clients send either (and often a name in ``id``)."""
    ids, names = _concept_keys(item)
    wanted = {v.lower() for v in (term.id, term.name) if v}
    return bool(wanted & (ids | names))


def concept_value(item: Mapping[str, Any], term: ConceptTerm) -> float:
    wanted = {v.lower() for v in (term.id, term.name) if v}
    for c in item.get("concepts") or []:
        if {str(c.get("id", "")).lower(), str(c.get("name", "")).lower()} & wanted:
            return float(c.get("value", 0.0))
    return 0.0


def build_predicate(filters: Filters) -> Predicate | None:
    """None when nothing filters (the engine then skips the per-item pass)."""
    if filters.empty:
        return None
    checks: list[Predicate] = []
    if filters.category_id is not None:
        category_id = filters.category_id
        checks.append(lambda it: it.get("category_id") == category_id)
    if filters.tags:
        wanted = dict(filters.tags)
        checks.append(lambda it: all((it.get("tags") or {}).get(k) == v for k, v in wanted.items()))
    if filters.site:
        site = filters.site
        checks.append(lambda it: host_matches(it, site))
    if filters.family_mode in ("moderate", "strict"):
        checks.append(lambda it: not it.get("adult"))
    if filters.expression is not None:
        checks.append(filters.expression)
    checks += [_concept_check(term) for term in filters.concepts]
    return lambda item: all(check(item) for check in checks)


def _concept_check(term: ConceptTerm) -> Predicate:
    if term.include:
        return lambda it: has_concept(it, term)
    return lambda it: not has_concept(it, term)


def concept_score(item: Mapping[str, Any], terms: list[ConceptTerm]) -> float:
    """Score of an item for a concept-only search: mean value of the included concepts
    (1.0 when the query only excludes)."""
    included = [t for t in terms if t.include]
    if not included:
        return 1.0
    return sum(concept_value(item, t) for t in included) / len(included)
