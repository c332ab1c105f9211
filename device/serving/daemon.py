"""The daemon `lensbox serve` runs, before any port is bound.

One :class:`~lensbox.device.serving.interpreters.InterpreterPool`, a
:class:`~lensbox.device.live.manager.BundleManager` that opens every bundle on it (live
catalogs: journal, delta, tombstones, compaction; hot swaps from `lensbox deploy`, the slot
watcher or SIGHUP; read-only without a ``[state]`` section), a
:class:`~lensbox.device.appliance.runtime.ServiceRuntime` that speaks sd_notify, and the
HTTP app over them. Tests start exactly this (tests/api_support.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Daemon:
    """What `lensbox serve` runs: interpreters, live catalogs, systemd glue, the app."""

    config: Any
    pool: Any  # InterpreterPool
    manager: Any  # BundleManager
    runtime: Any  # ServiceRuntime
    app: Any  # Flask

    def close(self) -> None:
        """Stop the app's extras (kiosk), then STOPPING=1 and close the catalogs."""
        from lensbox.device.api.app import close_app

        close_app(self.app)
        self.runtime.stop()


def open_daemon(
    config,
    *,
    notifier=None,
    configure_logging: bool = True,
    background: bool = True,
    pool: Any = None,
) -> Daemon:
    """Load the interpreters and every configured bundle (errors are kept per instance,
    see ``manager.ready()``) and build the app over them. No port is bound yet.

    ``pool``: interpreters already loaded (an InterpreterPool of ``server.interpreters``
    models), reused instead of loading new ones (tests start many daemons)."""
    from contextlib import nullcontext

    from lensbox.device.api.app import create_app
    from lensbox.device.appliance.runtime import ServiceRuntime
    from lensbox.device.live.manager import BundleManager
    from lensbox.device.serving.interpreters import InterpreterPool

    if not config.bundles:
        raise ValueError("no bundle to serve: give a bundle path, or [bundles] in --config")
    server = config.server
    if pool is None:
        pool = InterpreterPool.load(
            server.interpreters,
            server.interpreter_threads or config.search.threads,
            config.search.runtime,
        )
        if server.warmup:
            pool.warmup()
    # Settings are read from the manager's config at each open (the lambda runs only once
    # `manager` exists), so a SIGHUP that changes [search] applies to what it reloads.
    manager: BundleManager
    opener = pool.opener(lambda: manager.config.search.settings())
    # The pool's embedders lease an interpreter per call: no extra lock around them.
    manager = BundleManager(
        config, engine_opener=opener, embed_lock=nullcontext(), background=background
    )
    runtime = ServiceRuntime(
        config, None, manager=manager, notifier=notifier, configure_logging=configure_logging
    )
    runtime.start()
    try:
        app = create_app(config, manager=manager, pool=pool)
    except BaseException:
        runtime.stop()
        raise
    return Daemon(config, pool, manager, runtime, app)
