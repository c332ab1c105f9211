"""Which catalog answers a request: the instance *registry* over the bundle manager's
:class:`~lensbox.device.live.manager.Instance` (one Instance class, the manager's).

`lensbox serve` serves live catalogs: a :class:`ManagedInstances` registry asks the
:class:`~lensbox.device.live.manager.BundleManager` for the instance's current
:class:`~lensbox.device.live.catalog.LiveCatalog` (bundle + journal delta - tombstones) on
every request. A request takes its :class:`Instance` once and uses it to the end, so a hot
swap (deploy, reload) never changes the catalog under a running request: the old catalog
keeps answering reads until the request is done. New items are searchable and deleted ones
gone at the next request.

Without a ``[state]`` section the same catalogs are opened read-only: there is one serving
path, the one `lensbox serve` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lensbox.device.live.manager import Instance
from lensbox.device.serving.interpreters import InterpreterPool


# -- the registry ----------------------------------------------------------------------
class ManagedInstances:
    """The bundle manager's instances, resolved on every request (hot swaps included).

    A single configured instance also answers to ``default``.
    """

    def __init__(self, manager: Any, pool: InterpreterPool) -> None:
        self.manager = manager
        self.pool = pool

    def _real(self, name: str) -> str:
        configured = list(self.manager.config.bundles)
        if name == "default" and "default" not in configured and len(configured) == 1:
            return configured[0]
        return name

    def get(self, name: str) -> Instance | None:
        return self.manager.instance(self._real(name))

    def _with_alias(self, names: Sequence[str]) -> list[str]:
        configured = list(self.manager.config.bundles)
        out = set(names)
        if len(configured) == 1 and "default" not in configured and configured[0] in out:
            out.add("default")
        return sorted(out)

    def names(self) -> list[str]:
        """Instances that are serving now."""
        return self._with_alias(list(self.manager))

    def configured(self) -> list[str]:
        return self._with_alias(list(self.manager.config.bundles))

    def write(self, name: str, change):
        """``change(catalog)``, retried on the new catalog if a swap closed the old one."""
        return self.manager.write(self._real(name), change)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self.manager.ready()

    def healthy(self) -> bool:
        return self.manager.healthy()
