"""Live catalogs: catalog changes while serving and hot bundle swaps (systemd plumbing is
in :mod:`lensbox.device.appliance`).

* :class:`~.catalog.LiveCatalog` — search + add / update / delete on a loaded bundle
  (journal with fsync before acknowledging, delta segment, tombstones, compaction);
* :class:`~.manager.BundleManager` — the current catalog per instance, hot reload,
  deploy, manifest watcher, SIGHUP (:func:`~.manager.install_sighup`), /readyz details;

Names are imported lazily so `lensbox --help` stays fast.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "LiveCatalog": "catalog",
    "LiveSettings": "catalog",
    "Change": "catalog",
    "CatalogClosed": "catalog",
    "CatalogReadOnly": "catalog",
    "BundleManager": "manager",
    "Instance": "manager",
    "ReloadResult": "manager",
    "install_sighup": "manager",
    "validate_engine": "manager",
    "BundleSlot": "slot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
