"""Which catalog photos the learned whitening renders camera views of, and how."""

from __future__ import annotations

import hashlib

from lensbox.index_builder.whitening import WhiteningSettings, sample, view_jobs

SETTINGS = WhiteningSettings(views=4, photos=50)


def _contents(names: range) -> list[str]:
    return [hashlib.sha256(f"photo {n}".encode()).hexdigest() for n in names]


def test_the_sample_is_drawn_by_content_so_catalog_edits_keep_the_rest_of_it() -> None:
    """Adding photos (anywhere in the catalog) changes the sample only where a new photo
    draws a lower lot than one it displaces: the cached views of the others stay valid."""
    before = _contents(range(200))
    after = _contents(range(-20, 0)) + before  # 20 new photos, listed first
    chosen_before = {before[i] for i in sample(before, SETTINGS)}
    chosen_after = {after[i] for i in sample(after, SETTINGS)}
    assert len(chosen_before) == len(chosen_after) == 50
    new = set(after) - set(before)
    displaced = chosen_before - chosen_after
    assert chosen_after - chosen_before <= new  # nothing old comes in
    assert len(displaced) == len(chosen_after & new)  # each newcomer displaces one photo
    assert len(displaced) < 20


def test_a_small_catalog_is_sampled_whole_and_each_photo_keeps_its_seed() -> None:
    contents = _contents(range(10))
    assert sample(contents, SETTINGS) == list(range(10))
    jobs = view_jobs([f"{n}.jpg" for n in range(10)], contents, SETTINGS)
    again = view_jobs([f"x/{n}.jpg" for n in reversed(range(10))], contents[::-1], SETTINGS)
    assert [j[1] for j in jobs] == [j[1] for j in again][::-1]
    assert len({j[1] for j in jobs}) == 10 and all(j[2] == 4 for j in jobs)
