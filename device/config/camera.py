"""[camera] and [kiosk]: where frames come from, what triggers a lookup, how it is answered.

`[camera]` is shared by anything that grabs frames; `[kiosk]` (with its `[kiosk.serial]` and
`[kiosk.trigger]` tables) shapes camera-triggered lookups (`lensbox kiosk`, or the same loop
mounted in the daemon). Every number has a unit in its name or description so a TOML file
reads without the docs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lensbox.device.config.base import Section


class CameraConfig(Section):
    source: str = Field(
        "0",
        description=(
            "'/dev/video0' or an index like '0'; a GStreamer/libcamera pipeline (contains '!'); "
            "an rtsp:// or http:// stream URL; or a video file (paced at its own FPS)"
        ),
    )
    backend: Literal["auto", "v4l2", "gstreamer", "ffmpeg", "any"] = Field(
        "auto", description="OpenCV capture API; auto picks one from the shape of `source`"
    )
    width: int = Field(0, ge=0, description="requested frame width in px (0: driver default)")
    height: int = Field(0, ge=0, description="requested frame height in px (0: driver default)")
    fps: float = Field(
        0.0, ge=0, description="requested camera FPS; a video file's playback rate (0: its own)"
    )
    fourcc: str = Field("", description="requested pixel format, e.g. 'MJPG' (empty: default)")
    loop: bool = Field(True, description="start a video file over when it ends")
    stall_seconds: float = Field(
        3.0, gt=0, description="no new frame for this long -> 'stalled' in the log and health"
    )
    reconnect_min_seconds: float = Field(0.5, gt=0, description="first reconnect delay")
    reconnect_max_seconds: float = Field(10.0, gt=0, description="reconnect delay cap (doubles)")
    open_timeout_ms: int = Field(5000, ge=0, description="stream open timeout (FFmpeg URLs)")
    read_timeout_ms: int = Field(5000, ge=0, description="stream read timeout (FFmpeg URLs)")

    @field_validator("source", mode="before")
    @classmethod
    def _source_text(cls, value: object) -> object:
        """An env override `LENSBOX__CAMERA__SOURCE=0` arrives as the JSON number 0."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("fourcc")
    @classmethod
    def _fourcc(cls, value: str) -> str:
        if value and len(value) != 4:
            raise ValueError("fourcc must be exactly 4 characters, e.g. 'MJPG'")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> CameraConfig:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must be >= reconnect_min_seconds")
        return self


class SerialConfig(Section):
    port: str = Field("", description="serial device, e.g. /dev/ttyUSB0 (empty: no serial line)")
    baud: int = Field(115200, gt=0, description="line speed; a wrong one shows up as ERR badline")
    token: str = Field(
        "LOOKUP", description="request word that triggers a lookup (empty: any line does)"
    )
    max_line: int = Field(256, ge=16, le=65536, description="longest accepted request in bytes")
    reconnect_min_seconds: float = Field(0.5, gt=0, description="first reopen delay")
    reconnect_max_seconds: float = Field(5.0, gt=0, description="reopen delay cap (doubles)")
    announce: Literal["none", "matches", "all"] = Field(
        "matches",
        description="write answers of motion/interval lookups on the line too (tag @motion ...)",
    )

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if value and (len(value.split()) != 1 or not value.isprintable()):
            raise ValueError("token must be one printable word without spaces (or empty)")
        if value.upper() in ("PING", "STATUS"):
            raise ValueError("PING and STATUS are reserved protocol words")
        return value


class TriggerConfig(Section):
    debounce_ms: int = Field(
        150, ge=0, description="triggers this close to an accepted one share its answer"
    )
    min_gap_ms: int = Field(
        300, ge=0, description="least time between the end of a lookup and the next one"
    )
    interval_seconds: float = Field(0.0, ge=0, description="look up every N s (0: off)")
    motion: bool = Field(False, description="look up when the scene changes and settles")
    motion_threshold: int = Field(25, ge=1, le=255, description="gray-level change per pixel")
    motion_min_area: float = Field(
        0.02, gt=0, le=1, description="fraction of pixels that must change to count as motion"
    )
    motion_width: int = Field(160, ge=16, le=1920, description="analysis width in px")
    motion_settle_ms: int = Field(
        300, ge=0, description="fire once the scene is still this long after motion (0: at once)"
    )
    motion_fps: float = Field(10.0, gt=0, le=60, description="frames per second analysed")


class KioskConfig(Section):
    in_daemon: bool = Field(
        False,
        description="run the loop inside `lensbox serve` (POST /v1/trigger, GET /v1/last) "
        "instead of, or besides, a separate `lensbox kiosk` process",
    )
    instance: str = Field("default", description="bundle instance searched inside the daemon")
    top_k: int = Field(3, ge=1, le=100, description="hits kept in the JSON result")
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description="below this the answer is NOMATCH; unset: OK only for a hit whose "
        "verdict is 'match' (the threshold the builder measured on the catalog)",
    )
    stable_frames: int = Field(
        1, ge=1, le=10, description="fresh frames whose top id must agree (else RETAKE unstable)"
    )
    max_frame_age_ms: int = Field(
        0,
        ge=0,
        description=(
            "accept a frame captured up to this long before the trigger (0: only frames "
            "captured after it); > 0 decodes every frame, saving ~half a frame period per "
            "lookup at the cost of CPU"
        ),
    )
    frame_timeout_ms: int = Field(
        1000, ge=1, description="wait this long for a fresh frame before RETAKE stale"
    )
    min_luminance: float = Field(40.0, ge=0, le=255, description="mean gray below: RETAKE dark")
    min_sharpness: float = Field(
        25.0, ge=0, description="variance of Laplacian (at quality_width) below: RETAKE blurred"
    )
    quality_width: int = Field(640, ge=64, description="frames are judged at this width")
    region: tuple[int, ...] = Field(
        (), description="x, y, width, height in px: only this part of the frame is searched"
    )
    webhook_url: str = Field("", description="POST every lookup's JSON here (empty: off)")
    webhook_timeout_seconds: float = Field(3.0, gt=0, description="per webhook request")
    jpeg_quality: int = Field(85, ge=10, le=100, description="GET /v1/last?frame=1 JPEG quality")
    serial: SerialConfig = SerialConfig()
    trigger: TriggerConfig = TriggerConfig()

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must start with http:// or https://")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        """Empty means the whole frame (TOML has no null)."""
        if value and (len(value) != 4 or min(value[:2]) < 0 or min(value[2:]) <= 0):
            raise ValueError("region is x, y, width, height with x, y >= 0 and a positive size")
        return value
