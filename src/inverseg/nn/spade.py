"""Spatially-adaptive (de)normalisation (Park et al., CVPR 2019, §3, Fig. 2) and the SPADE ResBlk (§3, Fig. 4).

SPADE normalises activations without learned affine parameters and then modulates them per pixel with
γ(m), β(m) predicted from a conditioning map m: ``out = norm(x) · (1 + γ) + β``.  m is resized to the activation's
size with *nearest* interpolation (as officially; CRN's area resizing is a different choice, §14.9).

The conditioning input is any (B, C, H, W) tensor: SPADE feeds the one-hot label (+ don't-care + edge channels);
OASIS feeds the one-hot label concatenated with its 3D noise — the layer does not care.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import param_free_norm, spectral_norm


class SPADE(nn.Module):
    """``norm(x)·(1+γ(m))+β(m)``; γ, β from a shared conv→ReLU embedding of width ``hidden``.

    Official: ``nhidden = 128`` ("Yes, hardcoded"), kernel 3 (the ``3x3`` of ``spadesyncbatch3x3``).
    """

    def __init__(self, channels: int, cond_channels: int, norm: str = "syncbatch", kernel_size: int = 3,
                 hidden: int = 128):
        super().__init__()
        padding = kernel_size // 2
        self.norm = param_free_norm(norm, channels)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, kernel_size, padding=padding), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, kernel_size, padding=padding)
        self.beta = nn.Conv2d(hidden, channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        embedding = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(embedding)) + self.beta(embedding)


class SPADEResBlock(nn.Module):
    """SPADE ResBlk (paper Fig. 4 left): [SPADE → LReLU(0.2) → conv3×3] × 2, plus a shortcut.

    The middle width is ``min(fin, fout)``.  When ``fin ≠ fout`` the shortcut is learned: SPADE → 1×1 conv without
    bias (and without activation).  ``spectral`` wraps the three convs (not the SPADE convs) in spectral norm, as
    SPADE's ``spectral…`` norm_G and OASIS do.  ``modulation`` is the class of the three conditional
    normalisations' constructor, called as ``modulation(channels, cond_channels, norm, kernel_size, hidden)`` (default
    SPADE; SAFM's ``SAFMResnetBlock`` is this block with :class:`inverseg.nn.safm.SAFM`).  ``dilation`` dilates the
    two 3×3 convs (SESAME's semantic core).
    """

    def __init__(self, fin: int, fout: int, cond_channels: int, norm: str = "syncbatch", spectral: bool = True,
                 kernel_size: int = 3, hidden: int = 128, modulation: Callable[..., nn.Module] | None = None,
                 dilation: int = 1):
        super().__init__()
        modulation = modulation or SPADE
        middle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.norm_0 = modulation(fin, cond_channels, norm, kernel_size, hidden)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, middle, 3, padding=dilation, dilation=dilation), spectral)
        self.norm_1 = modulation(middle, cond_channels, norm, kernel_size, hidden)
        self.conv_1 = spectral_norm(nn.Conv2d(middle, fout, 3, padding=dilation, dilation=dilation), spectral)
        if self.learned_shortcut:
            self.norm_s = modulation(fin, cond_channels, norm, kernel_size, hidden)
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False), spectral)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # resized once for the block's two or three modulations (all at x's size), which then find it fitting
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        shortcut = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return shortcut + dx
