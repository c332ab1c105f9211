"""The kiosk loop inside `lensbox serve` (``[kiosk] in_daemon = true``).

The loop (device/capture/kiosk.py) grabs camera frames on its own threads and searches
them on an interpreter *leased* from the API's slot pool, so a camera lookup and an HTTP
search never run one TFLite interpreter in two threads. Its blueprint adds
``POST /v1/trigger``, ``GET /v1/last[?frame=1]`` and ``GET /v1/kiosk/health``; those routes
pass the same API-key and rate-limit check as the native API (``admit``). The app stops
the loop in :func:`lensbox.device.api.app.close_app`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lensbox.device.api.engines import Instance, InterpreterSlots

if TYPE_CHECKING:
    from flask import Flask
    from lensbox.device.capture.kiosk import KioskLoop
    from lensbox.device.config.loader import LensboxConfig


def mount_kiosk(
    app: Flask,
    config: LensboxConfig,
    instances: dict[str, Instance],
    slots: InterpreterSlots,
    admit: Callable[[], Any],
) -> KioskLoop:
    """Create, register and start the loop; raises ValueError for an unknown instance."""
    from lensbox.device.capture.grabber import FrameGrabber
    from lensbox.device.capture.http import make_blueprint
    from lensbox.device.capture.kiosk import KioskLoop

    name = config.kiosk.instance
    if name not in instances:
        raise ValueError(
            f"kiosk.instance {name!r} is not a served bundle (have {', '.join(sorted(instances))})"
        )

    @contextmanager
    def lease() -> Iterator[Any]:
        inst = instances[name]  # looked up per lookup: a swapped bundle is picked up
        with slots.lease() as (slot, _waited):
            yield inst.engines[slot]

    loop = KioskLoop(instances[name].engine, FrameGrabber(config.camera), config.kiosk,
                     lease=lease)
    blueprint = make_blueprint(loop)
    blueprint.before_request(admit)
    app.register_blueprint(blueprint)
    return loop.start()
