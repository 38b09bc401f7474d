"""Cascaded Refinement Network generator (Chen & Koltun, ICCV 2017, §3.2).

A CRN is a cascade of refinement modules.  Module 0 works at a tiny base grid (4×8 for Cityscapes) and sees only
the semantic layout; every later module doubles the resolution and sees the layout again, concatenated with the
previous module's features upsampled bilinearly.  Global structure is therefore decided at coarse octaves, where
distant parts of the image are close together, and refined at the finer ones (§3.1 "global coordination").

Details taken from the official TensorFlow code (CQFIO/PhotographicImageSynthesis, ``recursive_generator`` in
``demo_256p.py``; see implementations.md §1.1), where the paper is silent:

* the layout is downsampled with ``tf.image.resize_area`` — soft class fractions, not nearest — here
  ``F.interpolate(mode="area")`` of the full-resolution one-hot;
* features are upsampled with ``tf.image.resize_bilinear(..., align_corners=True)``; no transposed
  convolutions (§3.2: "upconvolutions tend to introduce characteristic artifacts");
* each module is 2 × [3×3 conv → layer norm → LReLU(0.2)].  ``slim.conv2d`` with a normaliser has no bias;
  ``slim.layer_norm`` normalises every sample over (H, W, C) with a per-channel scale and offset, which is
  exactly ``nn.GroupNorm(1, C)``;
* the last module is followed by a linear 1×1 convolution (with bias) to RGB — no norm, no nonlinearity, no
  tanh.  The official code maps it by ``(x + 1) / 2 · 255``, i.e. the output is read as [-1, 1]; clipping
  happens only at test time, so this module never clamps;
* weights use slim's default Xavier-uniform initialisation and zero biases.

For the diversity variant (§3.4) the final 1×1 convolution emits 3·k channels.  The official code packs them as
[R of all k images, G of all k, B of all k] (implementations.md §14.10); here they are read as k consecutive RGB
triples, ``(B, 3k, H, W) → (B, k, 3, H, W)``, so output u is channels 3u … 3u+2.  Weights converted from the
official checkpoint would need their output channels permuted accordingly.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def tf_slim_init(module: nn.Module) -> None:
    """TF-slim defaults (CRN's and SIMS's code): Xavier-uniform conv/linear weights (fan = k·k·channels, as in
    PyTorch), zero biases, unit GroupNorm scales."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.GroupNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


class RefinementModule(nn.Module):
    """One module M_i (paper Fig. 3): input layer → 2 × [3×3 conv → layer norm → LReLU] at one resolution."""

    def __init__(self, in_channels: int, width: int, negative_slope: float = 0.2, norm_eps: float = 1e-5):
        super().__init__()
        # No bias: the layer norm's per-channel offset makes it redundant (slim.conv2d with a normalizer_fn).
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(1, width, eps=norm_eps)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(1, width, eps=norm_eps)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm1(self.conv1(x)), self.negative_slope)
        return F.leaky_relu(self.norm2(self.conv2(x)), self.negative_slope)


class CRNGenerator(nn.Module):
    """Label one-hot (B, C, H, W) at ``output_size`` → k images (B, k, 3, H, W), linear, read as [-1, 1].

    ``widths[i]`` is d_i, the number of feature maps of module i; there are ``len(widths)`` modules and module i
    works at ``base_grid · 2^i``.  ``in_channels`` counts every input channel, including the void channel
    (CRN feeds 19 Cityscapes classes + void = 20).  ``norm_eps`` defaults to PyTorch's 1e-5; TF's
    ``layer_norm`` used 1e-12, which makes no difference once the features have non-trivial variance.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        base_grid: tuple[int, int] = (4, 8),
        num_outputs: int = 1,
        negative_slope: float = 0.2,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if in_channels < 1:
            raise ValueError(f"in_channels must be ≥ 1, got {in_channels}")
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {list(widths)}")
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be ≥ 1, got {num_outputs}")
        if len(base_grid) != 2 or min(base_grid) < 1:
            raise ValueError(f"base_grid must be (H, W) with positive sides, got {base_grid}")
        self.in_channels = in_channels
        self.widths = widths
        self.base_grid = (int(base_grid[0]), int(base_grid[1]))
        self.num_outputs = num_outputs
        # Module 0 sees only the layout; module i > 0 sees layout + upsampled F_{i-1} (d_{i-1} + c channels).
        self.refine = nn.ModuleList(
            RefinementModule(in_channels + (widths[i - 1] if i else 0), width, negative_slope, norm_eps)
            for i, width in enumerate(widths)
        )
        self.to_rgb = nn.Conv2d(widths[-1], 3 * num_outputs, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        tf_slim_init(self)

    # ------------------------------------------------------------------ sizes
    def resolution(self, index: int) -> tuple[int, int]:
        """(H, W) of module ``index``: the base grid doubled ``index`` times."""
        return self.base_grid[0] << index, self.base_grid[1] << index

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        return [self.resolution(i) for i in range(len(self.widths))]

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the synthesised image = base_grid · 2^(number of modules − 1)."""
        return self.resolution(len(self.widths) - 1)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ forward
    def forward(self, label: torch.Tensor) -> torch.Tensor:
        if label.dim() != 4 or label.shape[1] != self.in_channels:
            raise ValueError(
                f"CRNGenerator expects a one-hot label of shape (B, {self.in_channels}, H, W) "
                f"(classes + void channel), got {tuple(label.shape)}"
            )
        if tuple(label.shape[-2:]) != self.output_size:
            raise ValueError(
                f"CRNGenerator with {len(self.widths)} modules from base grid {self.base_grid} synthesises "
                f"{self.output_size[0]}×{self.output_size[1]} images, but the label is "
                f"{label.shape[-2]}×{label.shape[-1]}; resize the label (area mode) or pick another preset"
            )
        label = label.float()
        features = None
        for index, module in enumerate(self.refine):
            size = self.resolution(index)
            # Soft class fractions at this resolution (tf.image.resize_area); exact for the 2^n factors here.
            layout = label if size == self.output_size else F.interpolate(label, size=size, mode="area")
            if features is None:
                x = layout
            else:
                upsampled = F.interpolate(features, size=size, mode="bilinear", align_corners=True)
                x = torch.cat([upsampled, layout], dim=1)
            features = module(x)
        rgb = self.to_rgb(features)
        return rgb.view(rgb.shape[0], self.num_outputs, 3, *rgb.shape[-2:])

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, widths={list(self.widths)}, base_grid={self.base_grid}, "
                f"output_size={self.output_size}, num_outputs={self.num_outputs}")


# ---------------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------------
# Cityscapes input: 19 train classes + the void channel 1 − Σ classes (official helper.get_semantic_map and the
# 20-channel placeholder in demo_*.py; paper §3.1 "one of the c possible labels is 'void'").
_CITYSCAPES_CHANNELS = 20
# Official widths: `dim = 512 if sp >= 128 else 1024` with overrides 128 at sp = 512 and 32 at sp = 1024
# (demo_512p.py / demo_1024p.py); paper §3.2: "1024 for i = 0..4, 512 for i = 5, 6, 128 for i = 7, 32 for i = 8".
_CRN_WIDTHS = (1024, 1024, 1024, 1024, 1024, 512, 512, 128, 32)

CRN_PRESETS: dict[str, dict] = {
    # demo_256p.py: 7 modules, heights 4 … 256, image 256×512 (paper base grid 4×8, §3.2).
    "crn-256p": dict(in_channels=_CITYSCAPES_CHANNELS, widths=_CRN_WIDTHS[:7], base_grid=(4, 8)),
    # demo_512p.py: 8 modules, heights 4 … 512, the extra module has 128 maps.
    "crn-512p": dict(in_channels=_CITYSCAPES_CHANNELS, widths=_CRN_WIDTHS[:8], base_grid=(4, 8)),
    # demo_1024p.py and paper §3.2: 9 modules, 4×8 → 1024×2048.
    "crn-1024p": dict(in_channels=_CITYSCAPES_CHANNELS, widths=_CRN_WIDTHS[:9], base_grid=(4, 8)),
    # Our CPU model (not in the paper): CamVid's 11 classes + void = 12 channels, 3×4 → 96×128 in 6 modules.
    # Widths follow CRN's shape (wide at coarse octaves, halving at the two finest) scaled so the whole network
    # has ≈ 4.8 M parameters and costs ≈ 4 GMAC per image, trainable on two CPU cores.
    "crn-cpu": dict(in_channels=12, widths=(256, 256, 256, 256, 128, 64), base_grid=(3, 4)),
}


def build_crn(preset: str, **overrides) -> CRNGenerator:
    """A ``CRNGenerator`` from ``CRN_PRESETS``; keywords override the preset (e.g. ``num_outputs=9`` for the
    official diversity variant of demo_256p.py, or ``in_channels`` for another label set)."""
    if preset not in CRN_PRESETS:
        raise ValueError(f"unknown CRN preset {preset!r}; choose one of {', '.join(CRN_PRESETS)}")
    return CRNGenerator(**{**CRN_PRESETS[preset], **overrides})
