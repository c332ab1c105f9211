"""Decode any image the contracts accept into an RGB uint8 array.

Builder and device both call :func:`decode_image`, so a catalog photo and a query photo go
through the same conversion (EXIF orientation, alpha, grayscale, 16-bit) before the model.
Pillow decodes (OpenCV wheels lack GIF); the size is checked from the header first so a
decompression bomb is refused before a single pixel is allocated.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

EXIF_ORIENTATION = 0x0112

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
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)  # one copy of the pixels, not two


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
    decoded = _decode(data, limits, source, 1.0)
    return decoded.rgb, decoded.info


@dataclass(frozen=True)
class DecodedImage:
    """Pixels, perhaps decoded at a reduced scale, and the size of the full image.

    ``size`` is the full-resolution (width, height), upright: what the image *is*, and the
    frame every pixel coordinate a caller reports or receives (regions, boxes, keypoints)
    is given in; :attr:`scale` maps it onto ``rgb``.
    """

    rgb: np.ndarray
    info: ImageInfo
    size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Decoded pixels per full-resolution pixel along x and y; (1.0, 1.0) when full."""
        height, width = self.rgb.shape[:2]
        return width / self.size[0], height / self.size[1]

    @property
    def reduced(self) -> bool:
        return (self.rgb.shape[1], self.rgb.shape[0]) != self.size


def decode_reduced(
    data: bytes,
    limits: DecodeLimits = DEFAULT_LIMITS,
    source: str | None = None,
    *,
    long_side: int | None = None,
    short_side: int | None = None,
    region: tuple[int, int] | None = None,
) -> DecodedImage:
    """:func:`decode_image`, at a reduced scale where that loses nothing the pipeline uses.

    A JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8 scale by the decoder itself
    (DCT scaling, Pillow's ``draft``), several times faster than a full decode and a
    full-size resize after it. The scale is the smallest that keeps the long side at least
    ``long_side`` and the short side at least ``short_side`` (defaults: twice the local
    features' ``max_side``, the largest size anything downstream looks at, and the model's
    input size; see :func:`~lensbox.device.imaging.frames.pipeline_sides`). ``region`` (width,
    height in full-resolution pixels), when the caller will crop one, keeps those sizes too.
    Other formats, and JPEGs not large enough for a reduction, decode in full as
    :func:`decode_image` does. The header is parsed once; ``limits`` apply to the
    full-resolution size.
    """
    if long_side is None or short_side is None:
        from lensbox.device.imaging.frames import pipeline_sides

        default_long, default_short = pipeline_sides()
        long_side = default_long if long_side is None else long_side
        short_side = default_short if short_side is None else short_side
    return _decode(data, limits, source, None, (long_side, short_side), region)


def min_scale(
    size: tuple[int, int], sides: tuple[int, int], region: tuple[int, int] | None = None
) -> float:
    """The smallest scale (<= 1) keeping the image's, and ``region``'s, long and short sides
    at least ``sides`` = (long, short) pixels (or at full size when they are smaller)."""
    need = 0.0
    for w, h in (size, region) if region is not None else (size,):
        if min(w, h) <= 0:
            return 1.0
        need = max(need, sides[0] / max(w, h), sides[1] / min(w, h))
    return min(1.0, need)


def _draft_request(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size a decode at ``scale`` asks the JPEG decoder for (both decoders use it)."""
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


def _dct_factor(size: tuple[int, int], scale: float) -> int:
    """The reduction Pillow's draft picks for ``_draft_request``: the largest k in (8, 4, 2)
    with k <= min(w // rw, h // rh), so each decoded side, ceil(side / k), stays at least
    the requested one (1 when ``scale`` is 0.5 or more: no draft)."""
    if scale >= 0.5:
        return 1
    (w, h), (rw, rh) = size, _draft_request(size, scale)
    return next((k for k in (8, 4, 2) if k <= min(w // rw, h // rh)), 1)


def _draft(img: Image.Image, scale: float) -> None:
    """Ask the JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) of at least ``scale``."""
    if scale >= 0.5 or img.format not in ("JPEG", "MPO"):
        return
    img.draft(None, _draft_request(img.size, scale))


def _decode(
    data: bytes,
    limits: DecodeLimits,
    source: str | None,
    scale: float | None,
    sides: tuple[int, int] | None = None,
    region: tuple[int, int] | None = None,
) -> DecodedImage:
    img, info = _probe(data, limits, source)
    try:
        img.seek(0)  # GIF / multi-page TIFF: the first frame.
        full = (info.width, info.height)
        if scale is None and sides is not None:
            scale = min_scale(full, sides, region)  # long/short sides: orientation-free
        orientation = img.getexif().get(EXIF_ORIENTATION)
        turned = orientation in (5, 6, 7, 8)
        rgb = _decode_jpeg(img, data, scale or 1.0, orientation)
        if rgb is None:
            if scale is not None and scale < 1.0:
                _draft(img, scale)
            img.load()
            # In place: an upright photo is not copied (a copy is 0.6 ms of a 640x480 query).
            ImageOps.exif_transpose(img, in_place=True)
            rgb = _to_rgb(img)
        if turned:
            full = (info.height, info.width)  # the EXIF rotation swapped the sides
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            "truncated", f"the image data is damaged or truncated ({exc})", source
        ) from exc
    # EXIF rotation can swap the sides, so the (upright, full-resolution) size is checked again.
    _check_size(ImageInfo(info.format, *full), limits, source)
    return DecodedImage(np.ascontiguousarray(rgb), info, full)


# EXIF orientation -> the numpy steps that turn stored pixels upright (ImageOps.exif_transpose).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _decode_jpeg(img: Image.Image, data: bytes, scale: float, orientation: int | None):
    """A colour JPEG decoded by OpenCV straight into an RGB array, or None (Pillow decodes).

    The same libjpeg-turbo decode as Pillow's, pixel for pixel at every DCT scale (tested),
    without Pillow's copy of the pixels into numpy: 0.4 ms of a 640x480 query's 1.9. Only
    for plain colour JPEGs that end in an EOI marker: OpenCV pads a truncated file with grey
    instead of failing, and converts CMYK differently, so those stay with Pillow."""
    if img.format != "JPEG" or img.mode != "RGB" or not data.endswith(b"\xff\xd9"):
        return None
    w, h = img.size
    k = _dct_factor(img.size, scale)
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
    flag = flags.get(k, cv2.IMREAD_REDUCED_COLOR_8) | cv2.IMREAD_IGNORE_ORIENTATION
    out = cv2.imdecode(np.frombuffer(data, np.uint8), flag | cv2.IMREAD_COLOR_RGB)
    if out is None or out.shape != (math.ceil(h / k), math.ceil(w / k), 3):
        return None
    turn = _UPRIGHT.get(orientation or 1)
    return turn(out) if turn is not None else out


def load_image(path: str | Path, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read and decode a file; errors name the file."""
    return decode_image(_read(path, limits), limits, str(path))


def _read(path: str | Path, limits: DecodeLimits) -> bytes:
    """A file's bytes, refused before reading when it is over the byte limit."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise ImageError("missing", "no such file", str(path)) from exc
    if size > limits.max_bytes:
        raise ImageError(
            "too_many_bytes", f"{size} bytes is over the limit of {limits.max_bytes}", str(path)
        )
    return path.read_bytes()


def load_reduced(
    path: str | Path,
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    long_side: int | None = None,
    short_side: int | None = None,
    region: tuple[int, int] | None = None,
) -> DecodedImage:
    """:func:`load_image` through :func:`decode_reduced`; errors name the file."""
    return decode_reduced(
        _read(path, limits),
        limits,
        str(path),
        long_side=long_side,
        short_side=short_side,
        region=region,
    )
