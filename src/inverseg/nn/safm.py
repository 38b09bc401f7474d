"""Semantic-shape adaptive feature modulation (SAFM; Lv et al., CVPR 2022, §3.2, Fig. 3; official
``cszy98/SAFM@bd0cb3f0:models/networks/normalization.py: SAFM``, methods-later.md §4.2).

SPADE predicts γ, β from the layout alone.  SAFM also feeds the 72-channel Shape-aware Position Descriptor (SPD,
``inverseg.labels.shape_context``) and, above all, a version of it convolved with kernels the *semantics* choose
per pixel, so that one position inside a shape can mean different parts for different classes:

    seg, spd = cond[:, :−72], cond[:, −72:]                       (nearest-resized to the activation first)
    s = ReLU(conv3(seg → 36));   d = ReLU(conv3(spd → 36))
    W1 = conv3(ReLU(conv3(s → 36)) → 36·9);   W2 likewise          (per-pixel 3×3 depthwise kernels)
    d = dwconv(dwconv(d, W1), W2)                                  (``inverseg.nn.condconv``; no activation between)
    γ, β = SPADE head on concat(seg, spd, d)                       (conv3 → 128, ReLU, conv3 → γ / β)
    out = norm(x) · (1 + γ) + β

:class:`ShapeConditioning` is the part before the SPADE head: the official Cityscapes generator applies it once
to the full-resolution input and conditions plain SPADE blocks on its output (``models/safm.py``).  The official
``DepthConv`` also creates a batch norm it never calls (72 parameters per depthwise conv in official checkpoints);
it is left out here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..labels.shape_context import CHANNELS as SPD_CHANNELS
from .condconv import conditional_depthwise_conv
from .spade import SPADE


class ShapeConditioning(nn.Module):
    """[layout (C), SPD (72)] → [layout, SPD, semantics-conditioned depthwise convolution of SPD features (36)]."""

    def __init__(self, layout_channels: int, hidden: int = 36, kernel_size: int = 3, spd_channels: int = SPD_CHANNELS):
        super().__init__()
        padding = kernel_size // 2
        self.spd_channels, self.hidden = spd_channels, hidden
        self.pre_seg = nn.Sequential(nn.Conv2d(layout_channels, hidden, kernel_size, padding=padding), nn.ReLU())
        self.pre_dis = nn.Sequential(nn.Conv2d(spd_channels, hidden, kernel_size, padding=padding), nn.ReLU())

        def kernel_head() -> nn.Sequential:  # official gen_weights1/2: 3×3 convs whatever the SPADE kernel size
            return nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden * 9, 3, padding=1))

        self.gen_weights1, self.gen_weights2 = kernel_head(), kernel_head()

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        layout, spd = cond[:, :-self.spd_channels], cond[:, -self.spd_channels:]
        semantics = self.pre_seg(layout)
        shape = self.pre_dis(spd)
        shape = conditional_depthwise_conv(shape, self.gen_weights1(semantics))
        shape = conditional_depthwise_conv(shape, self.gen_weights2(semantics))
        return torch.cat([layout, spd, shape], dim=1)


class SAFM(SPADE):
    """``norm(x)·(1+γ)+β`` with γ, β from [layout, SPD, shape-conditioned SPD]; ``cond_channels`` = layout + 72.

    Same constructor as :class:`inverseg.nn.spade.SPADE`, so that ``SPADEResBlock(modulation=SAFM)`` is the official
    ``SAFMResnetBlock``; ``kernel_size`` is the SPADE kernel (3) and also that of ``pre_seg`` / ``pre_dis``.
    """

    def __init__(self, channels: int, cond_channels: int, norm: str = "syncbatch", kernel_size: int = 3,
                 hidden: int = 128, shape_hidden: int = 36):
        if cond_channels <= SPD_CHANNELS:
            raise ValueError(f"SAFM's conditioning map is the layout followed by the {SPD_CHANNELS} SPD channels, "
                             f"so it needs more than {SPD_CHANNELS} channels; got {cond_channels}")
        super().__init__(channels, cond_channels + shape_hidden, norm, kernel_size, hidden)
        self.shape = ShapeConditioning(cond_channels - SPD_CHANNELS, shape_hidden, kernel_size)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        return super().forward(x, self.shape(cond))
