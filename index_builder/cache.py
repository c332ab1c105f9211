"""Embeddings cached by content hash, so a rebuild only embeds new or changed photos.

Keyed by (model sha256, pooling, views, decode scale, resize method, photo sha256): change
any of them and the entry no longer matches. The camera views the learned whitening embeds
are cached the same way, with their seed, count and renderer version in the key. One SQLite
file, written only by the build's main process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lensbox.device.embedding.model import RESIZE_METHOD
from lensbox.device.features.local import DESCRIPTOR_BYTES, LocalFeatures, LocalSettings
from lensbox.device.imaging.frames import pipeline_sides
from lensbox.index_builder.calibrate import RENDERER_VERSION


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lensbox"


@dataclass
class CachedEmbedding:
    pooled: np.ndarray  # (V, C) float32
    concepts: list[dict]
    width: int
    height: int
    format: str


class EmbeddingCache:
    def __init__(self, directory: Path | None) -> None:
        self.conn: sqlite3.Connection | None = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(directory / "embeddings.sqlite")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, shape TEXT, pooled BLOB, "
            "concepts TEXT, width INTEGER, height INTEGER, format TEXT)"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS local (key TEXT PRIMARY KEY, xy BLOB, descriptors BLOB, "
            "width INTEGER, height INTEGER)"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS camera_views (key TEXT PRIMARY KEY, shape TEXT, "
            "pooled BLOB)"
        )

    @staticmethod
    def views_key(photo_key: str, job: tuple) -> str:
        """``photo_key``: the photo's :meth:`key` (model, pooling, decode, content); ``job``:
        its ``workers.embed_camera_views`` arguments less the path (seed, count, views)."""
        raw = f"views|{photo_key}|{job!r}|renderer={RENDERER_VERSION}"
        return hashlib.sha256(raw.encode()).hexdigest()

    def _row(self, query: str, key: str) -> tuple | None:
        """The row ``query`` (one ``?``: the key) finds, or None (also without a cache)."""
        if self.conn is None:
            return None
        return self.conn.execute(query, (key,)).fetchone()

    def get_views(self, key: str) -> np.ndarray | None:
        """The pooled views (count, V, C) as float32, or None."""
        rec = self._row("SELECT shape, pooled FROM camera_views WHERE key = ?", key)
        return None if rec is None else _unpack(rec[0], rec[1])

    def put_views(self, key: str, pooled: np.ndarray) -> None:
        if self.conn is None:
            return
        self.conn.execute(
            "INSERT OR REPLACE INTO camera_views VALUES (?, ?, ?)",
            (key, json.dumps(list(pooled.shape)), pooled.astype(np.float16).tobytes()),
        )

    @staticmethod
    def local_key(settings: LocalSettings, content_sha: str) -> str:
        # The decode's sides: keypoints found on a reduced-scale decode (decode_reduced).
        raw = f"local|{sorted(settings.as_dict().items())}|{_decode_tag(settings)}|{content_sha}"
        return hashlib.sha256(raw.encode()).hexdigest()

    def get_local(self, key: str) -> LocalFeatures | None:
        rec = self._row("SELECT xy, descriptors, width, height FROM local WHERE key = ?", key)
        if rec is None:
            return None
        xy = np.frombuffer(rec[0], np.float32).reshape(-1, 2).copy()
        desc = np.frombuffer(rec[1], np.uint8).reshape(-1, DESCRIPTOR_BYTES).copy()
        if len(xy) != len(desc):
            return None
        return LocalFeatures(xy, desc, (rec[2], rec[3]))

    def put_local(self, key: str, value: LocalFeatures) -> None:
        if self.conn is None:
            return
        self.conn.execute(
            "INSERT OR REPLACE INTO local VALUES (?, ?, ?, ?, ?)",
            (key, value.xy.astype(np.float32).tobytes(), value.desc.tobytes(), *value.size),
        )

    @staticmethod
    def key(
        model_sha: str,
        pooling: str,
        views: tuple[str, ...],
        content_sha: str,
        local: LocalSettings | None = None,
    ) -> str:
        """``local``: the build's local-feature settings, which set the scale large photos
        are decoded at (so embeddings from a full-size decode are not reused)."""
        raw = (
            f"{model_sha}|{pooling}|{','.join(views)}|{_decode_tag(local)}|"
            f"resize={RESIZE_METHOD}|{content_sha}"
        )
        return hashlib.sha256(raw.encode()).hexdigest()

    def get(self, key: str) -> CachedEmbedding | None:
        rec = self._row(
            "SELECT shape, pooled, concepts, width, height, format FROM emb WHERE key = ?", key
        )
        if rec is None:
            return None
        return CachedEmbedding(_unpack(rec[0], rec[1]), json.loads(rec[2]), *rec[3:])

    def put(self, key: str, value: CachedEmbedding) -> None:
        if self.conn is None:
            return
        self.conn.execute(
            "INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                json.dumps(list(value.pooled.shape)),
                value.pooled.astype(np.float16).tobytes(),
                json.dumps(value.concepts),
                value.width,
                value.height,
                value.format,
            ),
        )

    def commit(self) -> None:
        if self.conn is not None:
            self.conn.commit()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.commit()
            self.conn.close()
            self.conn = None


def as_stored(pooled: np.ndarray) -> np.ndarray:
    """``pooled`` as the cache gives it back (float16, as float32): fresh embeddings are
    rounded the same way, so a cold and a warm build write the same bundle."""
    return pooled.astype(np.float16).astype(np.float32)


def _unpack(shape: str, blob: bytes) -> np.ndarray:
    """A float16 array stored as (its shape as JSON, its bytes), as float32."""
    return np.frombuffer(blob, dtype=np.float16).reshape(json.loads(shape)).astype(np.float32)


def _decode_tag(local: LocalSettings | None) -> str:
    long_side, short_side = pipeline_sides(local)
    return f"decode=reduced:{long_side}x{short_side}"
