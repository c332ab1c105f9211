"""The live-change journal: append-only, length-prefixed, CRC32-checked, fsync'd per record.

A change is acknowledged only after its record is on disk, so after a power cut the journal
holds every acknowledged change. Layout::

    b"LBXJ" u16 version u16 0                      file magic (8 bytes)
    record*                                        the first record is the header
    record = u32 payload_len, u32 crc32(payload), payload
    payload = u32 json_len, json (utf-8), blob     blob: raw little-endian array bytes

The header record holds ``{"lineage", "base_seq", "generation", "created"}``; every change
record holds ``{"seq", "op", ...}`` with ``seq`` = previous + 1, starting at ``base_seq + 1``.

Only the last record can be torn by a crash (it was never acknowledged); it is detected
(short read, bad CRC, zero fill) and dropped. A bad record *followed by* good data is real
corruption and raises :class:`JournalCorrupt` rather than silently losing changes.

Truncation never edits the file in place: a new generation is written aside, fsync'd and
renamed over the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.bundle.atomic import fsync_dir

MAGIC = b"LBXJ" + struct.pack("<HH", 1, 0)
FRAME = struct.Struct("<II")
JSON_LEN = struct.Struct("<I")
MAX_RECORD = 256 * 1024 * 1024


class JournalError(Exception):
    """The journal cannot be used as it is; the message says why and what to do."""


class JournalCorrupt(JournalError):
    """Damage inside the journal (not a torn tail): acknowledged changes may be affected."""


@dataclass
class JournalRecord:
    seq: int
    op: str
    data: dict[str, Any]
    blob: np.ndarray | None = None


@dataclass
class JournalContents:
    header: dict[str, Any]
    records: list[JournalRecord] = field(default_factory=list)
    valid_bytes: int = 0  # everything after this offset is a torn tail
    torn_bytes: int = 0

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq if self.records else int(self.header["base_seq"])


# -- encoding -----------------------------------------------------------------------------
def _encode_payload(meta: dict[str, Any], blob: np.ndarray | None) -> bytes:
    meta = dict(meta)
    raw = b""
    if blob is not None:
        arr = np.ascontiguousarray(blob, dtype=np.dtype(blob.dtype).newbyteorder("<"))
        meta["blob"] = {"dtype": arr.dtype.str, "shape": list(arr.shape)}
        raw = arr.tobytes()
    text = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return JSON_LEN.pack(len(text)) + text + raw


def encode_record(meta: dict[str, Any], blob: np.ndarray | None = None) -> bytes:
    payload = _encode_payload(meta, blob)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> tuple[dict[str, Any], np.ndarray | None]:
    (n,) = JSON_LEN.unpack_from(payload, 0)
    meta = json.loads(payload[4 : 4 + n].decode("utf-8"))
    spec = meta.pop("blob", None)
    blob = None
    if spec is not None:
        blob = np.frombuffer(payload[4 + n :], dtype=np.dtype(spec["dtype"]))
        blob = blob.reshape(spec["shape"]).copy()
    return meta, blob


# -- reading ------------------------------------------------------------------------------
def _frames(data: bytes, start: int):
    """Yield (offset, payload) of whole, CRC-valid records; stop at a torn tail.

    Returns (via StopIteration value) the offset where valid data ends.
    """
    pos = start
    size = len(data)
    while pos < size:
        remaining = size - pos
        if remaining < FRAME.size:
            return pos
        length, crc = FRAME.unpack_from(data, pos)
        end = pos + FRAME.size + length
        if length == 0 or length > MAX_RECORD or end > size:
            if length == 0 and any(data[pos:]):
                raise JournalCorrupt(f"zero-length record at byte {pos} followed by data")
            if length > MAX_RECORD and end <= size:
                raise JournalCorrupt(f"impossible record length {length} at byte {pos}")
            return pos  # a record whose bytes never fully reached the disk
        payload = data[pos + FRAME.size : end]
        if zlib.crc32(payload) != crc:
            if end == size or not any(data[end:]):
                return pos  # the last record is torn (or the tail is zero-filled)
            raise JournalCorrupt(
                f"CRC mismatch in the record at byte {pos}, with {size - end} bytes of "
                "records after it: the journal is damaged"
            )
        yield pos, payload
        pos = end
    return pos


def read_journal(path: Path) -> JournalContents | None:
    """Parse ``path``; ``None`` if it does not exist. Validates the seq chain."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise JournalCorrupt(f"{path}: not a lensbox journal (bad magic)")
    gen = _frames(data, len(MAGIC))
    contents: JournalContents | None = None
    expected = 0
    end = len(MAGIC)
    try:
        while True:
            pos, payload = next(gen)
            meta, blob = _decode_payload(payload)
            end = pos + FRAME.size + len(payload)
            if contents is None:
                if meta.get("kind") != "header":
                    raise JournalCorrupt(f"{path}: first record is not a header")
                contents = JournalContents(header=meta)
                expected = int(meta["base_seq"]) + 1
                continue
            seq = int(meta.pop("seq"))
            if seq != expected:
                raise JournalCorrupt(f"{path}: record seq {seq} where {expected} was expected")
            contents.records.append(JournalRecord(seq, meta.pop("op"), meta, blob))
            expected += 1
    except StopIteration as stop:
        end = stop.value if stop.value is not None else end
    if contents is None:
        raise JournalCorrupt(f"{path}: the header record is missing or damaged")
    contents.valid_bytes = end
    contents.torn_bytes = len(data) - end
    return contents


# -- writing ------------------------------------------------------------------------------
def _header(lineage: str, base_seq: int, generation: int) -> dict[str, Any]:
    return {
        "kind": "header",
        "lineage": lineage,
        "base_seq": int(base_seq),
        "generation": int(generation),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _record_meta(rec: JournalRecord) -> dict[str, Any]:
    return {**rec.data, "seq": rec.seq, "op": rec.op}


def write_journal_file(
    path: Path,
    lineage: str,
    base_seq: int,
    generation: int,
    records: list[JournalRecord] | tuple = (),
) -> None:
    """Write a whole journal generation aside, fsync it, rename it into place, fsync the dir.

    A crash leaves either the previous generation or this one under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.g{generation}.tmp")
    parts = [MAGIC, encode_record(_header(lineage, base_seq, generation))]
    parts += [encode_record(_record_meta(r), r.blob) for r in records]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        _write_all(fd, b"".join(parts))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


class JournalWriter:
    """Appends records to an open journal; one writer per file (the caller holds a lock).

    ``append`` returns only once the record is durable; on any failure the file is cut back
    to its previous length so a half-written record can never precede a later one.
    """

    def __init__(self, path: Path, contents: JournalContents) -> None:
        self.path = Path(path)
        self.lineage = str(contents.header["lineage"])
        self.base_seq = int(contents.header["base_seq"])
        self.generation = int(contents.header.get("generation", 0))
        self.last_seq = contents.last_seq
        self._fd = os.open(self.path, os.O_WRONLY)
        if contents.torn_bytes:
            os.ftruncate(self._fd, contents.valid_bytes)
            os.fsync(self._fd)
        self.size = contents.valid_bytes

    def append(
        self, op: str, data: dict[str, Any], blob: np.ndarray | None = None
    ) -> JournalRecord:
        if self._fd < 0:
            raise JournalError(f"{self.path}: journal is closed")
        rec = JournalRecord(self.last_seq + 1, op, dict(data), blob)
        frame = encode_record(_record_meta(rec), blob)
        try:
            os.lseek(self._fd, self.size, os.SEEK_SET)
            _write_all(self._fd, frame)
            _sync(self._fd)
        except BaseException:
            self._cut_back()
            raise
        self.size += len(frame)
        self.last_seq = rec.seq
        return rec

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fd, self.size)
            os.fsync(self._fd)
        except OSError as exc:  # the disk is failing: nothing more may be appended
            self.close()
            raise JournalError(f"{self.path}: cannot undo a failed append ({exc})") from exc

    def rewrite(self, base_seq: int, records: list[JournalRecord]) -> None:
        """Start a new generation that begins after ``base_seq`` and holds ``records``."""
        generation = self.generation + 1
        write_journal_file(self.path, self.lineage, base_seq, generation, records)
        self.close()
        contents = read_journal(self.path)
        assert contents is not None
        self.__init__(self.path, contents)  # type: ignore[misc]

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0
