"""The kiosk loop end to end: a real pty as the serial port, a real video file as the camera,
the real catalog on the sample bundle, a real HTTP server for the webhook and the blueprint.

Trigger line in, answer line out — the same path a microcontroller on /dev/ttyUSB0 takes.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from lensbox.device.capture.grabber import FrameGrabber
from lensbox.device.capture.kiosk import KioskLoop
from lensbox.device.capture.testing import MjpegServer, PtyPort, wait_until, write_video
from lensbox.device.config.camera import CameraConfig, KioskConfig, SerialConfig, TriggerConfig

from .conftest import SAMPLE_QUERIES

COFFEE = cv2.imread(str(SAMPLE_QUERIES / "coffee-photo.jpg"))
ROCKET = cv2.imread(str(SAMPLE_QUERIES / "rocket-photo.jpg"))
DARK = (COFFEE * 0.1).astype(np.uint8)
BLURRED = cv2.GaussianBlur(COFFEE, (0, 0), 6)


def fields(line: str | None) -> list[str]:
    assert line is not None, "no answer on the serial line"
    return line.split(" ")


@pytest.fixture
def kiosk(tmp_path: Path, catalog):
    """make(frames, fps=.., camera={..}, serial={..}, trigger={..}, **kiosk) -> (loop, port)."""
    started: list[tuple[KioskLoop, PtyPort]] = []

    def make(
        frames=None,
        fps: float = 10.0,
        video: Path | str | None = None,
        wait_camera=True,
        camera=None,
        serial=None,
        trigger=None,
        lease=None,
        **kiosk_kw,
    ):
        n = len(started)
        if video is None:
            video = write_video(tmp_path / f"cam{n}.avi", frames, fps=fps)
        port = PtyPort(tmp_path / f"tty{n}")
        cam = CameraConfig(
            source=str(video),
            reconnect_min_seconds=0.05,
            reconnect_max_seconds=0.2,
            **(camera or {}),
        )
        ser = SerialConfig(
            port=str(port.path),
            reconnect_min_seconds=0.05,
            reconnect_max_seconds=0.2,
            **(serial or {}),
        )
        trig = TriggerConfig(**{"debounce_ms": 0, "min_gap_ms": 0, **(trigger or {})})
        cfg = KioskConfig(serial=ser, trigger=trig, **kiosk_kw)
        loop = KioskLoop(catalog, FrameGrabber(cam), cfg, lease=lease).start()
        started.append((loop, port))
        assert wait_until(lambda: loop.serial.link.connected, 5.0)
        if wait_camera:
            assert loop.grabber.wait_frame(timeout=5.0) is not None
        return loop, port

    yield make
    for loop, port in started:
        loop.stop()
        port.close()


# -- the happy path ------------------------------------------------------------------


def test_trigger_line_in_match_out(kiosk) -> None:
    loop, port = kiosk([COFFEE] * 5)
    status, tag, item, score = fields(port.ask("LOOKUP 42"))
    assert (status, tag, item) == ("OK", "42", "coffee")
    assert loop.cfg.min_score is None  # the default: the bundle's calibrated verdict decides
    assert loop.last().verdict == "match" and 0.0 <= float(score) <= 1.0
    assert fields(port.ask("LOOKUP"))[:2] == ["OK", "coffee"]  # untagged: no tag field
    assert port.ask("PING p1") == "PONG p1"
    assert fields(port.ask("STATUS"))[:2] == ["STATUS", "ok"]
    last = loop.last()
    assert last.item_id == "coffee" and last.frames_used == 1
    assert last.frame["after_trigger_ms"] >= 0  # a frame captured after the trigger, never older


def test_a_different_item_gets_a_different_answer(kiosk) -> None:
    _, port = kiosk([ROCKET] * 5)
    assert fields(port.ask("LOOKUP r"))[:3] == ["OK", "r", "rocket"]


def test_below_min_score_is_nomatch_with_the_best_score(kiosk) -> None:
    loop, port = kiosk([_unknown_object()] * 5, min_score=0.99)
    status, tag, best = fields(port.ask("LOOKUP 5"))
    assert (status, tag) == ("NOMATCH", "5")
    assert 0.0 < float(best) < 0.99
    assert loop.last().hits  # the JSON still says what it was closest to


def _unknown_object() -> np.ndarray:
    """A sharp, well-lit scene of shapes that is in no catalog."""
    rng = np.random.default_rng(5)
    frame = np.full((480, 640, 3), 150, np.uint8)
    for _ in range(40):
        colour = rng.integers(0, 256, 3).tolist()
        x, y = int(rng.integers(600)), int(rng.integers(440))
        cv2.rectangle(frame, (x, y), (x + int(rng.integers(10, 80)), y + 30), colour, -1)
    return frame


def test_an_object_not_in_the_catalog_is_nomatch_by_default(kiosk) -> None:
    loop, port = kiosk([_unknown_object()] * 5)
    assert loop.cfg.min_score is None  # the bundle's calibrated threshold decides
    status, tag, _ = fields(port.ask("LOOKUP u"))
    assert (status, tag) == ("NOMATCH", "u")
    assert loop.last().verdict in ("weak", "none")


# -- quality gate --------------------------------------------------------------------


def test_dark_frame_is_retake_dark(kiosk) -> None:
    loop, port = kiosk([DARK] * 5)
    assert port.ask("LOOKUP 7") == "RETAKE 7 dark"
    assert loop.last().quality["luminance"] < loop.cfg.min_luminance
    assert loop.last_frame_jpeg() is not None  # the rejected frame can be inspected


def test_blurred_frame_is_retake_blurred(kiosk) -> None:
    loop, port = kiosk([BLURRED] * 5)
    assert port.ask("LOOKUP") == "RETAKE blurred"
    assert loop.last().quality["sharpness"] < loop.cfg.min_sharpness


def test_region_limits_the_search_to_part_of_the_frame(kiosk) -> None:
    side_by_side = np.hstack([cv2.resize(ROCKET, (320, 480)), cv2.resize(COFFEE, (320, 480))])
    # min_score set: this test is about the region, not the sample catalog's strict threshold
    loop, port = kiosk([side_by_side] * 5, region=(320, 0, 320, 480), min_score=0.5)
    assert fields(port.ask("LOOKUP 1"))[:3] == ["OK", "1", "coffee"]
    assert loop.last_frame_jpeg() is not None


def test_region_outside_the_frame_is_an_error_not_a_crash(kiosk) -> None:
    _, port = kiosk([COFFEE] * 5, region=(700, 0, 100, 100))
    assert port.ask("LOOKUP 1") == "ERR 1 badregion outside_frame"
    assert port.ask("PING") == "PONG"


# -- a hostile line ------------------------------------------------------------------


def test_garbage_partial_and_overlong_lines(kiosk) -> None:
    _, port = kiosk([COFFEE] * 5, serial={"max_line": 32})
    port.send(b"\xff\xfe\x00\x81\x93\n")
    assert port.read_line() == "ERR badline not_utf8"
    port.send(b"LOO")
    time.sleep(0.2)
    port.send(b"KUP 9\r\n")
    assert fields(port.read_line())[:3] == ["OK", "9", "coffee"]
    port.send(b"X" * 200 + b"\n")
    assert port.read_line() == "ERR toolong max=32"
    assert port.ask("FETCH 1") == "ERR unknown FETCH"
    assert port.ask("LOOKUP two words") == "ERR badrequest too_many_fields"
    assert fields(port.ask("LOOKUP 10"))[:3] == ["OK", "10", "coffee"]


def test_serial_adapter_unplugged_and_replugged(kiosk) -> None:
    loop, port = kiosk([COFFEE] * 5)
    assert fields(port.ask("LOOKUP 1"))[0] == "OK"
    port.unplug()
    assert wait_until(lambda: not loop.serial.link.connected, 3.0)
    time.sleep(0.3)  # a few failed reopen attempts
    port.replug()
    assert wait_until(lambda: loop.serial.link.connected, 3.0)
    assert fields(port.ask("LOOKUP 2"))[:3] == ["OK", "2", "coffee"]
    assert loop.health()["serial"]["opens"] == 2


# -- the camera ----------------------------------------------------------------------


def test_missing_camera_answers_nocamera_then_recovers(kiosk, tmp_path: Path) -> None:
    video = tmp_path / "later.avi"
    _, port = kiosk(video=video, wait_camera=False)
    assert port.ask("LOOKUP 1") == "RETAKE 1 nocamera"
    write_video(video, [COFFEE] * 5)
    assert fields(port.ask("PING"))  # the loop is alive meanwhile
    deadline = time.monotonic() + 5.0
    answer = None
    while time.monotonic() < deadline:
        answer = port.ask("LOOKUP 2")
        if answer != "RETAKE 2 nocamera":
            break
        time.sleep(0.1)
    assert fields(answer)[:3] == ["OK", "2", "coffee"]


def test_stalled_camera_answers_stale_and_keeps_running(kiosk, caplog) -> None:
    loop, port = kiosk(
        [COFFEE] * 3, fps=20, frame_timeout_ms=300, camera={"loop": False, "stall_seconds": 0.3}
    )
    assert wait_until(lambda: loop.grabber.health()["stalled"], 3.0)
    assert port.ask("LOOKUP 3") == "RETAKE 3 stale"
    assert port.ask("STATUS").startswith("STATUS ended")
    assert "camera stalled" in caplog.text


def test_max_frame_age_reuses_the_newest_frame(kiosk) -> None:
    loop, _ = kiosk([COFFEE] * 5, fps=5, max_frame_age_ms=1000)
    assert loop.grabber.decode_always  # a recent decoded frame must exist to be reused
    time.sleep(0.3)
    result = loop.trigger("test", "a")
    assert result.status == "ok" and result.frame["after_trigger_ms"] <= 0


def test_network_camera_that_stalls_is_reported_and_recovers(kiosk, caplog) -> None:
    camera = MjpegServer(COFFEE, fps=10)
    try:
        loop, port = kiosk(
            video=camera.url,
            frame_timeout_ms=300,
            camera={"stall_seconds": 0.5, "read_timeout_ms": 1500},
        )
        assert fields(port.ask("LOOKUP 1"))[:3] == ["OK", "1", "coffee"]
        camera.stall.set()
        assert wait_until(lambda: loop.grabber.health()["stalled"], 5.0)
        assert port.ask("LOOKUP 2") in ("RETAKE 2 stale", "RETAKE 2 nocamera")
        assert port.ask("PING") == "PONG"  # the loop itself never stalls
        camera.stall.clear()
        deadline, answer = time.monotonic() + 8.0, None
        while time.monotonic() < deadline:
            answer = port.ask("LOOKUP 3")
            if answer.startswith("OK"):
                break
            time.sleep(0.1)
        assert fields(answer)[:3] == ["OK", "3", "coffee"]
        assert "camera stalled" in caplog.text
    finally:
        camera.close()


# -- stability, debounce, min gap ----------------------------------------------------


def test_stable_frames_agree_on_a_still_scene(kiosk) -> None:
    loop, port = kiosk([COFFEE] * 5, fps=10, stable_frames=3)
    assert fields(port.ask("LOOKUP 1"))[:3] == ["OK", "1", "coffee"]
    assert loop.last().frames_used == 3


def test_stable_frames_refuse_a_changing_scene(kiosk) -> None:
    # Every frame differs from the one before; at 4 fps each search is done long before
    # the next frame, so three consecutive fresh frames always include both items.
    loop, port = kiosk([COFFEE, ROCKET] * 3, fps=4, stable_frames=3)
    assert port.ask("LOOKUP 1") == "RETAKE 1 unstable"
    assert loop.last().frames_used == 3


def test_bouncing_trigger_costs_one_lookup(kiosk) -> None:
    loop, port = kiosk([COFFEE] * 5, trigger={"debounce_ms": 500})
    port.send(b"LOOKUP a\nLOOKUP b\nLOOKUP c\n")
    answers = [fields(port.read_line()) for _ in range(3)]
    assert [a[:3] for a in answers] == [["OK", t, "coffee"] for t in "abc"]
    assert len({a[3] for a in answers}) == 1  # one lookup, one score
    assert loop.health()["lookups"] == 1


def test_min_gap_answers_busy_then_serves_again(kiosk) -> None:
    loop, port = kiosk([COFFEE] * 5, trigger={"debounce_ms": 0, "min_gap_ms": 800})
    assert fields(port.ask("LOOKUP 1"))[0] == "OK"
    status, tag, retry_ms = fields(port.ask("LOOKUP 2"))
    assert (status, tag) == ("BUSY", "2") and 0 < int(retry_ms) <= 800
    time.sleep(int(retry_ms) / 1000 + 0.05)
    assert fields(port.ask("LOOKUP 3"))[:2] == ["OK", "3"]
    assert loop.health()["lookups"] == 2


# -- automatic triggers --------------------------------------------------------------


def test_interval_trigger_announces_on_the_line(kiosk) -> None:
    loop, port = kiosk([COFFEE] * 5, trigger={"interval_seconds": 0.3})
    line = port.read_line(3.0)
    assert fields(line)[:3] == ["OK", "@interval", "coffee"]
    assert loop.last().source == "interval"


def test_motion_trigger_fires_when_the_scene_changes(kiosk) -> None:
    frames = [ROCKET] * 6 + [COFFEE] * 10  # loops: rocket -> coffee -> rocket ...
    loop, port = kiosk(
        frames,
        fps=10,
        serial={"announce": "all"},
        trigger={"motion": True, "motion_settle_ms": 200, "motion_fps": 10},
    )
    seen = []
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline and "coffee" not in seen:
        line = port.read_line(0.5)
        if line is not None:
            status, tag, *rest = fields(line)
            assert tag == "@motion"
            seen.append(rest[0] if status == "OK" else status)
    assert "coffee" in seen
    assert loop.last().source == "motion"


def test_no_motion_no_lookup(kiosk) -> None:
    loop, port = kiosk(
        [COFFEE] * 5, serial={"announce": "all"}, trigger={"motion": True, "motion_settle_ms": 0}
    )
    assert port.read_line(1.0) is None
    assert loop.health()["lookups"] == 0


# -- webhook -------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((self.headers["Content-Type"], json.loads(body)))
        self.server.release.wait(5.0)  # a slow receiver
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hook_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.bodies, server.release = [], threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def test_webhook_gets_the_json_without_delaying_the_answer(kiosk, hook_server) -> None:
    url = f"http://127.0.0.1:{hook_server.server_address[1]}/hook"
    loop, port = kiosk([COFFEE] * 5, webhook_url=url)
    assert fields(port.ask("LOOKUP w1"))[:3] == ["OK", "w1", "coffee"]
    assert wait_until(lambda: hook_server.bodies, 3.0)
    # The receiver is still holding its response, yet the serial answer already came.
    assert not hook_server.release.is_set()
    ctype, body = hook_server.bodies[0]
    assert ctype == "application/json"
    assert body["status"] == "ok" and body["item_id"] == "coffee" and body["tag"] == "w1"
    assert body["line"].startswith("OK w1 coffee ") and body["hits"][0]["id"] == "coffee"
    assert body["item"]["id"] == "coffee" and body["source"] == "serial"
    hook_server.release.set()
    assert wait_until(lambda: loop.webhook.stats["sent"] == 1, 3.0)


def test_catalog_lease_per_search(kiosk, catalog) -> None:
    """Inside the daemon the loop borrows the instance's catalog per search instead of
    owning one."""
    leases: list[str] = []

    @contextmanager
    def lease():
        leases.append("out")
        yield catalog
        leases.append("back")

    _, port = kiosk([COFFEE] * 5, lease=lease, stable_frames=2)
    assert fields(port.ask("LOOKUP 1"))[:3] == ["OK", "1", "coffee"]
    assert leases == ["out", "back"] * 2  # one lease per searched frame, always returned


# -- HTTP blueprint on a real waitress server ----------------------------------------


@pytest.fixture
def http_kiosk(kiosk):
    from flask import Flask
    from waitress import create_server

    from lensbox.device.capture.http import make_blueprint

    def make(frames, **kw):
        loop, port = kiosk(frames, **kw)
        app = Flask("test")
        app.register_blueprint(make_blueprint(loop))
        server = create_server(app, host="127.0.0.1", port=0, threads=2)
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        return loop, port, f"http://127.0.0.1:{server.effective_port}"

    servers: list = []
    yield make
    for s in servers:
        s.close()


def test_http_trigger_and_last(http_kiosk) -> None:
    _, port, base = http_kiosk([COFFEE] * 5)
    r = requests.get(f"{base}/v1/last", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "nolookup"
    r = requests.post(f"{base}/v1/trigger", json={"tag": "h1"}, timeout=10)
    assert r.status_code == 200
    result = r.json()
    assert (result["status"], result["item_id"], result["tag"], result["source"]) == (
        "ok",
        "coffee",
        "h1",
        "http",
    )
    last = requests.get(f"{base}/v1/last", timeout=5).json()
    assert last["lookup_id"] == result["lookup_id"] and last["line"] == result["line"]
    img = requests.get(f"{base}/v1/last?frame=1", timeout=5)
    assert img.headers["Content-Type"] == "image/jpeg"
    frame = cv2.imdecode(np.frombuffer(img.content, np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape == (480, 640, 3)
    assert abs(float(frame.mean()) - float(COFFEE.mean())) < 4
    assert requests.post(f"{base}/v1/trigger?tag=bad tag!", timeout=5).status_code == 400
    health = requests.get(f"{base}/v1/kiosk/health", timeout=5).json()
    assert health["camera"]["state"] == "ok" and health["lookups"] == 1
    # serial and HTTP triggers share one loop
    assert fields(port.ask("LOOKUP s1"))[:3] == ["OK", "s1", "coffee"]
    assert requests.get(f"{base}/v1/last", timeout=5).json()["source"] == "serial"


def test_http_busy_is_429_with_retry_after(http_kiosk) -> None:
    _, _, base = http_kiosk([COFFEE] * 5, trigger={"min_gap_ms": 2000})
    assert requests.post(f"{base}/v1/trigger", timeout=10).status_code == 200
    r = requests.post(f"{base}/v1/trigger", timeout=10)
    assert r.status_code == 429 and r.json()["status"] == "busy"
    assert 1 <= int(r.headers["Retry-After"]) <= 2
