"""`lensbox kiosk` as its own process: a pty for the serial line, a video file for the camera,
the optional HTTP face, and a clean exit on SIGTERM."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import requests

from lensbox.device.capture.testing import PtyPort, write_video

from .conftest import SAMPLE_CATALOG, SAMPLE_QUERIES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kiosk_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lensbox.device.cli", "kiosk", *args]


def _bundle_without_coffee(tmp_path: Path) -> Path:
    from lensbox.index_builder.build import BuildSettings, build_bundle

    catalog = tmp_path / "catalog2"
    catalog.mkdir()
    for name in ("rocket", "clock", "brick"):
        shutil.copy(SAMPLE_CATALOG / f"{name}.jpg", catalog)
    out = tmp_path / "b2.lbx"
    build_bundle(catalog, out, BuildSettings(cache_dir=None, workers=1), progress=False)
    return out


@pytest.mark.slow
def test_kiosk_process_answers_on_serial_and_http(tmp_path: Path, sample_bundle: Path) -> None:
    slot = tmp_path / "slot"  # a deploy slot: its content is replaced below
    shutil.copytree(sample_bundle, slot)
    video = write_video(
        tmp_path / "cam.avi", [cv2.imread(str(SAMPLE_QUERIES / "coffee-photo.jpg"))] * 5
    )
    config = tmp_path / "lensbox.toml"
    config.write_text("[kiosk]\nmin_score = 0.5\n\n[kiosk.trigger]\nmin_gap_ms = 0\n")
    port = PtyPort(tmp_path / "ttyUSB0")
    http = _free_port()
    proc = subprocess.Popen(
        _kiosk_cmd(
            str(slot),
            "--camera",
            str(video),
            "--serial",
            str(port.path),
            "--config",
            str(config),
            "--http",
            f"127.0.0.1:{http}",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if port.ask("PING", timeout=0.3) == "PONG":
                break
        else:
            raise AssertionError(f"kiosk never answered PING: {proc.poll()}")
        port.drain(0.3)  # PONGs to earlier PINGs that were still on their way
        answer = port.ask("LOOKUP 1", timeout=10)
        assert answer is not None and answer.split(" ")[:3] == ["OK", "1", "coffee"]
        last = requests.get(f"http://127.0.0.1:{http}/v1/last", timeout=5).json()
        assert last["line"] == answer and last["source"] == "serial"
        # deploy a catalog without coffee into the slot; SIGHUP makes the kiosk search it
        new = _bundle_without_coffee(tmp_path)
        slot.rename(tmp_path / "slot.old")
        new.rename(slot)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            after = (port.ask("LOOKUP 2", timeout=10) or "").split(" ")
            if after[0] == "NOMATCH" or after[:3] != ["OK", "2", "coffee"]:
                break
            time.sleep(0.2)
        assert after[0] in ("OK", "NOMATCH") and after[:3] != ["OK", "2", "coffee"]
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=10)[1]
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            err = proc.communicate(timeout=5)[1]
        port.close()
    assert "kiosk ready" in err and "serial port" in err and "bundle reloaded" in err
    # the URL line is logged (it used to fail with "TypeError: %d format"), no warning
    assert f"kiosk HTTP on http://127.0.0.1:{http}/v1/trigger" in err
    assert "Logging error" not in err and "no trigger configured" not in err


def test_kiosk_rejects_a_bad_config_before_loading_anything(tmp_path: Path) -> None:
    config = tmp_path / "lensbox.toml"
    config.write_text("[kiosk]\nmin_score = 2\n\n[kiosk.serial]\nbaud = 'fast'\n")
    done = subprocess.run(
        _kiosk_cmd("nowhere.lbx", "--config", str(config)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "kiosk.min_score" in done.stderr and "kiosk.serial.baud" in done.stderr


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        got = log.read_text()
        if text in got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never logged (exit {proc.poll()}):\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_kiosk_without_any_trigger_warns(tmp_path: Path, sample_bundle: Path) -> None:
    video = write_video(
        tmp_path / "cam.avi", [cv2.imread(str(SAMPLE_QUERIES / "coffee-photo.jpg"))] * 5
    )
    log = tmp_path / "kiosk.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            _kiosk_cmd(str(sample_bundle), "--camera", str(video)),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        got = _wait_for(log, "kiosk ready", proc)
        assert "WARNING" in got and "no trigger configured" in got
        assert "--serial" in got and "--http" in got
    finally:
        assert _stop(proc) == 0


def test_kiosk_http_alone_is_a_trigger_and_logs_its_url(
    tmp_path: Path, sample_bundle: Path
) -> None:
    video = write_video(
        tmp_path / "cam.avi", [cv2.imread(str(SAMPLE_QUERIES / "coffee-photo.jpg"))] * 5
    )
    log = tmp_path / "kiosk.log"
    http = _free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            _kiosk_cmd(str(sample_bundle), "--camera", str(video), "--http", f"127.0.0.1:{http}"),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        got = _wait_for(log, "/v1/trigger", proc)
        assert f"kiosk HTTP on http://127.0.0.1:{http}/v1/trigger" in got
        assert "Logging error" not in got and "TypeError" not in got
        health = requests.get(f"http://127.0.0.1:{http}/v1/kiosk/health", timeout=10)
        assert health.status_code == 200
    finally:
        assert _stop(proc) == 0
    assert "no trigger configured" not in log.read_text()


def test_kiosk_http_on_a_taken_port_fails_clearly(tmp_path: Path, sample_bundle: Path) -> None:
    video = write_video(
        tmp_path / "cam.avi", [cv2.imread(str(SAMPLE_QUERIES / "coffee-photo.jpg"))] * 5
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            _kiosk_cmd(str(sample_bundle), "--camera", str(video), "--http", f"127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"--http 127.0.0.1:{port}: cannot listen there" in done.stderr
