"""The appliance layer: live catalog changes, hot bundle swaps, systemd integration.

* :class:`~.catalog.LiveCatalog` — search + add / update / delete on a loaded bundle
  (journal with fsync before acknowledging, delta segment, tombstones, compaction);
* :class:`~.manager.BundleManager` — the current catalog per instance, hot reload,
  deploy, manifest watcher, SIGHUP (:func:`~.manager.install_sighup`), /readyz details;
* :mod:`.sdnotify` — READY / WATCHDOG / STOPPING for ``Type=notify`` units;
* :mod:`.logging` — JSON lines or native journald fields, stdlib only;
* :mod:`.service` — the glue `lensbox serve` wraps its HTTP server in.

Names are imported lazily so `lensbox --help` (which imports :mod:`.commands`) stays fast.
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
    "Notifier": "sdnotify",
    "Heartbeat": "sdnotify",
    "ServiceRuntime": "service",
    "setup_logging": "logging",
    "JsonFormatter": "logging",
    "JournalHandler": "logging",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
