"""Stage 1 of a query's path: bytes or a file become an RGB pixel array."""

from lensbox.device.imaging.decode import (
    DecodeLimits,
    ImageError,
    decode_image,
    load_image,
    probe_image,
)

__all__ = ["DecodeLimits", "ImageError", "decode_image", "load_image", "probe_image"]
