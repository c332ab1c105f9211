"""The kiosk loop inside `lensbox serve` (``[kiosk] in_daemon = true``).

The loop (device/capture/kiosk.py) grabs camera frames on its own threads and searches
the instance's live catalog, whose embedder leases an interpreter from the API's pool for
each inference, so a camera lookup and an HTTP search never run one TFLite interpreter in
two threads. Its blueprint adds
``POST /v1/trigger``, ``GET /v1/last[?frame=1]`` and ``GET /v1/kiosk/health``; those routes
pass the same API-key and rate-limit check as the native API (``admit``). The app stops
the loop in :func:`lensbox.device.api.app.close_app`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lensbox.device.api.errors import ApiError
from lensbox.device.serving.instances import ManagedInstances

if TYPE_CHECKING:
    from flask import Flask

    from lensbox.device.capture.kiosk import KioskLoop
    from lensbox.device.config.loader import LensboxConfig


def mount_kiosk(
    app: Flask,
    config: LensboxConfig,
    instances: ManagedInstances,
    admit: Callable[[], Any],
) -> KioskLoop:
    """Create, register and start the loop; raises ValueError for an unknown instance."""
    from lensbox.device.capture.grabber import FrameGrabber
    from lensbox.device.capture.http import make_blueprint
    from lensbox.device.capture.kiosk import KioskLoop

    name = config.kiosk.instance
    configured = instances.configured()
    if name not in configured:
        raise ValueError(
            f"kiosk.instance {name!r} is not a served bundle (have {', '.join(configured)})"
        )

    @contextmanager
    def lease() -> Iterator[Any]:
        # Looked up per lookup: a swapped bundle and live catalog changes are picked up.
        inst = instances.get(name)
        if inst is None:
            raise ApiError("not_ready", f"instance {name!r} is not loaded")
        yield inst.catalog

    first = instances.get(name)
    loop = KioskLoop(
        first.catalog if first is not None else None,
        FrameGrabber(config.camera),
        config.kiosk,
        lease=lease,
    )
    blueprint = make_blueprint(loop)
    blueprint.before_request(admit)
    app.register_blueprint(blueprint)
    return loop.start()
