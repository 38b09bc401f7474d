"""OASIS generator, segmentation discriminator and 3D noise (Sushko, Schönfeld et al., "You Only Need Adversarial
Supervision for Semantic Image Synthesis", ICLR 2021; official code boschresearch/OASIS, implementations.md §5).

**3D noise** (§3.3, Fig. 2): a noise tensor (B, z_dim, H, W) is concatenated channel-wise to the one-hot label map,
and that concatenation conditions the first conv and every SPADE layer, so noise at a pixel can only change the
image near that pixel (through the SPADE convs) or through the low-resolution layers.  How the tensor is filled is
the ``mode`` of :func:`draw_noise`:

    replicated   one N(0, I) vector per image, the same at every pixel (the official code, issue #24; the paper's
                 "global" sampling)
    per_class    one vector per class present in each image (void is a class of its own)
    per_region   one vector per connected region of one class (4-connectivity)
    per_pixel    i.i.d. N(0, 1) everywhere

:func:`resample_noise` re-draws the noise inside a mask only (the paper's "local" sampling: "we sample different
noise per region", Fig. 2), with the same mode restricted to the mask.

**Generator** (§3.3; official ``OASIS_Generator``): SPADE ResBlks (``inverseg.nn.spade``) of widths
16·nf, 16·nf, 16·nf, 8·nf, 4·nf, 2·nf, nf with a nearest ×2 upsampling after each block but the last; it starts
from a 3×3 conv of [noise, label] nearest-downsampled to output / 32; LReLU(0.2) → 3×3 conv → tanh.

**Discriminator** (§3.1, Fig. 3; official ``OASIS_Discriminator``): a U-Net of residual blocks (spectral norm, no
normalisation, LReLU 0.2) that segments an image — without seeing the label map — into N real classes + 1 "fake"
class per pixel.  Encoder widths [128, 128, 256, 256, 512, 512] with average pooling, a decoder that mirrors it
with nearest upsampling and skip concatenations, and a 1×1 conv to N + 1 logits at full resolution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import check_divisible, spectral_norm
from ..nn.spade import SPADEResBlock

NOISE_MODES = ("replicated", "per_class", "per_region", "per_pixel")
GENERATOR_WIDTHS = (16, 16, 16, 8, 4, 2, 1)  # × nf; official channels_G 64 → 1024 … 64
DISCRIMINATOR_WIDTHS = (128, 128, 256, 256, 512, 512)  # official encoder widths after the RGB input


# --------------------------------------------------------------------------------------------- 3D noise
def class_index(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,H,W) ids → ids with every value outside 0…N-1 (void) mapped to N, so void is a class of its own."""
    return torch.where((label >= 0) & (label < num_classes), label, torch.full_like(label, num_classes))


def region_index(label: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Connected regions of equal label (4-connectivity), numbered over the batch: ((B,H,W) index, count)."""
    from scipy import ndimage

    ids = label.detach().cpu().numpy()
    out = np.zeros(ids.shape, dtype=np.int64)
    count = 0
    for b, image in enumerate(ids):
        for value in np.unique(image):
            components, found = ndimage.label(image == value)
            inside = components > 0
            out[b][inside] = components[inside] - 1 + count
            count += found
    return torch.from_numpy(out).to(label.device), count


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, 1) from ``generator`` (a CPU generator: the draws do not depend on the device) or the global RNG."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator).to(device)


def draw_noise(label: torch.Tensor, z_dim: int, mode: str, num_classes: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,H,W) label ids → (B, z_dim, H, W) noise filled according to ``mode`` (see the module docstring)."""
    batch, height, width = label.shape
    device = label.device
    if mode == "replicated":
        return _randn((batch, z_dim, 1, 1), generator, device).expand(-1, -1, height, width).contiguous()
    if mode == "per_pixel":
        return _randn((batch, z_dim, height, width), generator, device)
    if mode == "per_class":
        codes = _randn((batch, num_classes + 1, z_dim), generator, device)
        index = class_index(label, num_classes)
        rows = torch.arange(batch, device=device).view(-1, 1, 1)
        return codes[rows, index].permute(0, 3, 1, 2).contiguous()
    if mode == "per_region":
        index, count = region_index(label)
        codes = _randn((count, z_dim), generator, device)
        return codes[index].permute(0, 3, 1, 2).contiguous()
    raise ValueError(f"noise mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")


def resample_noise(noise: torch.Tensor, mask: torch.Tensor, label: torch.Tensor, mode: str, num_classes: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Re-draw ``noise`` (B,z,H,W) where ``mask`` (B,H,W) is true; elsewhere it is returned unchanged.

    The fresh noise follows ``mode`` restricted to the mask: ``replicated`` puts one new vector on the whole masked
    area of an image (even if it spans several classes), ``per_class`` one per class inside it, and so on.
    """
    fresh = draw_noise(label, noise.shape[1], mode, num_classes, generator)
    return torch.where(mask[:, None].to(torch.bool), fresh, noise)


# --------------------------------------------------------------------------------------------- generator
class OASISGenerator(nn.Module):
    """[noise (B,z,H,W),] label encoding (B,C,H,W) → image (B,3,H,W) in [-1, 1]; the output size is fixed."""

    def __init__(self, label_channels: int, output_size: tuple[int, int], z_dim: int = 64, ngf: int = 64,
                 norm: str = "syncbatch", spectral: bool = True, spade_kernel: int = 3, spade_hidden: int = 128):
        super().__init__()
        ups = len(GENERATOR_WIDTHS) - 2  # five ×2 upsamplings between six blocks
        check_divisible(tuple(output_size), 2**ups, "the OASIS generator (5 upsamplings)")
        self.grid = (output_size[0] // 2**ups, output_size[1] // 2**ups)
        self.z_dim = z_dim
        cond = label_channels + z_dim  # SPADE's conditioning input: [noise, label] (official order)
        widths = [m * ngf for m in GENERATOR_WIDTHS]
        self.fc = nn.Conv2d(cond, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(SPADEResBlock(fin, fout, cond, norm, spectral, spade_kernel, spade_hidden)
                                    for fin, fout in zip(widths[:-1], widths[1:]))
        self.conv_img = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, label: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.z_dim:
            if noise is None or noise.shape[1] != self.z_dim or noise.shape[-2:] != label.shape[-2:]:
                got = None if noise is None else tuple(noise.shape)
                raise ValueError(f"this generator takes noise of shape (B, {self.z_dim}, "
                                 f"{label.shape[-2]}, {label.shape[-1]}), got {got}")
            cond = torch.cat([noise, label], dim=1)
        else:  # --no_3dnoise
            cond = label
        x = self.fc(F.interpolate(cond, size=self.grid, mode="nearest"))
        for index, block in enumerate(self.blocks):
            if index:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, cond)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


# --------------------------------------------------------------------------------------------- discriminator
class DiscriminatorBlock(nn.Module):
    """Residual block of the OASIS discriminator (official ``residual_block_D``).

    residual: [LReLU] → [upsample] → conv3×3 → LReLU → conv3×3 → [avg-pool 2]  (no LReLU before the first block)
    shortcut: [upsample] → [conv1×1 if the width changes] → [avg-pool 2]
    (a 1×1 conv and average pooling commute, so the first block's pool-then-conv equals conv-then-pool).
    """

    def __init__(self, fin: int, fout: int, direction: str, first: bool = False, spectral: bool = True):
        super().__init__()
        if direction not in ("down", "up"):
            raise ValueError(f"direction must be 'down' or 'up', got {direction!r}")
        self.direction, self.first = direction, first
        self.conv1 = spectral_norm(nn.Conv2d(fin, fout, 3, padding=1), spectral)
        self.conv2 = spectral_norm(nn.Conv2d(fout, fout, 3, padding=1), spectral)
        self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1), spectral) if fin != fout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        residual = x if self.first else F.leaky_relu(x, 0.2)
        if self.direction == "up":
            shortcut = F.interpolate(shortcut, scale_factor=2, mode="nearest")
            residual = F.interpolate(residual, scale_factor=2, mode="nearest")
        if self.conv_s is not None:
            shortcut = self.conv_s(shortcut)
        residual = self.conv2(F.leaky_relu(self.conv1(residual), 0.2))
        if self.direction == "down":
            shortcut, residual = F.avg_pool2d(shortcut, 2), F.avg_pool2d(residual, 2)
        return shortcut + residual


class OASISDiscriminator(nn.Module):
    """Image (B,3,H,W) → per-pixel logits (B, num_outputs, H, W); class 0 is "fake", 1…N the real classes.

    ``channels`` are the encoder widths (official [128, 128, 256, 256, 512, 512]: 6 blocks, so H and W must be
    multiples of 2^6); the decoder block i takes the concatenation of the matching encoder output and the previous
    decoder output, as officially; the last decoder block outputs ``last_channels`` (official 64).
    """

    def __init__(self, num_outputs: int, channels: tuple[int, ...] = DISCRIMINATOR_WIDTHS, last_channels: int = 64,
                 spectral: bool = True, in_channels: int = 3):
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 2:
            raise ValueError(f"the OASIS discriminator needs at least 2 encoder widths, got {list(channels)}")
        self.factor = 2 ** len(channels)
        widths = (in_channels, *channels)
        self.down = nn.ModuleList(DiscriminatorBlock(widths[i], widths[i + 1], "down", first=i == 0,
                                                     spectral=spectral) for i in range(len(channels)))
        up = [DiscriminatorBlock(channels[-1], channels[-2], "up", spectral=spectral)]
        for i in range(1, len(channels) - 1):  # input: skip (channels[-1-i]) ⊕ previous output (channels[-1-i])
            up.append(DiscriminatorBlock(2 * channels[-1 - i], channels[-2 - i], "up", spectral=spectral))
        up.append(DiscriminatorBlock(2 * channels[0], last_channels, "up", spectral=spectral))
        self.up = nn.ModuleList(up)
        self.classifier = nn.Conv2d(last_channels, num_outputs, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_divisible(tuple(image.shape[-2:]), self.factor,
                        f"the OASIS discriminator ({len(self.down)} downsampling blocks)")
        skips = []
        x = image
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](x)
        for i in range(1, len(self.up)):
            x = self.up[i](torch.cat([skips[-1 - i], x], dim=1))
        return self.classifier(x)
