"""Every format the contracts accept decodes to the same upright RGB; bad input says why."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
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


# -- reduced-scale decode (decode_reduced) ------------------------------------------------
def _big_jpeg(w: int, h: int, orientation: int | None = None) -> bytes:
    """A large camera-like JPEG: the sample photo upscaled, so it has real structure."""
    from tests.conftest import SAMPLE_QUERIES

    img = Image.open(SAMPLE_QUERIES / "coffee-photo.jpg").convert("RGB").resize((w, h))
    if orientation is None:
        return _encode(img, "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(img, "JPEG", quality=90, exif=exif.tobytes())


def test_a_large_jpeg_decodes_at_reduced_scale_never_below_the_sides() -> None:
    from lensbox.device.features.local import LocalSettings
    from lensbox.device.imaging.decode import decode_reduced
    from lensbox.device.imaging.frames import pipeline_sides

    data = _big_jpeg(4000, 3000)
    out = decode_reduced(data)  # the pipeline's sides: 2 x ORB's max_side, the model's input
    h, w = out.rgb.shape[:2]
    assert out.reduced and (w, h) == (2000, 1500)  # libjpeg's 1/2 scale
    assert max(w, h) >= pipeline_sides()[0] >= LocalSettings().max_side and min(w, h) >= 224
    assert out.size == (4000, 3000) and out.info.width == 4000
    assert out.scale == (0.5, 0.5)
    small = decode_reduced(data, long_side=640, short_side=224)
    assert small.rgb.shape[:2] == (750, 1000) and small.scale == (0.25, 0.25)
    for long_side in (300, 640, 900, 1600, 2500):
        got = decode_reduced(data, long_side=long_side, short_side=224).rgb.shape
        assert max(got[:2]) >= long_side, (long_side, got)
    # The same picture as a full decode shrunk to that size.
    for reduced in (out, small):
        h, w = reduced.rgb.shape[:2]
        full = cv2.resize(decode_image(data), (w, h), interpolation=cv2.INTER_AREA)
        assert np.abs(full.astype(int) - reduced.rgb.astype(int)).mean() < 3


def test_small_images_and_other_formats_decode_in_full() -> None:
    from lensbox.device.imaging.decode import decode_reduced

    small = _big_jpeg(1200, 900)  # halving it would leave less than 640 px
    for data in (small, _encode(Image.fromarray(_photo(2000, 1600)), "PNG")):
        out = decode_reduced(data)
        assert not out.reduced and out.scale == (1.0, 1.0)
        np.testing.assert_array_equal(out.rgb, decode_image(data))


def test_a_region_keeps_its_own_pixels() -> None:
    from lensbox.device.imaging.decode import decode_reduced

    data = _big_jpeg(4000, 3000)
    whole = decode_reduced(data, long_side=640, short_side=224)
    part = decode_reduced(data, long_side=640, short_side=224, region=(1000, 800))
    assert part.scale[0] > whole.scale[0]
    assert 1000 * part.scale[0] >= 640 and 800 * part.scale[1] >= 224


def test_reduced_decode_is_upright_and_reports_the_upright_full_size() -> None:
    from lensbox.device.imaging.decode import decode_reduced

    data = _big_jpeg(4000, 3000, orientation=6)  # stored landscape, shown portrait
    out = decode_reduced(data, long_side=640, short_side=224)
    assert out.size == (3000, 4000) and out.rgb.shape[:2] == (1000, 750)
    full = cv2.resize(decode_image(data), (750, 1000), interpolation=cv2.INTER_AREA)
    assert np.abs(full.astype(int) - out.rgb.astype(int)).mean() < 3


def test_limits_apply_to_the_full_size_even_when_reduced() -> None:
    from lensbox.device.imaging.decode import decode_reduced

    data = _big_jpeg(4000, 3000)
    with pytest.raises(ImageError) as exc:
        decode_reduced(data, DecodeLimits(max_pixels=4_000_000))
    assert exc.value.code == "too_many_pixels"


def _pillow_decode(data: bytes, k: int) -> np.ndarray:
    """The reference: Pillow's own decode at DCT scale 1/k, turned upright by Pillow."""
    from PIL import ImageOps

    img = Image.open(io.BytesIO(data))
    if k > 1:
        img.draft(None, (img.size[0] // k, img.size[1] // k))
    img.load()
    return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("progressive", [False, True])
def test_opencv_decodes_colour_jpegs_exactly_as_pillow_does(
    orientation: int, progressive: bool
) -> None:
    """Colour JPEGs take OpenCV's decoder (no copy into numpy); it must give Pillow's pixels
    at every scale and orientation, or index and query would drift apart."""
    from lensbox.device.imaging.decode import _decode_jpeg, decode_reduced

    rng = np.random.default_rng(orientation)
    src = cv2.GaussianBlur(rng.integers(0, 255, (600, 824, 3), dtype=np.uint8), (0, 0), 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(
        Image.fromarray(src), "JPEG", quality=90, exif=exif.tobytes(), progressive=progressive
    )
    assert _decode_jpeg(Image.open(io.BytesIO(data)), data, 1.0, orientation) is not None
    for k, short in ((1, 600), (2, 299), (4, 149), (8, 74)):
        got = decode_reduced(data, long_side=1, short_side=short)
        want = _pillow_decode(data, k)
        assert got.rgb.shape == want.shape, (k, orientation)
        np.testing.assert_array_equal(got.rgb, want)
        upright = (600, 824) if orientation >= 5 else (824, 600)
        assert got.size == upright


def test_cmyk_and_grey_jpegs_still_decode() -> None:
    src = _photo(96, 64)
    for mode in ("CMYK", "L"):
        data = _encode(Image.fromarray(src).convert(mode), "JPEG", quality=95)
        assert decode_image(data).shape == (64, 96, 3)
