"""docs/benchmarks.md is the template bench/benchmarks.md.j2 filled from bench/results/*.json.

Renders from the saved results (nothing is measured): every section is there, every number
follows the results it came from, and parts missing from a run leave their sections out.
"""

from __future__ import annotations

import copy
import re

import pytest

from bench import report
from bench.common import load_results

SECTIONS = (
    "# lensbox benchmarks",
    "## Headline numbers",
    "## 1. Retrieval quality (UKBench-1000)",
    "### Descriptor ablation (issue 2)",
    "### What a score means",
    "## 2. Speed",
    "### HTTP end to end (`lensbox serve`, `POST /v1/search`)",
    "## 3. Memory and size",
    "## 4. Scaling: search latency and Annoy recall",
    "## 5. On a board (estimate, not measured)",
    "## Raw results",
)


@pytest.fixture(scope="module")
def results() -> dict:
    found = {n: load_results(n) for n in ("run", "quality", "speed", "scale")}
    missing = [n for n, r in found.items() if r is None]
    assert not missing, f"bench/results lacks {missing}"
    return found


def _render(r: dict) -> str:
    return report.render(r["run"], r["quality"], r["speed"], r["scale"])


def test_the_page_has_every_section_in_order_and_no_template_left(results) -> None:
    page = _render(results)
    positions = [page.find(s + "\n") for s in SECTIONS]
    assert -1 not in positions, [s for s, p in zip(SECTIONS, positions) if p < 0]
    assert positions == sorted(positions)
    assert "{{" not in page and "{%" not in page and "n/a%" not in page
    assert page.endswith("after a run.\n")


def test_the_checked_in_page_is_what_the_results_render_to(results) -> None:
    """docs/benchmarks.md was rendered from these results with this template."""
    assert (report.DOCS / "benchmarks.md").read_text(encoding="utf-8") == _render(results)


def test_numbers_follow_the_results(results) -> None:
    changed = copy.deepcopy(results)
    real = changed["quality"]["hard_case"]["real views"]
    real["lensbox int8"]["recall@1"] = 0.5
    changed["speed"]["http"]["baseline_in_process"]["median_ms"] = 1234.0
    page = _render(changed)
    headline = re.search(r"\| hard case recall@1, real views: .* \| (.*) \|", page)
    assert headline and headline.group(1).endswith("/ 50.0%")
    flat = " ".join(page.split())  # prose is wrapped; compare it as words
    assert "of real other-view photos vs 50.0% for lensbox" in flat
    assert "(decode + embed + search, 1 thread): 1234 ms median" in flat
    assert page != _render(results)


def test_parts_missing_from_a_run_leave_their_sections_out(results) -> None:
    page = report.render(results["run"], None, results["speed"], None)
    assert "## 2. Speed" in page and "## 5. On a board" in page
    assert "## 1. Retrieval quality" not in page and "## 3. Memory and size" not in page
    no_http = copy.deepcopy(results["speed"])
    no_http["http"] = {"skipped": "no free port"}
    page = report.render(results["run"], None, no_http, None)
    assert "Not measured: no free port." in page
