"""[service]: how the daemon behaves under systemd (logging, devices it may open).

The device list feeds the `DeviceAllow=` drop-in that `systemd/install.sh` writes: with
`DevicePolicy=closed` the units can open only these device nodes (plus /dev/null & co).
The camera and serial devices named in [camera] / [kiosk.serial] are added automatically.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lensbox.device.config.base import Section


class ServiceConfig(Section):
    log_format: Literal["auto", "json", "journal", "text"] = Field(
        "auto",
        description=(
            "auto: native journal fields when stderr goes to journald, else one JSON object "
            "per line; json; journal; text (for a terminal)"
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    devices: tuple[str, ...] = Field(
        (), description="extra device nodes the units may open, e.g. ['/dev/video1']"
    )
    default_devices: bool = Field(
        True,
        description="also allow /dev/ttyUSB0 while [kiosk.serial].port is empty (so enabling "
        "the serial line later needs no new drop-in)",
    )

    @field_validator("devices")
    @classmethod
    def _dev_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not v.startswith("/dev/") or any(c.isspace() for c in v)]
        if bad:
            raise ValueError(f"device paths must start with /dev/ and hold no spaces: {bad}")
        return value
