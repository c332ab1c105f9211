"""Which journal belongs to which bundle, and how a bundle directory is recognised."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lensbox.device.bundle.format import MANIFEST
from lensbox.device.search.engine import SearchEngine


def bundle_lineage(engine: SearchEngine) -> tuple[str, int]:
    """(lineage, applied_seq): which journal belongs to this bundle and how far it is in.

    * a deployed copy (``deploy.json`` written by the slot) starts a new lineage, its
      deploy id: a deploy replaces the catalog, even when the same bundle is redeployed;
    * a compacted bundle carries its lineage on, with the journal seq it already holds;
    * any other bundle directory is named by its manifest's hash (stable across restarts).
    """
    from lensbox.device.live.slot import DEPLOY_MARKER

    path = Path(engine.bundle.path)
    try:
        marker = json.loads((path / DEPLOY_MARKER).read_text(encoding="utf-8"))
        return "d-" + str(marker["deploy_id"]), 0
    except (OSError, ValueError, KeyError, TypeError):
        pass
    live = engine.bundle.manifest.get("live") or {}
    if live.get("lineage"):
        return str(live["lineage"]), int(live.get("applied_seq", 0))
    raw = (path / MANIFEST).read_bytes()
    return "b-" + hashlib.sha256(raw).hexdigest()[:24], 0


def dir_signature(path: Path) -> tuple[str, int, int] | None:
    """(dir, manifest inode, mtime): what BundleSlot.signature() reports for a slot."""
    try:
        st = os.stat(Path(path) / MANIFEST)
    except OSError:
        return None
    return (str(path), st.st_ino, st.st_mtime_ns)
