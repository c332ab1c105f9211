"""sd_notify over a real AF_UNIX datagram socket; JSON and native-journal logging."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import struct
import time
import uuid

import pytest

from lensbox.device.appliance.logging import (
    JournalHandler,
    JsonFormatter,
    encode_journal_fields,
    setup_logging,
)
from lensbox.device.appliance.sdnotify import Heartbeat, Notifier


@pytest.fixture()
def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def _recv_all(sock: socket.socket, wait: float = 0.0) -> list[str]:
    out = []
    sock.settimeout(wait or 0.05)
    while True:
        try:
            out.append(sock.recv(65536).decode())
        except (TimeoutError, socket.timeout):
            return out


def test_messages_reach_the_socket(listener):
    path, sock = listener
    n = Notifier(environ={"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("serving 1 bundle")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=serving 1 bundle"
    n.status("compacting")
    assert sock.recv(4096).decode() == "STATUS=compacting"
    n.watchdog()
    assert sock.recv(4096).decode() == "WATCHDOG=1"
    n.reloading()
    assert sock.recv(4096).decode().startswith("RELOADING=1\n")
    n.stopping()
    assert sock.recv(4096).decode() == "STOPPING=1\nSTATUS=stopping"
    n.close()


def test_abstract_socket_address():
    name = f"lensbox-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert Notifier(f"@{name}").ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_without_systemd_everything_is_a_quiet_no_op(tmp_path):
    n = Notifier(environ={})
    assert not n.enabled and n.ready() is False and n.watchdog() is False
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert gone.ready() is False  # no exception either


def test_watchdog_interval_honours_watchdog_pid():
    me = str(os.getpid())
    assert Notifier(environ={"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 30.0
    assert (
        Notifier(environ={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}).watchdog_interval()
        == 30.0
    )
    assert (
        Notifier(environ={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval()
        is None
    )
    assert Notifier(environ={}).watchdog_interval() is None


def test_heartbeat_pets_only_while_healthy(listener):
    path, sock = listener
    state = {"ok": True}
    notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    hb = Heartbeat.from_environment(notifier, lambda: state["ok"])
    assert hb is not None and hb.interval == 15.0  # WatchdogSec / 2
    assert hb.beat() and sock.recv(4096) == b"WATCHDOG=1"
    state["ok"] = False
    assert not hb.beat()
    assert _recv_all(sock) == ["STATUS=unhealthy: health check failed; not petting the watchdog"]
    state["ok"] = True
    assert hb.beat() and _recv_all(sock) == ["WATCHDOG=1"]
    assert (hb.beats, hb.missed) == (2, 1)


def test_heartbeat_thread_keeps_petting_until_stopped(listener):
    path, sock = listener
    hb = Heartbeat(Notifier(path), 0.02).start()
    got: list[str] = []
    deadline = time.monotonic() + 5
    sock.settimeout(0.5)
    while got.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, socket.timeout):
            got.append(sock.recv(4096).decode())
    hb.stop()
    assert got.count("WATCHDOG=1") >= 3
    _recv_all(sock)  # the thread has ended: this drains and returns
    assert _recv_all(sock, wait=0.1) == []  # stopped means stopped


def test_heartbeat_treats_a_raising_check_as_unhealthy(listener):
    path, sock = listener

    def boom() -> bool:
        raise RuntimeError("journal disk gone")

    hb = Heartbeat(Notifier(path), 1.0, boom)
    assert hb.beat() is False
    assert "journal disk gone" in sock.recv(4096).decode()


def test_json_formatter_one_object_per_line_with_extras():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"service": "lensbox"}))
    log = logging.getLogger("lensbox.test.json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning(
            "swapped %s", "bundle", extra={"instance": "default", "items": 18, "odd": object()}
        )
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "swapped bundle" and first["level"] == "warning"
    assert first["instance"] == "default" and first["items"] == 18
    assert first["service"] == "lensbox" and first["ts"].endswith("Z")
    assert isinstance(first["odd"], str)
    assert "ValueError: bad\nthing" in second["exc"]


def _parse_native(data: bytes) -> dict[str, str]:
    fields, pos = {}, 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        line = data[pos:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            pos = nl + 1
        else:
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 9
            fields[line.decode()] = data[start : start + size].decode()
            assert data[start + size : start + size + 1] == b"\n"
            pos = start + size + 1
    return fields


def test_journal_handler_speaks_the_native_protocol(listener):
    path, sock = listener
    handler = JournalHandler(path)
    log = logging.getLogger("lensbox.test.journal")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("line one\nline two", extra={"instance": "shop", "stats": {"items": 3}})
    finally:
        log.removeHandler(handler)
        handler.close()
    fields = _parse_native(sock.recv(65536))
    assert fields["MESSAGE"] == "line one\nline two"
    assert fields["PRIORITY"] == "3" and fields["SYSLOG_IDENTIFIER"] == "lensbox"
    assert fields["LENSBOX_INSTANCE"] == "shop"
    assert json.loads(fields["LENSBOX_STATS"]) == {"items": 3}
    assert fields["LOGGER"] == "lensbox.test.journal" and fields["CODE_FUNC"]


def test_encoding_handles_binary_safe_fields():
    data = encode_journal_fields({"A": "x", "B": "1\n2"})
    assert data == b"A=x\nB\n" + struct.pack("<Q", 3) + b"1\n2\n"


def test_setup_logging_auto_picks_the_journal_only_when_stderr_is_journald(tmp_path, listener):
    path, sock = listener
    stream = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115
    try:
        st = os.fstat(stream.fileno())
        root = logging.getLogger()
        level = root.level
        h = setup_logging(
            "auto",
            "info",
            stream,
            {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
            journal_socket=path,
        )
        assert isinstance(h, JournalHandler)
        logging.getLogger("lensbox.t").info("to the journal")
        assert _parse_native(sock.recv(65536))["MESSAGE"] == "to the journal"
        h = setup_logging("auto", "info", stream, {"JOURNAL_STREAM": "1:2"}, journal_socket=path)
        assert isinstance(h.formatter, JsonFormatter)
        assert [x for x in root.handlers if x.get_name() == "lensbox"] == [h]  # replaced
        root.removeHandler(h)
        root.setLevel(level)
    finally:
        stream.close()
