"""Turn a `[camera] source` string into what cv2.VideoCapture needs, and open it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from lensbox.device.config.camera import CameraConfig

KINDS = ("device", "pipeline", "stream", "file")


@dataclass(frozen=True)
class SourceSpec:
    """``kind``: device (index or /dev/videoN), pipeline (GStreamer), stream (URL), file."""

    kind: str
    target: str | int
    api: int

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def describe(self) -> str:
        return f"{self.kind} {self.target}"


def parse_source(source: str, backend: str = "auto") -> SourceSpec:
    """Classify a source by its shape; ``backend`` other than auto forces the OpenCV API."""
    import cv2

    text = source.strip()
    target: int | str
    if text.isdigit():
        kind, target = "device", int(text)
    elif text.startswith("/dev/"):
        kind, target = "device", text
    elif "!" in text:
        kind, target = "pipeline", text
    elif "://" in text:
        kind, target = "stream", text
    else:
        kind, target = "file", os.path.expanduser(text)
    apis = {
        "v4l2": cv2.CAP_V4L2,
        "gstreamer": cv2.CAP_GSTREAMER,
        "ffmpeg": cv2.CAP_FFMPEG,
        "any": cv2.CAP_ANY,
    }
    if backend != "auto":
        return SourceSpec(kind, target, apis[backend])
    auto = {
        "device": cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY,
        "pipeline": cv2.CAP_GSTREAMER,
        "stream": cv2.CAP_FFMPEG,
        "file": cv2.CAP_ANY,
    }
    return SourceSpec(kind, target, auto[kind])


def open_capture(spec: SourceSpec, cfg: CameraConfig) -> tuple[Any | None, str]:
    """A ready cv2.VideoCapture, or (None, why not). Never raises for a missing camera.

    A file that is not there is reported without asking OpenCV, whose own warnings would
    repeat on every reconnect attempt.
    """
    import cv2

    if spec.is_file and not os.path.isfile(str(spec.target)):
        return None, f"no such file: {spec.target}"
    if spec.kind == "device" and isinstance(spec.target, str) and not os.path.exists(spec.target):
        return None, f"no such device: {spec.target}"
    try:
        if spec.kind == "stream":
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                cfg.open_timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                cfg.read_timeout_ms,
            ]
            cap = cv2.VideoCapture(spec.target, spec.api, params)
        else:
            cap = cv2.VideoCapture(spec.target, spec.api)
    except cv2.error as exc:
        return None, f"OpenCV could not open {spec.describe()}: {exc}"
    if not cap.isOpened():
        cap.release()
        return None, f"OpenCV could not open {spec.describe()}"
    if spec.kind == "device":
        _configure_device(cap, cfg)
    return cap, ""


def _configure_device(cap: Any, cfg: CameraConfig) -> None:
    """Ask for size/rate/format; a driver may ignore any of it, which is fine."""
    import cv2

    if cfg.fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*cfg.fourcc))
    if cfg.width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
    if cfg.height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
    if cfg.fps:
        cap.set(cv2.CAP_PROP_FPS, cfg.fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer queued buffers: a grab is closer to "now"


def file_fps(cap: Any, cfg: CameraConfig) -> float:
    """Playback rate of a video file: the configured one, else the file's, else 25."""
    import cv2

    if cfg.fps:
        return cfg.fps
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if fps and 0 < fps <= 240 else 25.0
