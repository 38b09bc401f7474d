"""MobileNetV2 (width 1.0, 1000 ImageNet classes) with torchvision's module layout and state-dict keys.

It is the project's small ImageNet network: a frozen backbone for a segmentation head (multi-scale feature maps)
and a cheap embedding for Fréchet distances (pooled 1280-d features), both affordable on a CPU.  Keys match
torchvision's ``mobilenet_v2()`` (``features.0.0.weight``, ``features.0.1.running_mean``, …,
``classifier.1.weight``) so ``mobilenet_v2-b0353104.pth`` loads unchanged.

Input convention: images in [-1, 1], RGB, (B, 3, H, W); they are mapped to [0, 1] and normalised with
torchvision's ImageNet mean/std inside ``forward``/``stages``/``pooled_features``, which is what the
torchvision weights were trained with.  Callers never normalise themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .vgg import IMAGENET_MEAN, IMAGENET_STD

# (expansion t, output channels c, repeats n, first stride s) from the MobileNetV2 paper, table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1))
# Indices into ``features`` whose outputs are the last maps at strides 4, 8, 16 and 32.
STAGE_INDICES = (3, 6, 13, 18)
STAGE_STRIDES = (4, 8, 16, 32)
STAGE_CHANNELS = (24, 32, 96, 1280)
FEATURE_DIM = 1280


def _conv_bn_relu(inp: int, out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv → BN → ReLU6 as a Sequential, so its keys read ``.0.weight`` / ``.1.running_mean`` like torchvision."""
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise 3×3 → linear project (1×1), with a skip when shapes allow."""

    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_skip = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu(inp, hidden, 1))
        layers += [
            _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier whose intermediate maps are reachable without hooks.

    ``frozen=True`` (what the loaders use) turns off gradients for the parameters and pins eval mode, so that a
    parent's ``.train()`` cannot start updating the BatchNorm statistics of a measuring network.
    """

    def __init__(self, num_classes: int = 1000, frozen: bool = False):
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn_relu(3, 32, 3, 2)]
        channels = 32
        for expand, out, repeats, stride in _SETTINGS:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
                channels = out
        blocks.append(_conv_bn_relu(channels, FEATURE_DIM, 1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "MobileNetV2":
        return super().train(False if self.frozen else mode)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB → ImageNet-normalised RGB."""
        return ((x + 1.0) * 0.5 - self._mean) / self._std

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 4, 8, 16, 32 (channels ``STAGE_CHANNELS``), for a segmentation head."""
        x = self.preprocess(x)
        maps = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in STAGE_INDICES:
                maps.append(x)
        return maps

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled 1280-d features (the classifier's input), for Fréchet distances."""
        return self.features(self.preprocess(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        return self.classifier(self.pooled_features(x))


def load_mobilenet_v2(weights: str | Path | None = "auto", frozen: bool = True,
                      cache: str | Path | None = None) -> MobileNetV2:
    """The ImageNet MobileNetV2: ``"auto"`` = the offline file from ``inverseg weights fetch``, or a path to a
    torchvision-style ``.pth``/``.safetensors``; ``None`` = random weights (shape tests only)."""
    model = MobileNetV2(frozen=frozen)
    if weights is not None:
        from .weights import resolve_mobilenet_v2

        state_dict, description = resolve_mobilenet_v2(None if weights == "auto" else weights, cache=cache)
        model.load_state_dict(state_dict)
        model.weights_description = description
    return model
