"""The model shipped with lensbox (see MODEL_CARD.md); paths only, nothing heavy imported.

The device imports this on every start, so it must stay free of torch, TensorFlow and even
numpy: ``efficientnet_lite0`` and ``export_model`` are import-on-demand tools for re-exporting.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HERE = Path(__file__).resolve().parent

MODEL_PATH = _HERE / "efficientnet_lite0_int8.tflite"
LABELS_PATH = _HERE / "imagenet_labels.txt"
MODEL_CARD_PATH = _HERE / "MODEL_CARD.md"

__all__ = ["LABELS_PATH", "MODEL_CARD_PATH", "MODEL_PATH", "model_sha256"]


def model_sha256(path: Path = MODEL_PATH) -> str:
    """Hex sha256 of the model file: bundles record it so a mismatched model is refused."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
