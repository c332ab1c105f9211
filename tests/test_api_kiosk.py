"""The kiosk loop inside the daemon (`[kiosk] in_daemon = true`): a real waitress server
whose camera is a real MJPG video file of a catalog photo, triggered over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import yaml

from tests.api_support import CATALOG, open_test_daemon, running_server, serve_config

KEY = "kiosk-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_trigger_and_last_on_the_daemon(bundle: Path, tmp_path: Path) -> None:
    from lensbox.device.capture.testing import wait_until, write_video

    coffee = cv2.imread(str(CATALOG / "coffee.jpg"))
    video = write_video(tmp_path / "camera.avi", [coffee] * 5, fps=10)
    sections = {
        "camera": {
            "source": str(video),
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.2,
        },
        "kiosk": {"in_daemon": True, "trigger": {"debounce_ms": 0, "min_gap_ms": 0}},
    }
    with running_server(
        {"default": bundle}, sections=sections, require_auth=True, api_keys=[KEY]
    ) as api:
        loop = api.app.extensions["lensbox"]["kiosk"]
        assert loop is not None
        assert wait_until(lambda: loop.grabber.connected, 5.0)
        url = api.url

        # The kiosk routes take the same API key as the native API.
        denied = requests.post(f"{url}/v1/trigger", timeout=10)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthenticated"
        none_yet = requests.get(f"{url}/v1/last", headers=AUTH, timeout=10)
        assert none_yet.status_code == 404 and none_yet.json()["error"]["code"] == "nolookup"

        resp = requests.post(f"{url}/v1/trigger", json={"tag": "t1"}, headers=AUTH, timeout=30)
        assert resp.status_code == 200, resp.text
        result = resp.json()
        assert result["status"] == "ok", result
        assert result["item_id"] == "coffee" and result["tag"] == "t1"
        assert result["hits"][0]["id"] == "coffee" and result["verdict"] == "match"

        last = requests.get(f"{url}/v1/last", headers=AUTH, timeout=10)
        assert last.status_code == 200
        assert last.json()["lookup_id"] == result["lookup_id"]
        assert last.json()["item_id"] == "coffee"

        frame = requests.get(f"{url}/v1/last", params={"frame": "1"}, headers=AUTH, timeout=10)
        assert frame.status_code == 200
        assert frame.headers["Content-Type"] == "image/jpeg"
        assert frame.headers["X-Lookup-Id"] == str(result["lookup_id"])
        image = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (480, 640)

        health = requests.get(f"{url}/v1/kiosk/health", headers=AUTH, timeout=10).json()
        assert health["lookups"] == 1 and health["last"]["status"] == "ok"

        # The HTTP API keeps working beside it (the two share the interpreter pool).
        search = requests.post(
            f"{url}/v1/search",
            data=(CATALOG / "coffee.jpg").read_bytes(),
            headers={**AUTH, "Content-Type": "image/jpeg"},
            timeout=30,
        )
        assert search.status_code == 200 and search.json()["hits"][0]["id"] == "coffee"
        spec = yaml.safe_load(requests.get(f"{url}/v1/openapi.yaml", timeout=10).text)
        assert {"/v1/trigger", "/v1/last", "/v1/kiosk/health"} <= spec["paths"].keys()
    # Shut down with the server: the camera is released, no lookup runs any more.
    assert api.app.extensions["lensbox"]["kiosk"] is None
    assert loop.trigger("test").status == "error"
    frames = loop.grabber.health()["frames"]
    time.sleep(0.4)  # the 10 fps video would have given ~4 more frames
    assert loop.grabber.health()["frames"] == frames


def test_kiosk_instance_must_be_served(bundle: Path) -> None:
    """A startup error (``lensbox serve`` prints it and exits 1), before any camera opens."""
    config = serve_config({"default": bundle}, {"kiosk": {"in_daemon": True, "instance": "nope"}})
    with pytest.raises(ValueError, match=r"kiosk\.instance 'nope' is not a served bundle"):
        open_test_daemon(config)


def test_no_kiosk_routes_unless_asked(bundle: Path) -> None:
    with running_server({"default": bundle}) as api:
        assert api.app.extensions["lensbox"]["kiosk"] is None
        resp = requests.post(f"{api.url}/v1/trigger", timeout=10)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "route_not_found"
