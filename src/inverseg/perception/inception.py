"""The FID Inception v3: the network of TensorFlow's original FID code, with pytorch-fid's state-dict keys.

FID numbers are only comparable when they come from this exact network.  pytorch-fid ships its weights as
``pt_inception-2015-12-05-6726825d.pth`` (ported from TensorFlow's ``inception-2015-12-05``); this module builds
a network whose ``state_dict`` keys and shapes are those of that file, so it loads unchanged:

* torchvision's Inception v3 layout (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, …,
  ``fc.weight`` with 1008 classes, no ``AuxLogits``), ``BasicConv2d`` = bias-free conv + BatchNorm(eps=0.001) +
  ReLU;
* the TensorFlow graph's differences (pytorch-fid's ``FIDInceptionA/C/E_1/E_2``): the average-pool branches
  of blocks A, C and the first E block do not count padded zeros (``count_include_pad=False``), and the last
  E block (``Mixed_7c``) pools with a 3×3 *max* pool instead.

Input: images in [-1, 1] (what the TensorFlow graph expects after its own scaling), bilinearly resized to
299×299 (``align_corners=False``) as pytorch-fid does.  Output of ``pooled_features``: the 2048-d final average
pool ("pool3"), the FID feature.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FID_INPUT_SIZE = 299
FID_FEATURE_DIM = 2048
FID_NUM_CLASSES = 1008


class BasicConv2d(nn.Module):
    def __init__(self, inp: int, out: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3×3/1 average pool: padded zeros are not part of the average."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35×35 block (``Mixed_5b/c/d``): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | pool→1×1."""

    def __init__(self, inp: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(inp, 64, 1)
        self.branch5x5_1 = BasicConv2d(inp, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(inp, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(inp, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class BlockB(nn.Module):
    """35→17 reduction (``Mixed_6a``)."""

    def __init__(self, inp: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(inp, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(inp, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class BlockC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (``Mixed_6b/c/d/e``)."""

    def __init__(self, inp: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(inp, 192, 1)
        self.branch7x7_1 = BasicConv2d(inp, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(inp, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(inp, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            double,
            self.branch_pool(_tf_avg_pool(x)),
        ], 1)


class BlockD(nn.Module):
    """17→8 reduction (``Mixed_7a``)."""

    def __init__(self, inp: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(inp, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(inp, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = layer(seven)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8×8 block with split 1×3 / 3×1 outputs (``Mixed_7b``: TF average pool; ``Mixed_7c``: max pool)."""

    def __init__(self, inp: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(inp, 320, 1)
        self.branch3x3_1 = BasicConv2d(inp, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(inp, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(inp, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(three), self.branch3x3_2b(three),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], 1)


class FIDInceptionV3(nn.Module):
    """Frozen FID Inception v3; ``pooled_features`` gives the 2048-d pool3 features of [-1,1] images."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        self.fc = nn.Linear(FID_FEATURE_DIM, FID_NUM_CLASSES)  # unused; present so the file loads strictly
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FIDInceptionV3":
        return super().train(False)

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] → (B, 2048)."""
        x = F.interpolate(images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pooled_features(images)


def load_fid_inception(path: str | Path | None = None) -> FIDInceptionV3:
    """The FID Inception with pytorch-fid's weights (``resolve_inception``: the given path or torch hub's folder).

    Files written by old PyTorch versions lack the ``num_batches_tracked`` buffers; they are filled in (they
    do not influence inference).
    """
    from .weights import load_weights_file, resolve_inception

    file = resolve_inception(path)
    state_dict, _ = load_weights_file(file)
    model = FIDInceptionV3()
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state_dict.setdefault(key, value)
    model.load_state_dict(state_dict, strict=True)
    model.weights_description = f"pytorch-fid FID Inception v3 ({file})"
    model.weights_path = file
    return model
