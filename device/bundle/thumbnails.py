"""Small JPEG thumbnails of catalog photos, stored in the bundle (``thumbs.sqlite``).

A bundle carries descriptors and metadata, not photos: the source photos stay on the
workstation that built it. So that a device can still *show* what matched (the web page,
``GET /v1/items/<id>/image``, the Yandex / Clarifai ``url``), ``lensbox build`` stores one
thumbnail per item (its first photo): at most ``MAX_SIDE`` px on the long side, EXIF
orientation applied, metadata stripped, re-encoded until it fits ``MAX_BYTES``.

Each row also keeps the sha256 of the photo it was made from. A live change that gives an
item a new photo records that photo's hash in the item's ``content_sha256``; a thumbnail
whose hash differs is then stale and is not served (see :func:`thumbnail_for`).
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lensbox.device.bundle.format import THUMBNAILS

MAX_SIDE = 160
MAX_BYTES = 8 * 1024
QUALITIES = (82, 72, 62, 50, 40)
SCHEMA = "CREATE TABLE thumbs (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, jpeg BLOB NOT NULL)"


def make_thumbnail(data: bytes, max_side: int = MAX_SIDE, max_bytes: int = MAX_BYTES) -> bytes:
    """A JPEG of ``data`` (any format Pillow reads) no larger than ``max_bytes``.

    Raises ``ValueError`` when the photo cannot be read or not made small enough.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (max_side * 2, max_side * 2))  # JPEG: decode at 1/2..1/8 scale
            img.seek(0)
            upright = ImageOps.exif_transpose(img)
            if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
                rgba = upright.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                upright = flat
            rgb = upright.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read the photo for a thumbnail ({exc})") from exc
    side = max_side
    while side >= 32:
        small = rgb.copy()
        small.thumbnail((side, side), Image.Resampling.LANCZOS)
        for quality in QUALITIES:
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= max_bytes:
                return buf.getvalue()
        side = side * 3 // 4
    raise ValueError(f"no thumbnail under {max_bytes} bytes")


def write_thumbnails(path: Path, rows: Iterable[tuple[str, str, bytes]]) -> int:
    """Write ``(item id, photo sha256, jpeg)`` rows to a new ``thumbs.sqlite`` at ``path``."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(SCHEMA)
        conn.executemany("INSERT OR REPLACE INTO thumbs VALUES (?, ?, ?)", rows)
        count = conn.execute("SELECT COUNT(*) FROM thumbs").fetchone()[0]
        conn.commit()
    finally:
        conn.close()
    return int(count)


def read_thumbnail(bundle_path: Path, item_id: str) -> tuple[bytes, str] | None:
    """``(jpeg, sha256 of its photo)`` of an item, or None (no such row, or no file: a
    bundle built before thumbnails existed)."""
    path = Path(bundle_path) / THUMBNAILS
    if not path.is_file():
        return None
    conn = sqlite3.connect(f"file:{path.as_posix()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT jpeg, sha256 FROM thumbs WHERE id = ?", (item_id,)).fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
    return (bytes(row[0]), str(row[1])) if row else None


def thumbnail_for(bundle_path: Path, item: Mapping[str, Any]) -> bytes | None:
    """The item's thumbnail if the bundle has one made from the item's current photo."""
    found = read_thumbnail(bundle_path, str(item["id"]))
    if found is None:
        return None
    jpeg, sha = found
    current = item.get("content_sha256")
    if current and current != sha:
        return None  # the item got a new photo on the box since the bundle was built
    return jpeg
