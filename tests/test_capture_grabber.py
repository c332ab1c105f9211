"""The frame grabber on real video files through OpenCV, plus the quality gate and the motion
detector on real frames."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lensbox.device.capture.grabber import FrameGrabber
from lensbox.device.capture.motion import MotionDetector
from lensbox.device.capture.quality import assess
from lensbox.device.capture.source import parse_source
from lensbox.device.capture.testing import wait_until, write_video
from lensbox.device.config.camera import CameraConfig, KioskConfig

from .conftest import SAMPLE_QUERIES

COFFEE = cv2.imread(str(SAMPLE_QUERIES / "coffee-photo.jpg"))
ROCKET = cv2.imread(str(SAMPLE_QUERIES / "rocket-photo.jpg"))


def solid(bgr: tuple[int, int, int]) -> np.ndarray:
    return np.full((480, 640, 3), bgr, np.uint8)


def camera(path: Path, **kw) -> CameraConfig:
    kw.setdefault("reconnect_min_seconds", 0.05)
    kw.setdefault("reconnect_max_seconds", 0.2)
    return CameraConfig(source=str(path), **kw)


@pytest.fixture
def grabbers():
    started: list[FrameGrabber] = []

    def make(cfg: CameraConfig) -> FrameGrabber:
        g = FrameGrabber(cfg).start()
        started.append(g)
        return g

    yield make
    for g in started:
        g.stop()


def test_source_kinds() -> None:
    assert parse_source("0").kind == "device" and parse_source("0").target == 0
    assert parse_source("/dev/video2").kind == "device"
    pipe = parse_source("libcamerasrc ! videoconvert ! appsink")
    assert (pipe.kind, pipe.api) == ("pipeline", cv2.CAP_GSTREAMER)
    assert parse_source("rtsp://10.0.0.5/stream1").api == cv2.CAP_FFMPEG
    assert parse_source("~/clips/shelf.avi").is_file


def test_a_trigger_gets_a_frame_captured_after_it(tmp_path: Path, grabbers) -> None:
    video = write_video(tmp_path / "v.avi", [COFFEE] * 6, fps=20)
    g = grabbers(camera(video))
    assert g.wait_frame(timeout=3.0) is not None
    time.sleep(0.2)  # frames keep being grabbed meanwhile, none queue up
    t = time.monotonic()
    frame = g.wait_frame(newer_than=t, timeout=2.0)
    assert frame is not None and frame.captured >= t
    nxt = g.wait_frame(after_seq=frame.seq, timeout=2.0)
    assert nxt is not None and nxt.seq > frame.seq and nxt.captured > frame.captured
    assert frame.bgr.shape == (480, 640, 3)
    assert abs(float(frame.bgr.mean()) - float(COFFEE.mean())) < 3  # it is the video's picture


def test_video_file_is_paced_and_looped(tmp_path: Path, grabbers) -> None:
    frames = [solid((0, 0, 255))] * 3 + [solid((255, 0, 0))] * 3
    g = grabbers(camera(write_video(tmp_path / "v.avi", frames, fps=20)))
    seen, seq = set(), -1
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and len(seen) < 2:
        f = g.wait_frame(after_seq=seq, timeout=1.0)
        seq = f.seq
        seen.add("red" if f.bgr[..., 2].mean() > 128 else "blue")
    time.sleep(0.6)  # 6-frame file at 20 fps: ran out after 0.3 s, must have started over
    health = g.health()
    assert seen == {"red", "blue"}
    assert health["state"] == "ok" and health["frames"] > len(frames)
    assert 5 < health["fps"] < 40  # paced near the file's 20 fps, not as fast as decoding


def test_missing_camera_file_is_opened_once_it_appears(tmp_path: Path, grabbers) -> None:
    path = tmp_path / "late.avi"
    g = grabbers(camera(path))
    assert g.wait_frame(timeout=0.3) is None
    health = g.health()
    assert health["state"] == "down" and "no such file" in health["error"]
    write_video(path, [COFFEE] * 4, fps=20)
    frame = g.wait_frame(newer_than=time.monotonic(), timeout=3.0)
    assert frame is not None and g.connected


def test_camera_that_stops_delivering_is_reported_stalled(tmp_path: Path, grabbers, caplog) -> None:
    caplog.set_level(logging.INFO, logger="lensbox.capture.camera")
    video = write_video(tmp_path / "v.avi", [COFFEE] * 3, fps=20)
    g = grabbers(camera(video, loop=False, stall_seconds=0.4))
    assert g.wait_frame(timeout=2.0) is not None
    assert wait_until(lambda: g.health()["stalled"], 3.0)
    assert g.wait_frame(newer_than=time.monotonic(), timeout=0.3) is None
    assert "camera stalled" in caplog.text and g.health()["stalls"] == 1


def test_quality_gate_on_video_frames(tmp_path: Path, grabbers) -> None:
    cfg = KioskConfig()
    frames = {
        "fine": COFFEE,
        "dark": (COFFEE * 0.1).astype(np.uint8),
        "blurred": cv2.GaussianBlur(COFFEE, (0, 0), 6),
    }
    for name, img in frames.items():
        g = grabbers(camera(write_video(tmp_path / f"{name}.avi", [img] * 3, fps=20)))
        frame = g.wait_frame(timeout=3.0)
        verdict = assess(frame.bgr, cfg.min_luminance, cfg.min_sharpness).verdict
        assert verdict == (None if name == "fine" else name)


def test_motion_fires_once_after_a_change_settles(tmp_path: Path, grabbers) -> None:
    frames = [ROCKET] * 3 + [COFFEE] * 8  # 0.3 s rocket, then 0.8 s coffee at 10 fps
    g = grabbers(camera(write_video(tmp_path / "v.avi", frames, fps=10), loop=False))
    det = MotionDetector(settle_ms=200)
    fired, seq = [], -1
    while len(fired) < 2:
        f = g.wait_frame(after_seq=seq, timeout=0.3)
        if f is None:
            break  # the file ended
        seq = f.seq
        if det.update(f.bgr, f.captured):
            fired.append(f.bgr)
    assert len(fired) == 1
    assert abs(float(fired[0].mean()) - float(COFFEE.mean())) < 3  # fired on the settled scene


def test_still_scene_never_fires(tmp_path: Path, grabbers) -> None:
    g = grabbers(camera(write_video(tmp_path / "v.avi", [COFFEE] * 10, fps=20)))
    det = MotionDetector(settle_ms=0)
    seq, updates = -1, 0
    while updates < 15:
        f = g.wait_frame(after_seq=seq, timeout=1.0)
        seq = f.seq
        updates += 1
        assert not det.update(f.bgr, f.captured)
