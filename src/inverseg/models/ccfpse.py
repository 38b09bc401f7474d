"""CC-FPSE (Liu, Yin, Shao, Wang, Li, "Learning to Predict Layout-to-image Conditional Convolutions for Semantic
Image Synthesis", NeurIPS 2019): the conditional-convolution generator and the feature-pyramid semantics-embedding
discriminator.  Official code ``xh-liu/CC-FPSE@5619e632`` (``models/networks/generator.py: CondConvGenerator``,
``architecture.py: DepthsepCCBlock``, ``condconv.py: DepthConv``, ``discriminator.py: FPSEDiscriminator``;
facts in methods-later.md §1).

**Generator.**  SPADE's trunk (start grid from Linear(z) or a conv of the downsampled layout, blocks 16·nf ×3,
8·nf, 4·nf, 2·nf, nf with nearest ×2 upsampling, LReLU → conv3 → tanh), but every block is a *conditional
convolution block* whose convolution kernels are predicted from the layout:

* a **label feature pyramid** (the paper's "global-context-aware weight prediction network", shared by all
  blocks): conv3 s1 on the full-resolution layout, then conv3 s2 down to the start grid (bottom-up), then
  top-down ``dec_k(up(p) + lat_k(enc))`` back to full resolution; every conv spectral-normed + batch norm + LReLU
  0.2, 64 channels (= nf);
* in each block, small heads (conv3 → 128, ReLU, conv3) read ``[layout, pyramid level]`` at the block's
  resolution and predict two sets of **per-pixel depthwise 3×3 kernels** (fin·9 and fout·9 channels) and two
  sigmoid **conditional attention** maps (fmiddle and fout channels);
* main path: BN → depthwise conditional conv → 1×1 conv → × attention → LReLU → BN → depthwise conditional conv
  → 1×1 conv → × attention → LReLU; shortcut: identity, or (fin ≠ fout) SPADE → spectral-normed 1×1 conv.

The conditional convolution is ``inverseg.nn.condconv.conditional_depthwise_conv`` (one unfold, one product,
one sum over taps — shared with SAFM).  Which pyramid level a block reads is the one with the block's resolution
(officially hard-wired per block; it comes to the same, including ``G_middle_1`` reusing the 16×16 level in the
'normal' layout), found by counting the upsamplings.

**Discriminator.**  One scale, image only: conv3 s2 encoders 64, 128, 256, 512, 512 (spectral + instance norm,
LReLU), top-down lateral 1×1 convs to 256 with bilinear ×2 upsampling, and per level (1/4, 1/8, 1/16) a conv3 →
128.  Shared 1×1 heads give a real/fake patch score and a 128-d semantic feature per pixel; the score of a level
is ``tf(f) + Σ_c seg(f)_c · e_c`` with ``e`` = a 1×1 embedding of the full-resolution layout, 2×2-average-pooled
to the level (a per-pixel projection discriminator).  The four encoder features after the first feed the
feature-matching loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.condconv import conditional_depthwise_conv
from ..nn.layers import check_divisible, conv_norm, spectral_norm
from ..nn.spade import SPADE
from .spade import UPSAMPLING, start_grid

CC_NORMS = ("syncbatch", "batch", "instance")
MODES = ("normal", "more")


def affine_norm(kind: str, channels: int) -> nn.Module:
    """The CC block's learned-affine normalisation (official ``BatchNorm2d(affine=True)``, SyncBN under DDP)."""
    if kind in ("syncbatch", "batch"):
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"cc_norm must be one of {', '.join(CC_NORMS)}, got {kind!r}")


def predictor(cond_channels: int, hidden: int, out_channels: int, gate: bool = False) -> nn.Sequential:
    """conv3 → ReLU → conv3 (→ sigmoid): the per-block kernel / attention heads (no normalisation, no spectral norm,
    as officially)."""
    layers = [nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU(),
              nn.Conv2d(hidden, out_channels, 3, padding=1)]
    return nn.Sequential(*layers, nn.Sigmoid()) if gate else nn.Sequential(*layers)


class CondConvBlock(nn.Module):
    """Official ``DepthsepCCBlock``: depthwise conditional convs with predicted kernels + conditional attention.

    ``forward(x, cond)`` with ``cond`` = [layout, pyramid feature] at any resolution (nearest-resized to x).
    The official block also builds a batch norm ``norm_0`` and one inside each ``DepthConv`` that are never
    called; they are left out (the tests count them separately).
    """

    def __init__(self, fin: int, fout: int, cond_channels: int, hidden: int = 128, kernel_size: int = 3,
                 norm: str = "syncbatch", spade_norm: str = "syncbatch", spectral: bool = True):
        super().__init__()
        middle = min(fin, fout)
        self.kernel_size = kernel_size
        taps = kernel_size * kernel_size
        self.gen_weights1 = predictor(cond_channels, hidden, fin * taps)
        # official: fout·9 kernels for the fmiddle-channel second conv — equal in every block (fmiddle = fout
        # when fin ≥ fout) and the only width that runs otherwise
        self.gen_weights2 = predictor(cond_channels, hidden, middle * taps)
        self.gen_se_weights1 = predictor(cond_channels, hidden, middle, gate=True)
        self.gen_se_weights2 = predictor(cond_channels, hidden, fout, gate=True)
        self.norm_1 = affine_norm(norm, fin)
        self.conv_1 = nn.Conv2d(fin, middle, 1)
        self.norm_2 = affine_norm(norm, middle)
        self.conv_3 = nn.Conv2d(middle, fout, 1)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, cond_channels, spade_norm, 3, hidden)
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False), spectral)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        shortcut = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = conditional_depthwise_conv(self.norm_1(x), self.gen_weights1(cond), self.kernel_size)
        dx = F.leaky_relu(self.conv_1(dx) * self.gen_se_weights1(cond), 0.2)
        dx = conditional_depthwise_conv(self.norm_2(dx), self.gen_weights2(cond), self.kernel_size)
        dx = F.leaky_relu(self.conv_3(dx) * self.gen_se_weights2(cond), 0.2)
        return shortcut + dx


class LabelPyramid(nn.Module):
    """The weight-prediction network's shared feature pyramid of the layout: ``levels`` maps from the coarsest
    (the generator's start grid) to full resolution, each ``channels`` wide."""

    def __init__(self, cond_channels: int, channels: int = 64, levels: int = 6, norm: str = "syncbatch",
                 spectral: bool = True):
        super().__init__()
        if levels < 2:
            raise ValueError(f"the label pyramid needs at least 2 levels, got {levels}")

        def unit(cin: int, kernel: int, stride: int) -> nn.Sequential:
            return nn.Sequential(conv_norm(cin, channels, kernel, stride, kernel // 2, norm, spectral),
                                 nn.LeakyReLU(0.2))

        # labelenc1 (full resolution), labelenc2… (stride 2); labellat1… and labeldec1… coarse to fine
        self.encoders = nn.ModuleList([unit(cond_channels, 3, 1)] + [unit(channels, 3, 2) for _ in range(levels - 1)])
        self.laterals = nn.ModuleList(unit(channels, 1, 1) for _ in range(levels - 1))
        self.decoders = nn.ModuleList(unit(channels, 3, 1) for _ in range(levels - 1))

    def forward(self, layout: torch.Tensor) -> list[torch.Tensor]:
        encoded, x = [], layout
        for encoder in self.encoders:
            x = encoder(x)
            encoded.append(x)
        outputs = [encoded[-1]]
        for lateral, decoder, skip in zip(self.laterals, self.decoders, reversed(encoded[:-1])):
            outputs.append(decoder(F.interpolate(outputs[-1], scale_factor=2, mode="nearest") + lateral(skip)))
        return outputs


class CondConvGenerator(nn.Module):
    """Layout (B, C, H, W) [+ latent z (B, z_dim)] → image (B, 3, H, W) in [-1, 1].

    ``num_upsampling``: ``normal`` (5 ups; official for every dataset but Cityscapes) or ``more`` (6, Cityscapes;
    officially chosen by ``dataset_mode``).  ``pyramid_channels`` is the label pyramid's width (official: nf);
    ``hidden`` the kernel heads' and the shortcut SPADE's (official 128, hard-coded).
    """

    def __init__(self, cond_channels: int, output_size: tuple[int, int], ngf: int = 64,
                 num_upsampling: str = "normal", pyramid_channels: int | None = None, hidden: int = 128,
                 kernel_size: int = 3, norm: str = "syncbatch", spectral: bool = True, z_dim: int | None = None):
        super().__init__()
        if num_upsampling not in MODES:
            raise ValueError(f"CC-FPSE num_upsampling must be one of {', '.join(MODES)}, got {num_upsampling!r}")
        self.grid = start_grid(tuple(output_size), num_upsampling)
        self.z_dim, self.ngf = z_dim, ngf
        pyramid_channels = pyramid_channels or ngf
        if z_dim:
            self.fc = nn.Linear(z_dim, 16 * ngf * self.grid[0] * self.grid[1])
        else:  # official non-VAE fc outputs 16·nf·sh·sw channels and cannot run; SPADE's 16·nf conv instead
            self.fc = nn.Conv2d(cond_channels, 16 * ngf, 3, padding=1)
        self.pyramid = LabelPyramid(cond_channels, pyramid_channels, UPSAMPLING[num_upsampling] + 1, norm, spectral)
        block_cond = cond_channels + pyramid_channels

        def block(fin: int, fout: int) -> CondConvBlock:
            return CondConvBlock(fin, fout, block_cond, hidden, kernel_size, norm, norm, spectral)

        self.head_0 = block(16 * ngf, 16 * ngf)
        self.middle_0 = block(16 * ngf, 16 * ngf)
        self.middle_1 = block(16 * ngf, 16 * ngf)
        self.upsample_between_middles = num_upsampling == "more"
        widths = [16 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf]
        self.up_blocks = nn.ModuleList(block(fin, fout) for fin, fout in zip(widths[:-1], widths[1:]))
        self.conv_img = nn.Conv2d(ngf, 3, 3, padding=1)

    def forward(self, layout: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.z_dim:
            if z is None:
                raise ValueError("this CC-FPSE generator was built with a VAE latent: pass z (B, z_dim)")
            x = self.fc(z).unflatten(1, (16 * self.ngf, *self.grid))  # (a traced reshape keeps C known)
        else:
            x = self.fc(F.interpolate(layout, size=self.grid, mode="nearest"))
        levels = self.pyramid(layout)  # coarsest (the start grid) first, each twice the size of the one before

        def run(block: CondConvBlock, x: torch.Tensor, level: int) -> torch.Tensor:
            # the level is counted, not looked up by size: traced sizes are tensors (inverseg export)
            feature = levels[level]
            cond = torch.cat([F.interpolate(layout, size=feature.shape[-2:], mode="nearest"), feature], dim=1)
            return block(x, cond)

        def up(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=2, mode="nearest")

        x = run(self.head_0, x, 0)
        x = run(self.middle_0, up(x), 1)
        level = 1
        if self.upsample_between_middles:
            x, level = up(x), 2
        x = run(self.middle_1, x, level)
        for block in self.up_blocks:
            level += 1
            x = run(block, up(x), level)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class PyramidScores(list):
    """The FPSE discriminator's output: a list of patch-score maps (fine to coarse, what the shared adversarial
    losses read) carrying the encoder features for feature matching in ``features``."""

    def __init__(self, scores, features):
        super().__init__(scores)
        self.features = list(features)

    def split(self, first: int) -> tuple["PyramidScores", "PyramidScores"]:
        """(the first ``first`` samples, the rest) — D runs on fake and real as one batch."""
        return (PyramidScores([s[:first] for s in self], [f[:first] for f in self.features]),
                PyramidScores([s[first:] for s in self], [f[first:] for f in self.features]))


class FPSEDiscriminator(nn.Module):
    """Image (B, 3, H, W) and layout (B, C, H, W) → :class:`PyramidScores` (scores at 1/4, 1/8, 1/16)."""

    def __init__(self, label_channels: int, ndf: int = 64, norm: str = "instance", spectral: bool = True,
                 image_channels: int = 3):
        super().__init__()
        widths = [image_channels, ndf, 2 * ndf, 4 * ndf, 8 * ndf, 8 * ndf]
        pyramid, head = 4 * ndf, 2 * ndf

        def unit(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
            return nn.Sequential(conv_norm(cin, cout, kernel, stride, kernel // 2, norm, spectral), nn.LeakyReLU(0.2))

        self.encoders = nn.ModuleList(unit(a, b, 3, 2) for a, b in zip(widths[:-1], widths[1:]))  # enc1…enc5
        self.laterals = nn.ModuleList(unit(c, pyramid, 1, 1) for c in widths[2:])  # lat2…lat5
        self.finals = nn.ModuleList(unit(pyramid, head, 3, 1) for _ in range(3))  # final2…final4
        self.tf = nn.Conv2d(head, 1, 1)
        self.seg = nn.Conv2d(head, head, 1)
        self.embedding = nn.Conv2d(label_channels, head, 1)

    def forward(self, image: torch.Tensor, layout: torch.Tensor) -> PyramidScores:
        check_divisible(tuple(image.shape[-2:]), 32, "the FPSE discriminator (five stride-2 convs)")
        encoded, x = [], image
        for encoder in self.encoders:
            x = encoder(x)
            encoded.append(x)
        # top-down: 1/32 → 1/16 → 1/8 → 1/4 (official bilinear upsampling, align_corners False)
        top = self.laterals[3](encoded[4])
        merged = []
        for lateral, skip in zip(reversed(self.laterals[:3]), reversed(encoded[1:4])):
            top = F.interpolate(top, scale_factor=2, mode="bilinear", align_corners=False) + lateral(skip)
            merged.append(top)  # 1/16, 1/8, 1/4
        embedded = self.embedding(layout)
        pooled = []
        for _ in range(4):  # 1/2, 1/4, 1/8, 1/16
            embedded = F.avg_pool2d(embedded, 2)
            pooled.append(embedded)
        scores = []
        for final, features, embedding in zip(self.finals, reversed(merged), pooled[1:]):  # 1/4, 1/8, 1/16
            features = final(features)
            scores.append(self.tf(features) + (self.seg(features) * embedding).sum(dim=1, keepdim=True))
        return PyramidScores(scores, encoded[1:])
