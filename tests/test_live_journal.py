"""The live-change journal: durable appends, torn tails dropped, corruption refused."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest

from lensbox.device.live import journal as jr
from lensbox.device.live.journal import (
    FRAME,
    MAGIC,
    JournalCorrupt,
    JournalWriter,
    read_journal,
    write_journal_file,
)


def _new(path, lineage="L1", base_seq=0):
    write_journal_file(path, lineage, base_seq, 0)
    contents = read_journal(path)
    return JournalWriter(path, contents)


def _fill(path, n=3):
    w = _new(path)
    blobs = []
    for i in range(n):
        blob = np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32)
        blobs.append(blob)
        w.append("put", {"id": f"item-{i}", "fields": {"title": f"t{i}"}}, blob)
    w.append("delete", {"ids": ["item-0"]})
    w.close()
    return blobs


def test_records_round_trip_with_seq_chain_and_blobs(tmp_path):
    path = tmp_path / "j"
    blobs = _fill(path)
    contents = read_journal(path)
    assert contents.header["lineage"] == "L1" and contents.header["base_seq"] == 0
    assert [r.seq for r in contents.records] == [1, 2, 3, 4]
    assert [r.op for r in contents.records] == ["put", "put", "put", "delete"]
    for rec, blob in zip(contents.records, blobs):
        np.testing.assert_array_equal(rec.blob, blob)
        assert rec.blob.dtype == np.float32
    assert contents.records[3].data == {"ids": ["item-0"]}
    assert contents.torn_bytes == 0 and contents.valid_bytes == path.stat().st_size


def test_missing_journal_reads_as_none(tmp_path):
    assert read_journal(tmp_path / "nope") is None


def test_every_torn_cut_of_the_last_record_is_dropped(tmp_path):
    path = tmp_path / "j"
    _fill(path)
    full = path.read_bytes()
    last_start = _offset_of_last(full)
    for cut in range(last_start + 1, len(full)):
        path.write_bytes(full[:cut])
        got = read_journal(path)
        assert [r.seq for r in got.records] == [1, 2, 3], cut
        assert got.valid_bytes == last_start and got.torn_bytes == cut - last_start


def _offset_of_last(data: bytes) -> int:
    pos, last = len(MAGIC), len(MAGIC)
    while pos < len(data):
        (length, _crc) = FRAME.unpack_from(data, pos)
        last = pos
        pos += FRAME.size + length
    return last


def test_zero_filled_tail_is_a_torn_tail(tmp_path):
    path = tmp_path / "j"
    _fill(path)
    size = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b"\0" * 300)
    got = read_journal(path)
    assert len(got.records) == 4 and got.valid_bytes == size and got.torn_bytes == 300


def test_writer_truncates_a_torn_tail_before_appending(tmp_path):
    path = tmp_path / "j"
    _fill(path)
    with open(path, "ab") as fh:
        fh.write(FRAME.pack(1000, 123) + b"partial")
    contents = read_journal(path)
    w = JournalWriter(path, contents)
    rec = w.append("delete", {"ids": ["item-1"]})
    w.close()
    assert rec.seq == 5
    again = read_journal(path)
    assert [r.seq for r in again.records] == [1, 2, 3, 4, 5] and again.torn_bytes == 0


def test_damage_followed_by_good_records_is_corruption_not_a_tail(tmp_path):
    path = tmp_path / "j"
    _fill(path)
    data = bytearray(path.read_bytes())
    second = _offset_of_nth(bytes(data), 2)  # header is record 0
    data[second + FRAME.size + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="CRC mismatch"):
        read_journal(path)


def _offset_of_nth(data: bytes, n: int) -> int:
    pos = len(MAGIC)
    for _ in range(n):
        (length, _crc) = FRAME.unpack_from(data, pos)
        pos += FRAME.size + length
    return pos


def test_seq_gap_is_corruption(tmp_path):
    path = tmp_path / "j"
    write_journal_file(path, "L1", 0, 0)
    with open(path, "ab") as fh:
        fh.write(jr.encode_record({"seq": 2, "op": "delete", "ids": ["x"]}))
    with pytest.raises(JournalCorrupt, match="seq 2 where 1"):
        read_journal(path)


def test_bad_magic_is_refused(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b"not a journal at all")
    with pytest.raises(JournalCorrupt, match="magic"):
        read_journal(path)


def test_rewrite_starts_a_new_generation_with_only_the_tail(tmp_path):
    path = tmp_path / "j"
    w = _new(path)
    recs = [w.append("delete", {"ids": [f"i{i}"]}) for i in range(5)]
    inode = path.stat().st_ino
    w.rewrite(3, recs[3:])
    assert path.stat().st_ino != inode  # written aside and renamed, never edited in place
    w.append("delete", {"ids": ["i5"]})
    w.close()
    got = read_journal(path)
    assert got.header["base_seq"] == 3 and got.header["generation"] == 1
    assert [r.seq for r in got.records] == [4, 5, 6]
    assert not list(tmp_path.glob(".j.*.tmp"))


def test_failed_append_is_cut_back_and_not_acknowledged(tmp_path, monkeypatch):
    path = tmp_path / "j"
    w = _new(path)
    w.append("delete", {"ids": ["a"]})
    size = path.stat().st_size
    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jr.os, "write", half_then_fail)
    with pytest.raises(OSError):
        w.append("delete", {"ids": ["b"]})
    monkeypatch.setattr(jr.os, "write", real_write)
    assert path.stat().st_size == size and w.last_seq == 1
    w.append("delete", {"ids": ["c"]})
    w.close()
    got = read_journal(path)
    assert [(r.seq, r.data["ids"]) for r in got.records] == [(1, ["a"]), (2, ["c"])]


def test_crc_covers_the_payload(tmp_path):
    frame = jr.encode_record({"seq": 1, "op": "x"})
    length, crc = struct.unpack_from("<II", frame)
    assert length == len(frame) - 8 and crc == zlib.crc32(frame[8:])
