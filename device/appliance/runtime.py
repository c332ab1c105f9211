"""What `lensbox serve` needs around its HTTP server to behave as a systemd service.

Usage (the serve command)::

    runtime = ServiceRuntime(config, config_path)
    manager = runtime.start()                  # logging, bundles, SIGHUP, watcher
    app = create_app(config, manager=manager, pool=pool)   # manager[name] -> LiveCatalog
    server = make_server(app, ...)             # bind the port first ...
    runtime.ready(f"serving {len(manager)} bundle(s) on :{port}")   # ... then READY=1
    try:
        server.run()
    finally:
        runtime.stop()                         # STOPPING=1, close catalogs

``ready()`` also starts the watchdog heartbeat (if systemd set WatchdogSec); it pets only
while ``manager.healthy()`` and the optional ``health`` callback both pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lensbox.device.appliance.sdnotify import Heartbeat, Notifier
from lensbox.device.live.manager import BundleManager, install_sighup

log = logging.getLogger("lensbox.service")


class ServiceRuntime:
    def __init__(
        self,
        config: Any,
        config_path: str | Path | None = None,
        *,
        manager: BundleManager | None = None,
        notifier: Notifier | None = None,
        health: Callable[[], bool] | None = None,
        configure_logging: bool = True,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else Notifier()
        self.manager = manager if manager is not None else BundleManager(config)
        self.health = health
        self.configure_logging = configure_logging
        self.heartbeat: Heartbeat | None = None

    def healthy(self) -> bool:
        return self.manager.healthy() and (self.health is None or bool(self.health()))

    def start(self) -> BundleManager:
        if self.configure_logging:
            from lensbox.device.appliance.logging import setup_logging

            setup_logging(self.config.service.log_format, self.config.service.log_level)
        self.notifier.status("loading bundles")
        errors = {k: v for k, v in self.manager.start().items() if v}
        for name, error in errors.items():
            log.error("instance %s not loaded: %s", name, error, extra={"instance": name})
        if self.config_path is not None:
            install_sighup(self.manager, self.config_path, notifier=self.notifier)
        return self.manager

    def ready(self, status: str = "ready") -> None:
        self.notifier.ready(status)
        self.heartbeat = Heartbeat.from_environment(self.notifier, self.healthy)
        if self.heartbeat is not None:
            self.heartbeat.start()

    def stop(self, status: str = "stopping") -> None:
        self.notifier.stopping(status)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.manager.close()
        self.notifier.close()
