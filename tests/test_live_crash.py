"""kill -9 a real process applying live changes, compacting and swapping bundles; restart;
every acknowledged change must be there and every file whole (the trials live in
tests/crash_support.py; ``python -m tests.crash_support --trials 200`` runs many more)."""

from __future__ import annotations

import json

import pytest

from . import crash_support


@pytest.fixture(scope="module")
def trials():
    return crash_support


@pytest.mark.slow
def test_acknowledged_changes_survive_kill_9(trials, tmp_path):
    summary = trials.run_trials(15, seed=20240611, workdir=tmp_path, max_delay=0.8)
    assert summary["failed"] == [], json.dumps(summary["failed"], indent=2)
    assert summary["trials"] == 15
    assert summary["acknowledged_changes"] >= 15  # the driver really did work each time


def test_the_checker_notices_a_lost_change(trials, tmp_path):
    """The verification is not vacuous: drop the last acknowledged change from the journal
    (as a missing fsync would) and the check reports it."""
    state, _templates = trials.setup(tmp_path)
    manager = trials.open_manager(state, compact_after=10**6, background=False)
    for i in range(3):
        manager.write(
            "default",
            lambda c, i=i: c.put_pooled(
                f"x{i}",
                trials.pooled_for(f"x{i}", 1)[None],
                {"title": f"x{i}#1", "custom_content": "v1"},
            ),
        )
    manager.close()
    journal = state / "journal" / "default.journal"
    data = journal.read_bytes()
    from lensbox.device.live.journal import read_journal

    contents = read_journal(journal)
    assert len(contents.records) == 3
    log = [
        f"BEGIN {json.dumps(op)}" if k == 0 else f"ACK {json.dumps(op)}"
        for i in range(3)
        for op in [{"op": "put", "id": f"x{i}", "v": 1, "title": f"x{i}#1"}]
        for k in (0, 1)
    ]
    want, _pending, acked = trials.replay_log(trials.template_state("base"), log)
    got, problems = trials.actual_state(state)
    assert got == want and problems == [] and acked == 3
    journal.write_bytes(data[: len(data) - 10])  # the last record never reached the disk
    got, problems = trials.actual_state(state)
    assert got != want and "x2" not in got
