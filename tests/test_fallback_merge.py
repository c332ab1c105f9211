"""Translation of cloud hits into native hits, and the two merge policies."""

from __future__ import annotations

import pytest

from lensbox.device.bundle.format import ITEM_COLUMNS
from lensbox.device.fallback import (
    CloudHit,
    cloud_hit_to_native,
    local_hit_to_native,
    merge_results,
    rank_score,
)
from lensbox.device.search.engine import Hit


def local(i: int, score: float, url: str | None = None) -> Hit:
    return Hit(i, f"local-{i}", score, {"id": f"local-{i}", "source": url or f"/p/{i}.jpg"})


def cloud(i: int, score: float, provider: str = "clarifai", url: str | None = None) -> CloudHit:
    return CloudHit(
        id=f"c-{i}",
        score=score,
        source=f"cloud:{provider}",
        rank=i,
        url=url or f"https://img.example.com/{i}.jpg",
        title=f"cloud {i}",
        page_url=f"https://shop.example.com/{i}",
        host="shop.example.com",
        tags={"k": "v"},
        extra={"product_id": f"p{i}", "int_attrs": {"int_attr": i}, "unknown_key": 1},
    )


def test_cloud_hit_to_native_has_every_item_column() -> None:
    native = cloud_hit_to_native(cloud(2, 0.8, "alibaba"))
    assert native.source == "cloud:alibaba" and native.score == 0.8
    item = native.item
    assert set(item) == set(ITEM_COLUMNS)  # unknown extra keys are dropped
    assert item["source"] == "https://img.example.com/2.jpg"
    assert (item["title"], item["page_url"], item["host"]) == (
        "cloud 2",
        "https://shop.example.com/2",
        "shop.example.com",
    )
    assert item["product_id"] == "p2" and item["int_attrs"] == {"int_attr": 2}
    assert item["adult"] is None and item["str_attrs"] == {} and item["concepts"] == []


def test_local_hit_to_native_marks_source_local() -> None:
    native = local_hit_to_native(local(1, 0.7), rank=3)
    assert (native.id, native.score, native.source, native.rank) == (
        "local-1",
        0.7,
        "local",
        3,
    )
    assert native.row == 1


def test_weak_local_is_replaced_by_cloud() -> None:
    out = merge_results(
        [local(1, 0.3), local(2, 0.2)],
        [cloud(1, 0.9), cloud(2, 0.8)],
        "cloud_only_when_weak",
        0.5,
        10,
    )
    assert [h.id for h in out] == ["c-1", "c-2"]
    assert {h.source for h in out} == {"cloud:clarifai"}


def test_strong_local_ignores_cloud() -> None:
    out = merge_results(
        [local(1, 0.8), local(2, 0.4)], [cloud(1, 0.99)], "cloud_only_when_weak", 0.5, 10
    )
    assert [h.id for h in out] == ["local-1", "local-2"]
    assert {h.source for h in out} == {"local"}


def test_weak_local_kept_when_cloud_has_nothing() -> None:
    out = merge_results([local(1, 0.1)], [], "cloud_only_when_weak", 0.5, 10)
    assert [h.id for h in out] == ["local-1"]


def test_no_local_hits_at_all_uses_cloud() -> None:
    out = merge_results([], [cloud(1, 0.4)], "cloud_only_when_weak", 0.5, 10)
    assert [h.source for h in out] == ["cloud:clarifai"]


def test_threshold_is_strict() -> None:
    at = merge_results([local(1, 0.5)], [cloud(1, 0.9)], "cloud_only_when_weak", 0.5, 10)
    below = merge_results([local(1, 0.4999)], [cloud(1, 0.9)], "cloud_only_when_weak", 0.5, 10)
    assert at[0].source == "local" and below[0].source == "cloud:clarifai"


def test_local_then_cloud_appends_and_dedupes() -> None:
    shared_url = "https://img.example.com/shared.jpg"
    out = merge_results(
        [local(1, 0.9), local(2, 0.8, url=shared_url)],
        [cloud(1, 0.99, url=shared_url), cloud(2, 0.7), cloud(2, 0.6), cloud(3, 0.5)],
        "local_then_cloud",
        0.5,
        10,
    )
    # c-1 has the same image URL as local-2; the second c-2 repeats an id.
    assert [h.id for h in out] == ["local-1", "local-2", "c-2", "c-3"]
    assert [h.source for h in out] == ["local", "local", "cloud:clarifai", "cloud:clarifai"]


def test_local_then_cloud_truncates_to_top_k() -> None:
    out = merge_results(
        [local(i, 0.9 - i / 10) for i in range(3)],
        [cloud(i, 0.5) for i in range(5)],
        "local_then_cloud",
        0.5,
        4,
    )
    assert [h.source for h in out] == ["local"] * 3 + ["cloud:clarifai"]


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError):
        merge_results([], [], "cloud_first", 0.5, 10)  # type: ignore[arg-type]


def test_rank_score_orders_without_claiming_a_match() -> None:
    scores = [rank_score(r, 10) for r in range(10)]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 10
    assert all(0.0 < s < 1.0 for s in scores)
    assert rank_score(12, 10) >= 0.0
