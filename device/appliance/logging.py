"""Structured logs for journald, with the standard library only.

* :class:`JsonFormatter` — one JSON object per line (``ts, level, logger, msg`` plus any
  ``extra={...}`` fields and the traceback). Good on stderr under systemd (journald stores
  each line as MESSAGE and `journalctl -o cat | jq` reads it back) and in any log shipper.
* :class:`JournalHandler` — journald's native protocol over its datagram socket, what
  python-systemd would do: every ``extra`` key becomes a journal field you can filter on
  (``journalctl -u lensbox LENSBOX_INSTANCE=default``), PRIORITY is the syslog level.

:func:`setup_logging` picks: "auto" uses the journal when stderr is connected to journald
($JOURNAL_STREAM matches stderr) and JSON lines otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any, TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on odd ``extra`` values (they become text)."""

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        for key, value in extra_fields(record).items():
            out.setdefault(key, _jsonable(value))
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


_FIELD_OK = re.compile(r"[^A-Z0-9_]")


def journal_field_name(key: str) -> str:
    """journald field names: upper case letters, digits, '_'; not starting with '_' or a
    digit (those are trusted fields journald sets itself)."""
    name = _FIELD_OK.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "X_" + name
    return name[:64]


def encode_journal_fields(fields: Mapping[str, Any]) -> bytes:
    """The native protocol: ``KEY=value\\n``, or for values with a newline
    ``KEY\\n<u64 little-endian length><value>\\n``."""
    out = bytearray()
    for key, value in fields.items():
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        name = key.encode("ascii")
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Send records to journald's native socket with structured fields."""

    def __init__(
        self,
        socket_path: str = JOURNAL_SOCKET,
        identifier: str = "lensbox",
        prefix: str = "LENSBOX_",
    ) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.identifier = identifier
        self.prefix = prefix
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        fields: dict[str, Any] = {
            "MESSAGE": message,
            "PRIORITY": _priority(record.levelno),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
            "THREAD_NAME": record.threadName,
        }
        for key, value in extra_fields(record).items():
            text = value if isinstance(value, str) else json.dumps(_jsonable(value))
            fields[journal_field_name(self.prefix + key)] = text
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = encode_journal_fields(self.fields(record))
            try:
                self._sock.sendto(data, self.socket_path)
            except OSError as exc:
                if exc.errno != 90:  # EMSGSIZE: send a shortened message instead
                    raise
                short = dict(self.fields(record))
                short["MESSAGE"] = str(short["MESSAGE"])[:32000] + " [truncated]"
                self._sock.sendto(encode_journal_fields(short), self.socket_path)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def stderr_is_journal(
    environ: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> bool:
    """True when systemd connected our stderr to journald ($JOURNAL_STREAM = dev:inode)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> logging.Handler:
    """Configure the root logger once (replacing earlier lensbox handlers); returns it."""
    stream = stream or sys.stderr
    if fmt == "auto":
        use_journal = stderr_is_journal(environ, stream) and os.path.exists(journal_socket)
        fmt = "journal" if use_journal else "json"
    handler: logging.Handler
    if fmt == "journal":
        handler = JournalHandler(journal_socket)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(
            JsonFormatter()
            if fmt == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    handler.set_name("lensbox")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "lensbox"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
