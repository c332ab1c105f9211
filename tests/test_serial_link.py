"""SerialLink on a real pseudo-terminal: lines, partial writes, garbage, unplug and re-plug."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lensbox.device.capture.serial_link import LineEvent, SerialLink
from lensbox.device.capture.testing import PtyPort, wait_until
from lensbox.device.config.camera import SerialConfig


class Collector:
    def __init__(self) -> None:
        self.events: list[LineEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: LineEvent) -> None:
        with self._lock:
            self.events.append(event)

    def wait_for(self, count: int, timeout: float = 3.0) -> list[LineEvent]:
        assert wait_until(lambda: len(self.events) >= count, timeout), self.events
        return list(self.events)


@pytest.fixture
def pty_link(tmp_path: Path):
    port = PtyPort(tmp_path / "ttyKIOSK")
    got = Collector()
    cfg = SerialConfig(
        port=str(port.path), max_line=32, reconnect_min_seconds=0.05, reconnect_max_seconds=0.2
    )
    link = SerialLink(cfg, got).start()
    assert wait_until(lambda: link.connected, 3.0)
    yield port, link, got
    link.stop()
    port.close()


def test_lines_arrive_whole_even_when_written_in_pieces(pty_link) -> None:
    port, _, got = pty_link
    port.send(b"LOO")
    time.sleep(0.15)  # longer than the read timeout: the reader sees a partial line
    port.send(b"KUP 4")
    time.sleep(0.15)
    port.send(b"2\r\nPING\n")
    events = got.wait_for(2)
    assert [e.text for e in events] == ["LOOKUP 42", "PING"]
    assert events[0].at <= events[1].at


def test_garbage_and_overlong_lines_are_reported_and_reading_goes_on(pty_link) -> None:
    port, link, got = pty_link
    port.send(b"\xff\xfe\x80\x81\n")  # what a wrong baud rate produces
    port.send(b"A" * 100 + b"\n")  # longer than max_line=32
    port.send(b"LOOKUP 1\n")
    events = got.wait_for(3)
    assert [(e.error, e.detail) for e in events[:2]] == [
        ("badline", "not_utf8"),
        ("toolong", "max=32"),
    ]
    assert events[2].text == "LOOKUP 1"
    assert link.health()["bad_lines"] == 1 and link.health()["too_long"] == 1


def test_answers_are_written_one_line_each(pty_link) -> None:
    port, link, _ = pty_link
    assert link.send("OK 1 coffee 0.800")
    assert link.send("PONG")
    assert [port.read_line(2.0), port.read_line(2.0)] == ["OK 1 coffee 0.800", "PONG"]


def test_unplugged_adapter_is_reopened_when_it_comes_back(pty_link, caplog) -> None:
    port, link, got = pty_link
    port.send(b"LOOKUP 1\n")
    got.wait_for(1)
    port.unplug()
    assert wait_until(lambda: not link.connected, 3.0)
    assert not link.send("OK lost 0.5")  # nowhere to write: reported, not raised
    port.replug()
    assert wait_until(lambda: link.connected, 3.0)
    port.send(b"LOOKUP 2\n")
    assert got.wait_for(2)[1].text == "LOOKUP 2"
    assert link.send("OK 2 coffee 0.900")
    assert port.read_line(2.0) == "OK 2 coffee 0.900"
    assert link.health()["opens"] == 2
    assert "lost" in caplog.text


def test_port_missing_at_start_is_opened_once_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "ttyLATE"
    got = Collector()
    link = SerialLink(
        SerialConfig(port=str(path), reconnect_min_seconds=0.05, reconnect_max_seconds=0.1), got
    ).start()
    try:
        time.sleep(0.3)
        assert not link.connected
        assert "could not open" in link.health()["error"]
        port = PtyPort(path)
        try:
            assert wait_until(lambda: link.connected, 3.0)
            port.send(b"PING\n")
            assert got.wait_for(1)[0].text == "PING"
        finally:
            port.close()
    finally:
        link.stop()
