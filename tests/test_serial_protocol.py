"""The serial line protocol (device/capture/PROTOCOL.md) without a port: parsing, line
splitting, decoding and the exact answer lines."""

from __future__ import annotations

import pytest

from lensbox.device.capture.protocol import (
    LineSplitter,
    TooLong,
    decode_line,
    parse_request,
    quote_id,
)
from lensbox.device.capture.result import LookupResult, busy, error

# -- requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind", "tag", "code"),
    [
        ("LOOKUP", "lookup", None, ""),
        ("lookup 42", "lookup", "42", ""),
        ("  LOOKUP\tshelf-3.b  ", "lookup", "shelf-3.b", ""),
        ("PING", "ping", None, ""),
        ("ping 7", "ping", "7", ""),
        ("STATUS x", "status", "x", ""),
        ("LOOKUP 4 2", "error", None, "badrequest"),
        ("LOOKUP @motion", "error", None, "badtag"),
        ("LOOKUP " + "9" * 17, "error", None, "badtag"),
        ("FETCH 1", "error", None, "unknown"),
    ],
)
def test_parse_request(line: str, kind: str, tag: str | None, code: str) -> None:
    req = parse_request(line, "LOOKUP")
    assert req is not None
    assert (req.kind, req.tag, req.code) == (kind, tag, code)


def test_blank_lines_are_ignored_not_answered() -> None:
    assert parse_request("", "LOOKUP") is None
    assert parse_request("  \t ", "LOOKUP") is None


def test_empty_token_makes_any_line_a_lookup_but_keeps_ping() -> None:
    assert parse_request("1", "").kind == "lookup"
    assert parse_request("motion detected", "").kind == "lookup"
    assert parse_request("PING", "").kind == "ping"


def test_custom_token() -> None:
    assert parse_request("scan 5", "SCAN").tag == "5"
    unknown = parse_request("LOOKUP 5", "SCAN")
    assert (unknown.kind, unknown.code, unknown.detail) == ("error", "unknown", "LOOKUP")


# -- bytes -> lines ------------------------------------------------------------------


def test_partial_lines_wait_for_their_newline() -> None:
    s = LineSplitter(64)
    assert s.feed(b"LOO") == []
    assert s.feed(b"KUP 4") == []
    assert s.pending == 8
    assert s.feed(b"2\nPI") == [b"LOOKUP 42"]
    assert s.feed(b"NG\r\n") == [b"PING"]
    assert s.pending == 0


def test_cr_lf_and_crlf_all_end_a_line() -> None:
    assert LineSplitter(64).feed(b"A\rB\nC\r\nD\n") == [b"A", b"B", b"C", b"D"]


def test_overlong_line_is_reported_once_and_dropped_to_its_end() -> None:
    s = LineSplitter(16)
    out = s.feed(b"x" * 40)
    assert len(out) == 1 and isinstance(out[0], TooLong)
    assert s.pending == 0
    assert s.feed(b"y" * 1000) == []  # still the same line: nothing more, memory bounded
    assert s.pending == 0
    assert s.feed(b"zz\nLOOKUP 1\n") == [b"LOOKUP 1"]


def test_stream_without_newlines_cannot_grow_memory() -> None:
    s = LineSplitter(256)
    noise = bytes(range(14, 255)) * 4  # no CR or LF: what a wrong baud rate can look like
    reports = [p for _ in range(100) for p in s.feed(noise)]
    assert sum(isinstance(p, TooLong) for p in reports) == 1
    assert s.pending <= 256


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfeLOOKUP", "not_utf8"),
        (b"LOOK\x00UP", "control_bytes"),
        (b"\x1b[A", "control_bytes"),
    ],
)
def test_undecodable_lines(raw: bytes, reason: str) -> None:
    assert decode_line(raw) == (None, reason)


def test_utf8_lines_decode() -> None:
    assert decode_line("LOOKUP café".encode()) == ("LOOKUP café", "")


# -- answers -------------------------------------------------------------------------


def test_answer_lines() -> None:
    ok = LookupResult("ok", "serial", "42", item_id="coffee", score=0.8312)
    assert ok.line() == "OK 42 coffee 0.831"
    untagged = LookupResult("ok", "serial", None, item_id="coffee", score=0.8)
    assert untagged.line() == "OK coffee 0.800"
    assert LookupResult("nomatch", "serial", "7", score=0.3).line() == "NOMATCH 7 0.300"
    assert LookupResult("retake", "serial", None, reason="dark").line() == "RETAKE dark"
    assert busy("serial", "3", 120.2).line() == "BUSY 3 121"
    err = error("serial", None, "internal", "Value Error: x")
    assert err.line() == "ERR internal Value_Error:_x"


def test_ids_with_spaces_stay_one_field() -> None:
    line = LookupResult("ok", "serial", "1", item_id="red mug 50%", score=0.9).line()
    assert line == "OK 1 red%20mug%2050%25 0.900"
    assert quote_id("caffè") == "caff%C3%A8"


@pytest.mark.parametrize(
    "result",
    [
        LookupResult("ok", "s", item_id="a b", score=0.5),
        LookupResult("nomatch", "s", score=0.1),
        LookupResult("retake", "s", reason="blurred"),
        busy("s", None, 5),
        error("s", None, "badline", "not utf8 at all"),
    ],
)
def test_tag_adds_exactly_one_field(result: LookupResult) -> None:
    """A client that tags its requests can always find the tag as the second field."""
    untagged = result.line().split(" ")
    tagged = result.retagged("s", "T1").line().split(" ")
    assert tagged == [untagged[0], "T1", *untagged[1:]]


def test_result_json_has_the_line_and_an_iso_time() -> None:
    data = LookupResult("ok", "http", "9", 3, item_id="coffee", score=0.7).to_json()
    assert data["line"] == "OK 9 coffee 0.700"
    assert data["at"].endswith("Z") and data["lookup_id"] == 3
