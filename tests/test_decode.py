"""Every format the contracts accept decodes to the same upright RGB; bad input says why."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lensbox.device.imaging import DecodeLimits, ImageError, decode_image, load_image, probe_image


def _photo(w: int = 64, h: int = 48) -> np.ndarray:
    """A smooth gradient with a red square: lossy formats keep it recognisable."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], axis=2).astype(np.uint8)
    img[10:20, 10:20] = (255, 0, 0)
    return img


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "tolerance"),
    [("PNG", 0), ("BMP", 0), ("PPM", 0), ("TIFF", 0), ("WEBP", 12), ("JPEG", 12), ("GIF", 40)],
)
def test_every_contract_format_decodes_to_rgb(fmt: str, tolerance: int) -> None:
    src = _photo()
    data = _encode(
        Image.fromarray(src), fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})
    )
    rgb = decode_image(data)
    assert rgb.shape == src.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - src.astype(int)).mean() <= tolerance


def test_gif_uses_first_frame() -> None:
    red = Image.new("RGB", (32, 32), (255, 0, 0))
    blue = Image.new("RGB", (32, 32), (0, 0, 255))
    buf = io.BytesIO()
    red.save(buf, format="GIF", save_all=True, append_images=[blue])
    rgb = decode_image(buf.getvalue())
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50


def test_exif_orientation_is_applied() -> None:
    src = Image.fromarray(_photo(64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    rgb = decode_image(_encode(src, "JPEG", exif=exif.tobytes(), quality=95))
    assert rgb.shape[:2] == (64, 32)


def test_grayscale_alpha_and_16bit_become_rgb() -> None:
    gray = decode_image(_encode(Image.fromarray(np.full((20, 20), 77, np.uint8)), "PNG"))
    assert gray.shape == (20, 20, 3) and (gray == 77).all()
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent: composited on white
    assert (decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG")) == 255).all()
    deep = Image.fromarray(np.full((20, 20), 65535, np.uint16))
    assert (decode_image(_encode(deep, "PNG")) == 255).all()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height``: a decompression bomb's shape."""
    data = bytearray(_encode(Image.new("RGB", (4, 4)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"hello, not an image", "not_an_image"),
        (_png_claiming(20000, 20000), "too_many_pixels"),
        (_png_claiming(1, 1), "too_small"),
    ],
)
def test_bad_input_is_refused_with_a_reason(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as err:
        decode_image(data, source="q.png")
    assert err.value.code == code
    assert "q.png" in str(err.value)


def test_bomb_is_refused_from_the_header_alone() -> None:
    info = probe_image(_png_claiming(640, 480))
    assert (info.width, info.height) == (640, 480)
    with pytest.raises(ImageError, match="pixels"):
        probe_image(_png_claiming(100_000, 100_000))


def test_truncated_file_is_refused() -> None:
    data = _encode(Image.fromarray(_photo(200, 200)), "PNG")
    with pytest.raises(ImageError) as err:
        decode_image(data[: len(data) // 2])
    assert err.value.code == "truncated"


def test_limits_are_applied() -> None:
    data = _encode(Image.fromarray(_photo(64, 48)), "PNG")
    with pytest.raises(ImageError) as err:
        decode_image(data, DecodeLimits(max_bytes=10))
    assert err.value.code == "too_many_bytes"
    with pytest.raises(ImageError) as err:
        decode_image(data, DecodeLimits(min_side=100))
    assert err.value.code == "too_small"


def test_load_image_names_a_missing_file(tmp_path) -> None:
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "nope.jpg")
    assert err.value.code == "missing" and "nope.jpg" in str(err.value)
