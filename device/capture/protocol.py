"""The serial line protocol (PROTOCOL.md): parse request lines, split bytes, format answers.

Pure functions and small classes with no I/O, so every rule of the protocol is testable
without a port. Every answer has a fixed number of fields after its status word, and a
tagged answer has exactly one more — a microcontroller can parse it with one ``sscanf``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

TAG_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,16}$")
RESERVED = ("PING", "STATUS")


@dataclass(frozen=True)
class Request:
    """One parsed request line; ``kind`` 'error' carries the ERR code and detail to answer."""

    kind: str  # lookup | ping | status | error
    tag: str | None = None
    code: str = ""
    detail: str = ""


def parse_request(text: str, token: str) -> Request | None:
    """A decoded line -> Request, or None for a blank line (ignored, never answered).

    Words are case-insensitive. With an empty ``token`` any line other than PING/STATUS is
    a lookup (a sensor that just sends "1" works) and carries no tag.
    """
    words = text.split()
    if not words:
        return None
    head = words[0].upper()
    if head in RESERVED:
        return _with_tag(head.lower(), words)
    if not token:
        return Request("lookup")
    if head != token.upper():
        return Request("error", code="unknown", detail=token_of(words[0]))
    return _with_tag("lookup", words)


def _with_tag(kind: str, words: list[str]) -> Request:
    if len(words) > 2:
        return Request("error", code="badrequest", detail="too_many_fields")
    if len(words) == 1:
        return Request(kind)
    if not TAG_RE.match(words[1]):
        return Request("error", code="badtag", detail="tag_is_1-16_of_[A-Za-z0-9_.-]")
    return Request(kind, tag=words[1])


def token_of(text: str, limit: int = 48) -> str:
    """Any text -> one printable ASCII field (spaces become '_'), so field counts hold."""
    out = "".join(c if 33 <= ord(c) < 127 else "_" for c in text.strip())[:limit]
    return out or "-"


def quote_id(item_id: str) -> str:
    """Item ids may hold spaces or non-ASCII; percent-encode those (and '%') like a URL."""
    return quote(item_id, safe="!\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def answer(status: str, tag: str | None, *fields: str) -> str:
    """'OK' + tag + fields -> 'OK 42 coffee 0.830' (no newline; the link adds it)."""
    parts = [status]
    if tag:
        parts.append(tag)
    parts += [token_of(f) if status == "ERR" else f for f in fields]
    return " ".join(parts)


def decode_line(raw: bytes) -> tuple[str | None, str]:
    """Bytes of one line -> (text, '') or (None, reason) for non-UTF-8 or control bytes.

    A wrong baud rate shows up here: it turns every byte into noise that is rarely valid
    UTF-8 and almost always contains control characters.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not_utf8"
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text):
        return None, "control_bytes"
    return text, ""


class TooLong:
    """Marker the splitter emits once for a line that overran ``max_line``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"TooLong({self.size})"


class LineSplitter:
    """Bytes as they arrive -> complete lines; CR, LF and CRLF all end a line.

    A partial line waits in the buffer for the rest. A line longer than ``max_line`` is
    reported once (TooLong) and everything up to its end is dropped, so a stream with no
    newline at all (wrong baud) cannot grow memory.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False
        self._dropped = 0

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        out: list[bytes | TooLong] = []
        start = 0
        for match in re.finditer(rb"[\r\n]", data):
            self._take(data[start : match.start()], out, final=True)
            start = match.end()
        self._take(data[start:], out, final=False)
        return out

    def _take(self, piece: bytes, out: list[bytes | TooLong], final: bool) -> None:
        if self._discarding:
            self._dropped += len(piece)
        else:
            self._buf += piece
            if len(self._buf) > self.max_line:
                self._discarding, self._dropped = True, len(self._buf)
                self._buf.clear()
                out.append(TooLong(self._dropped))
        if final:
            if not self._discarding and self._buf:
                out.append(bytes(self._buf))
            self._buf.clear()
            self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._buf)
