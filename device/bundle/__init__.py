"""Stage 3: the versioned bundle a workstation builds and a device loads."""

from lensbox.device.bundle.format import FORMAT_NAME, FORMAT_VERSION, BundleError
from lensbox.device.bundle.reader import Bundle, open_bundle

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "Bundle", "BundleError", "open_bundle"]
