"""Stage 4: a query descriptor becomes a ranked, filtered page of catalog items."""

from lensbox.device.search.engine import (
    Hit,
    QueryEmbedding,
    SearchEngine,
    SearchResult,
    SearchSettings,
)

__all__ = ["Hit", "QueryEmbedding", "SearchEngine", "SearchResult", "SearchSettings"]
