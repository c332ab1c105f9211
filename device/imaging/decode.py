"""Decode any image the contracts accept into an RGB uint8 array.

Builder and device both call :func:`decode_image`, so a catalog photo and a query photo go
through the same conversion (EXIF orientation, alpha, grayscale, 16-bit) before the model.
Pillow decodes (OpenCV wheels lack GIF); the size is checked from the header first so a
decompression bomb is refused before a single pixel is allocated.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Formats named by the four contracts (Alibaba's list is the widest).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM", "MPO"})

# Pillow's own bomb check is a warning below 2x its limit; we enforce our own limit instead.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image that cannot be used, with a machine-readable reason.

    ``code`` is one of: ``empty``, ``not_an_image``, ``unsupported_format``, ``truncated``,
    ``too_small``, ``too_large``, ``too_many_pixels``, ``too_many_bytes``.
    The API layer maps codes onto each contract's own error names.
    """

    def __init__(self, code: str, message: str, source: str | None = None) -> None:
        self.code = code
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds checked before and after decoding.

    The defaults are generous for catalogs (a 50-megapixel camera photo passes); the HTTP
    contracts pass their own, tighter limits.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 60_000_000
    min_side: int = 8
    max_side: int = 16384


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, before decoding."""

    format: str
    width: int
    height: int


def _open(data: bytes, source: str | None) -> Image.Image:
    if not data:
        raise ImageError("empty", "the image is empty (0 bytes)", source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError(
            "not_an_image",
            "not a recognised image (expected JPEG, PNG, BMP, GIF, WebP, TIFF or PPM)",
            source,
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("truncated", f"cannot read the image header ({exc})", source) from exc
    if img.format not in SUPPORTED_FORMATS:
        raise ImageError(
            "unsupported_format",
            f"format {img.format} is not supported (use JPEG, PNG, BMP, GIF, WebP, TIFF or PPM)",
            source,
        )
    return img


def _check_size(info: ImageInfo, limits: DecodeLimits, source: str | None) -> None:
    w, h = info.width, info.height
    if w * h > limits.max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"{w}x{h} is {w * h} pixels, over the limit of {limits.max_pixels}; downscale it first",
            source,
        )
    if min(w, h) < limits.min_side:
        raise ImageError(
            "too_small",
            f"{w}x{h} is too small: each side must be at least {limits.min_side} px",
            source,
        )
    if max(w, h) > limits.max_side:
        raise ImageError(
            "too_large",
            f"{w}x{h} is too large: each side must be at most {limits.max_side} px",
            source,
        )


def _probe(data: bytes, limits: DecodeLimits, source: str | None) -> tuple[Image.Image, ImageInfo]:
    """Open lazily (header only) and apply ``limits``; the pixels are not read yet."""
    if len(data) > limits.max_bytes:
        raise ImageError(
            "too_many_bytes", f"{len(data)} bytes is over the limit of {limits.max_bytes}", source
        )
    img = _open(data, source)
    info = ImageInfo(img.format or "", *img.size)
    _check_size(info, limits, source)
    return img, info


def probe_image(
    data: bytes, limits: DecodeLimits = DEFAULT_LIMITS, source: str | None = None
) -> ImageInfo:
    """Read format and size from the header only, and apply ``limits``."""
    return _probe(data, limits, source)[1]


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8; alpha is composited on white like a web page."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        gray = ((arr - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(
    data: bytes, limits: DecodeLimits = DEFAULT_LIMITS, source: str | None = None
) -> np.ndarray:
    """Decode ``data`` into an ``(H, W, 3)`` RGB uint8 array, upright per EXIF.

    Raises :class:`ImageError` for anything that is not a usable image; never a bare
    Pillow or OpenCV exception, so callers can map errors onto their own contract.
    """
    return decode_with_info(data, limits, source)[0]


def decode_with_info(
    data: bytes, limits: DecodeLimits = DEFAULT_LIMITS, source: str | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """:func:`decode_image` plus what the header said (format, stored size), parsed once."""
    img, info = _probe(data, limits, source)
    try:
        img.seek(0)  # GIF / multi-page TIFF: the first frame.
        img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb = _to_rgb(img)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            "truncated", f"the image data is damaged or truncated ({exc})", source
        ) from exc
    # EXIF rotation can swap the sides, so the decoded size is checked again.
    _check_size(ImageInfo(info.format, rgb.shape[1], rgb.shape[0]), limits, source)
    return np.ascontiguousarray(rgb), info


def load_image(path: str | Path, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read and decode a file; errors name the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise ImageError("missing", "no such file", str(path)) from exc
    if size > limits.max_bytes:
        raise ImageError(
            "too_many_bytes", f"{size} bytes is over the limit of {limits.max_bytes}", str(path)
        )
    return decode_image(path.read_bytes(), limits, str(path))
