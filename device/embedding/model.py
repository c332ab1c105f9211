"""Run the EfficientNet-Lite0 TFLite model: preprocessing and inference, nothing more.

The preprocessing here is *the* preprocessing: builder and device both call it, and the
export script (models/export_model.py) calibrates the int8 model and measures its parity
through it too, with the same input quantization and output dequantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from lensbox.device.embedding.runtime import make_interpreter, resolve_runtime
from lensbox.models import model_sha256 as file_sha256  # one hash for model files

INPUT_SIZE = 224
PREPROCESSING = {
    "resize": "cv2.INTER_AREA, whole image to 224x224",
    "color": "RGB",
    "scale": "(x - 127) / 128",
}


def preprocess(rgb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (size, size, 3) scaled as the model was trained."""
    interp = cv2.INTER_AREA if min(rgb.shape[:2]) >= size else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (size, size), interpolation=interp)
    return (resized.astype(np.float32) - 127.0) / 128.0


@dataclass
class ModelOutput:
    """Dequantized outputs for a batch: the last feature map and the ImageNet logits."""

    features: np.ndarray  # (N, h, w, C) float32, post-ReLU6
    logits: np.ndarray  # (N, 1000) float32


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the tensor's dtype with its scale and zero point (int8 for lensbox)."""
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize_output(x: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor -> float32 with its scale and zero point."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    return (x.astype(np.float32) - zero) * scale


class TFLiteModel:
    """One interpreter; batches by resizing the input tensor when the model allows it."""

    def __init__(self, model_path: str | Path, num_threads: int = 2, runtime: str = "auto"):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        self.runtime = resolve_runtime(runtime)
        self.num_threads = num_threads
        self._interp = make_interpreter(str(self.model_path), num_threads, self.runtime)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]
        self._batch = int(self._input["shape"][0])
        self._feature_idx, self._logit_idx = self._find_outputs()

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.model_path)

    @property
    def input_size(self) -> int:
        return int(self._input["shape"][1])

    def _find_outputs(self) -> tuple[int, int]:
        feature = logits = None
        for detail in self._interp.get_output_details():
            if len(detail["shape"]) == 4:
                feature = detail["index"]
            elif len(detail["shape"]) == 2:
                logits = detail["index"]
        if feature is None or logits is None:
            raise ValueError(f"{self.model_path}: expected a feature-map and a logits output")
        return feature, logits

    def _output_detail(self, index: int) -> dict:
        return next(d for d in self._interp.get_output_details() if d["index"] == index)

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, self.input_size, self.input_size, 3]
            self._interp.resize_tensor_input(self._input["index"], shape)
            self._interp.allocate_tensors()
            self._input = self._interp.get_input_details()[0]
            self._batch = batch

    def run(self, batch: np.ndarray, max_batch: int = 16) -> ModelOutput:
        """Run a float32 (N, S, S, 3) batch, already preprocessed, in chunks of ``max_batch``."""
        if len(batch) > max_batch:
            parts = [self.run(batch[i : i + max_batch]) for i in range(0, len(batch), max_batch)]
            return ModelOutput(
                features=np.concatenate([p.features for p in parts]),
                logits=np.concatenate([p.logits for p in parts]),
            )
        try:
            self._resize(len(batch))
        except (RuntimeError, ValueError):  # a model with a fixed batch: one at a time
            parts = (
                [self.run(batch[i : i + 1]) for i in range(len(batch))] if len(batch) > 1 else []
            )
            if not parts:
                raise
            return ModelOutput(
                features=np.concatenate([p.features for p in parts]),
                logits=np.concatenate([p.logits for p in parts]),
            )
        self._interp.set_tensor(self._input["index"], quantize_input(batch, self._input))
        self._interp.invoke()
        feats = self._interp.get_tensor(self._feature_idx)
        logits = self._interp.get_tensor(self._logit_idx)
        return ModelOutput(
            features=dequantize_output(feats, self._output_detail(self._feature_idx)).copy(),
            logits=dequantize_output(logits, self._output_detail(self._logit_idx)).copy(),
        )
