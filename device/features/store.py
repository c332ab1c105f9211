"""The bundle's local-feature part: catalog keypoints, the vocabulary and the inverted file.

Flat files next to the rest of the bundle, memory-mapped on the device (a 100k-photo
catalog's features stay on disk until a candidate is verified)::

    local.desc.u8        (F, 32) ORB descriptors, grouped by photo
    local.xy.f32         (F, 2) keypoint positions in the photo's pixels
    local.photos.i64     (P+1,) offsets of each photo's features
    local.items.i32      (P,) item row of each photo (-1: its item was removed on the box
                         and the bundle compacted; the photo stays until the next build)
    local.sizes.i32      (P, 2) width, height of each photo
    local.vocab.u8       (B + B*B, 32) vocabulary tree: top level, then leaves
    local.inv.offsets.i64  (K+1,)  inverted file: word -> postings
    local.inv.photos.i32   postings' photo
    local.inv.weights.f32  postings' tf-idf weight
    local.idf.f32        (K,) inverse document frequency of each word

The manifest's ``local`` section records the detector settings, counts and format version;
a bundle without it (or with a damaged part) is served by the global descriptor alone.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lensbox.device.features.inverted import InvertedIndex
from lensbox.device.features.local import DESCRIPTOR_BYTES, LocalFeatures, LocalSettings
from lensbox.device.features.vocabulary import Vocabulary, branching_for

log = logging.getLogger("lensbox.features")

LOCAL_FORMAT = 1
FILES = {
    "desc": ("local.desc.u8", np.uint8),
    "xy": ("local.xy.f32", np.float32),
    "photos": ("local.photos.i64", np.int64),
    "items": ("local.items.i32", np.int32),
    "sizes": ("local.sizes.i32", np.int32),
    "vocab": ("local.vocab.u8", np.uint8),
    "inv_offsets": ("local.inv.offsets.i64", np.int64),
    "inv_photos": ("local.inv.photos.i32", np.int32),
    "inv_weights": ("local.inv.weights.f32", np.float32),
    "idf": ("local.idf.f32", np.float32),
}
BYTES_PER_FEATURE = DESCRIPTOR_BYTES + 8


class LocalIndexError(Exception):
    """The bundle's local-feature files are missing, truncated or inconsistent."""


@dataclass
class LocalIndex:
    """What verification and the visual-word channel need, read-only and memory-mapped."""

    settings: LocalSettings
    desc: np.ndarray
    xy: np.ndarray
    photo_offsets: np.ndarray
    photo_items: np.ndarray
    sizes: np.ndarray
    vocabulary: Vocabulary
    inverted: InvertedIndex

    @property
    def photos(self) -> int:
        return len(self.photo_items)

    def features(self, photo: int) -> LocalFeatures:
        lo, hi = int(self.photo_offsets[photo]), int(self.photo_offsets[photo + 1])
        w, h = (int(v) for v in self.sizes[photo])
        return LocalFeatures(np.asarray(self.xy[lo:hi]), np.asarray(self.desc[lo:hi]), (w, h))

    def photos_of(self, rows: np.ndarray) -> dict[int, list[int]]:
        """Item row -> its photos, for the rows asked."""
        wanted = np.isin(self.photo_items, rows)
        out: dict[int, list[int]] = {}
        for photo in np.flatnonzero(wanted).tolist():
            out.setdefault(int(self.photo_items[photo]), []).append(photo)
        return out

    def word_scores(self, query: LocalFeatures) -> np.ndarray:
        """TF-IDF cosine of the query with every catalog photo: (photos,)."""
        return self.inverted.scores(self.vocabulary.assign(query.desc))


def copy_local_index(source: Path, folder: Path, photo_items: np.ndarray) -> None:
    """Copy ``source``'s local-feature files into ``folder`` with new item rows per photo
    (compaction renumbers rows; a removed item's photos get -1). The vocabulary and the
    inverted file stay valid: they index photos, not items."""
    for key, (name, dtype) in FILES.items():
        if key == "items":
            np.ascontiguousarray(photo_items, dtype).tofile(folder / name)
        else:
            shutil.copyfile(source / name, folder / name)


def write_local_index(
    folder: Path,
    features: list[LocalFeatures],
    photo_items: np.ndarray,
    settings: LocalSettings,
) -> dict:
    """Write the local-feature files for ``features`` (one per photo); returns the
    manifest's ``local`` section."""
    counts = np.array([len(f) for f in features], np.int64)
    offsets = np.zeros(len(features) + 1, np.int64)
    offsets[1:] = np.cumsum(counts)
    desc = (
        np.concatenate([f.desc for f in features])
        if offsets[-1]
        else np.zeros((0, DESCRIPTOR_BYTES), np.uint8)
    )
    xy = np.concatenate([f.xy for f in features]) if offsets[-1] else np.zeros((0, 2), np.float32)
    branching = branching_for(len(desc))
    vocab = Vocabulary.fit(desc, branching) if len(desc) else None
    if vocab is None:
        vocab = Vocabulary(
            np.zeros((branching, DESCRIPTOR_BYTES), np.uint8),
            np.zeros((branching, branching, DESCRIPTOR_BYTES), np.uint8),
        )
    words = [vocab.assign(f.desc) for f in features]
    inverted = InvertedIndex.build(words, len(vocab))
    arrays = {
        "desc": desc,
        "xy": xy,
        "photos": offsets,
        "items": np.asarray(photo_items, np.int32),
        "sizes": np.array([f.size for f in features], np.int32).reshape(-1, 2),
        "vocab": np.concatenate([vocab.top, vocab.leaves.reshape(-1, DESCRIPTOR_BYTES)]),
        "inv_offsets": inverted.offsets,
        "inv_photos": inverted.photos,
        "inv_weights": inverted.weights,
        "idf": inverted.idf,
    }
    for key, (name, dtype) in FILES.items():
        np.ascontiguousarray(arrays[key], dtype).tofile(folder / name)
    return {
        "format_version": LOCAL_FORMAT,
        **settings.as_dict(),
        "photos": len(features),
        "features": int(offsets[-1]),
        "branching": branching,
        "words": len(vocab),
        "postings": len(inverted.photos),
        "bytes_per_photo": round(
            sum((folder / name).stat().st_size for name, _ in FILES.values())
            / max(1, len(features))
        ),
    }


def _map(folder: Path, key: str, count: int, width: int = 0) -> np.ndarray:
    name, dtype = FILES[key]
    path = folder / name
    itemsize = np.dtype(dtype).itemsize * max(1, width)
    size = path.stat().st_size
    if size != count * itemsize:
        raise LocalIndexError(f"{name}: {size} bytes, expected {count * itemsize}")
    if count == 0:
        return np.zeros((0, width) if width else 0, dtype)
    arr = np.memmap(path, dtype=dtype, mode="r")
    return arr.reshape(count, width) if width else arr


def open_local_index(folder: Path, manifest: dict, item_count: int) -> LocalIndex | None:
    """The bundle's local index, or None (with a log line) when it has none or it is damaged.

    Never raises: a bundle whose feature files are broken still serves by global ranking.
    """
    section = manifest.get("local")
    if not section:
        return None
    try:
        return _open(Path(folder), section, item_count)
    except (LocalIndexError, OSError, ValueError, KeyError, TypeError) as exc:
        log.warning(
            "%s: local features unusable, ranking by the global descriptor: %s", folder, exc
        )
        return None


def _open(folder: Path, section: dict, item_count: int) -> LocalIndex:
    if int(section.get("format_version", 0)) != LOCAL_FORMAT:
        raise LocalIndexError(f"local format {section.get('format_version')} not understood")
    photos, feats = int(section["photos"]), int(section["features"])
    b, words = int(section["branching"]), int(section["words"])
    if photos < 0 or feats < 0 or b < 2 or words != b * b:
        raise LocalIndexError("inconsistent counts in the manifest's local section")
    offsets = np.asarray(_map(folder, "photos", photos + 1))
    items = np.asarray(_map(folder, "items", photos))
    if (
        offsets[0] != 0
        or offsets[-1] != feats
        or np.any(np.diff(offsets) < 0)
        or (photos and (items.min() < -1 or items.max() >= item_count))
    ):
        raise LocalIndexError("photo offsets or items out of range")
    inv_offsets = np.asarray(_map(folder, "inv_offsets", words + 1))
    postings = int(inv_offsets[-1])
    if inv_offsets[0] != 0 or np.any(np.diff(inv_offsets) < 0):
        raise LocalIndexError("inverted file offsets out of order")
    inv_photos = _map(folder, "inv_photos", postings)
    if postings and (int(inv_photos.min()) < 0 or int(inv_photos.max()) >= photos):
        raise LocalIndexError("inverted file names a photo that does not exist")
    vocab = np.asarray(_map(folder, "vocab", b + b * b, DESCRIPTOR_BYTES))
    return LocalIndex(
        settings=LocalSettings.from_manifest(section),
        desc=_map(folder, "desc", feats, DESCRIPTOR_BYTES),
        xy=_map(folder, "xy", feats, 2),
        photo_offsets=offsets,
        photo_items=items,
        sizes=np.asarray(_map(folder, "sizes", photos, 2)),
        vocabulary=Vocabulary(vocab[:b].copy(), vocab[b:].reshape(b, b, DESCRIPTOR_BYTES).copy()),
        inverted=InvertedIndex(
            inv_offsets,
            inv_photos,
            _map(folder, "inv_weights", postings),
            np.asarray(_map(folder, "idf", words)),
            photos,
        ),
    )
