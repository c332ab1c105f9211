"""Run the EfficientNet-Lite0 TFLite model: preprocessing and inference, nothing more.

The preprocessing here is *the* preprocessing: builder and device both call it, and the
export script (models/export_model.py) calibrates the int8 model and measures its parity
through it too, with the same input quantization and output dequantization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

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


# Names resize_input's method: cached embeddings made with another are not reused.
RESIZE_METHOD = "area-whole-factor"


def resize_input(rgb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> uint8 (size, size, 3): the one resize of a view.

    Area averaging, the resize that does not alias. OpenCV's is fast only for whole
    factors, so an image at least twice the input on both sides is first brought to the
    nearest whole multiple (bilinear, shrinking each side by less than 1.5x), then averaged:
    0.3 ms instead of 1.1 for a 640x480 frame, within a grey level of a direct area resize."""
    h, w = rgb.shape[:2]
    kx, ky = w // size, h // size
    if kx >= 2 and ky >= 2:
        if (w, h) != (kx * size, ky * size):
            rgb = cv2.resize(rgb, (kx * size, ky * size), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_AREA if min(h, w) >= size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def scale_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 scaled as the model was trained."""
    return (pixels.astype(np.float32) - 127.0) / 128.0


def preprocess(rgb: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (size, size, 3) scaled as the model was trained."""
    return scale_pixels(resize_input(rgb, size))


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


def input_table(detail: dict) -> np.ndarray:
    """The model input for each of the 256 pixel values: :func:`scale_pixels` then
    :func:`quantize_input`, computed once. Looking a resized view up in it gives the same
    tensor, bit for bit, as scaling and quantizing it, in one pass and without a float copy.
    """
    return quantize_input(scale_pixels(np.arange(256, dtype=np.uint8)), detail)


def lookup(table: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``table[pixels]``; for a one-byte table (int8/uint8 models) through cv2.LUT, a few
    times faster than numpy's indexing."""
    if table.dtype.itemsize != 1:
        return table[pixels]
    flat = np.ascontiguousarray(pixels).reshape(-1, pixels.shape[-1])
    out = cv2.LUT(flat, table.view(np.uint8))
    return out.view(table.dtype).reshape(pixels.shape)


def dequantize_output(x: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor -> float32 with its scale and zero point."""
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    return (x.astype(np.float32) - zero) * scale


class TFLiteModel:
    """One interpreter; batches by resizing the input tensor when the model allows it.

    ``pin_batches``: batch sizes from 2 up to this get an interpreter of their own,
    allocated once, so a query's views (a batch of 1, then its two crops as a batch of 2)
    never re-allocate tensors between invocations. Off (1) by default: measured in
    bench/speed.py (docs/benchmarks.md, "One query's embedding"), re-allocating costs no
    measurable time on either runtime while a second interpreter costs 5-17 MB of RSS.
    """

    def __init__(
        self,
        model_path: str | Path,
        num_threads: int = 2,
        runtime: str = "auto",
        pin_batches: int = 1,
    ):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model file not found: {self.model_path}")
        self.runtime = resolve_runtime(runtime)
        self.num_threads = num_threads
        self.pin_batches = max(1, int(pin_batches))
        self._interp = make_interpreter(str(self.model_path), num_threads, self.runtime)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]
        self._batch = self._native = int(self._input["shape"][0])
        self._feature_idx, self._logit_idx = self._find_outputs()
        self._details = {d["index"]: d for d in self._interp.get_output_details()}
        self._table = input_table(self._input)
        # batch size -> (interpreter, its input detail), for the pinned sizes.
        self._pinned: dict[int, tuple[Any, dict]] = {}

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
        return self._details[index]

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, self.input_size, self.input_size, 3]
            self._interp.resize_tensor_input(self._input["index"], shape)
            self._interp.allocate_tensors()
            self._input = self._interp.get_input_details()[0]
            self._batch = batch

    def _interpreter(self, batch: int) -> tuple[Any, dict]:
        """The interpreter to run a batch of ``batch`` on, allocated for that size.

        Raises RuntimeError/ValueError when the model's batch is fixed and differs."""
        if batch in (self._batch, self._native) or batch > self.pin_batches:
            self._resize(batch)
            return self._interp, self._input
        found = self._pinned.get(batch)
        if found is None:
            interp = make_interpreter(str(self.model_path), self.num_threads, self.runtime)
            detail = interp.get_input_details()[0]
            if int(detail["shape"][0]) != batch:
                shape = [batch, self.input_size, self.input_size, 3]
                interp.resize_tensor_input(detail["index"], shape)
                interp.allocate_tensors()
                detail = interp.get_input_details()[0]
            found = self._pinned[batch] = (interp, detail)
        return found

    def run(self, batch: np.ndarray, max_batch: int = 16) -> ModelOutput:
        """Run a float32 (N, S, S, 3) batch, already preprocessed, in chunks of ``max_batch``."""
        return self._run_chunked(batch, max_batch, lambda x, d: quantize_input(x, d))

    def run_pixels(self, pixels: np.ndarray, max_batch: int = 16) -> ModelOutput:
        """Run a uint8 (N, S, S, 3) batch of resized views (:func:`resize_input`): scaled and
        quantized by table look-up, the same input tensor as :meth:`run` of their
        :func:`preprocess`."""
        if pixels.dtype != np.uint8:
            raise TypeError(f"run_pixels takes uint8 pixels, not {pixels.dtype}")
        return self._run_chunked(pixels, max_batch, lambda x, _d: lookup(self._table, x))

    def _run_chunked(
        self, batch: np.ndarray, max_batch: int, to_input: Callable[[np.ndarray, dict], np.ndarray]
    ) -> ModelOutput:
        if len(batch) > max_batch:
            parts = [
                self._run_chunked(batch[i : i + max_batch], max_batch, to_input)
                for i in range(0, len(batch), max_batch)
            ]
            return _concat(parts)
        try:
            interp, detail = self._interpreter(len(batch))
        except (RuntimeError, ValueError):  # a model with a fixed batch: one at a time
            if len(batch) < 2:
                raise
            return _concat(
                [self._run_chunked(batch[i : i + 1], 1, to_input) for i in range(len(batch))]
            )
        interp.set_tensor(detail["index"], to_input(batch, detail))
        interp.invoke()
        feats = interp.get_tensor(self._feature_idx)
        logits = interp.get_tensor(self._logit_idx)
        return ModelOutput(
            features=dequantize_output(feats, self._output_detail(self._feature_idx)).copy(),
            logits=dequantize_output(logits, self._output_detail(self._logit_idx)).copy(),
        )


def _concat(parts: list[ModelOutput]) -> ModelOutput:
    return ModelOutput(
        features=np.concatenate([p.features for p in parts]),
        logits=np.concatenate([p.logits for p in parts]),
    )
