"""SAFM generator (Lv, Li, Niu, Cao, Zuo, "Semantic-shape Adaptive Feature Modulation for Semantic Image
Synthesis", CVPR 2022; official ``cszy98/SAFM@bd0cb3f0:models/networks/generator.py: SAFMGenerator``,
methods-later.md §4.3).

The SPADE trunk (``models/spade.py``: a 3×3 conv of the nearest-downsampled conditioning map or Linear(z), ResBlks
16·nf ×3, 8·nf, 4·nf, 2·nf, nf with nearest ×2 upsampling, LReLU → conv → tanh), conditioned on the layout
followed by the 72 SPD channels.  Where the shape information enters is ``placement``:

    blocks   every normalisation of every ResBlk is a SAFM layer (``nn/safm.py``) — ADE20K and COCO-Stuff
             (official ``SAFMResnetBlock``; the paper's design);
    input    plain SPADE ResBlks conditioned on [layout, SPD, shape-conditioned SPD] computed **once** at full
             resolution by a :class:`inverseg.nn.safm.ShapeConditioning` — what the official code does on
             Cityscapes (chosen there by ``dataset_mode == 'cityscapes'``, not by a flag).

``fc`` sees the raw [layout, SPD] map in both cases.  The discriminator is the two-stream PatchGAN of
``nn/discriminator.py`` (``two_stream``) and the segmentation network for the semantic-alignment loss is the OASIS
U-Net (``models/oasis.py``, the same network as the official ``SegNet``); both are built by ``methods/safm.py``.
"""

from __future__ import annotations

import torch

from ..labels.shape_context import CHANNELS as SPD_CHANNELS
from ..nn.safm import SAFM, ShapeConditioning
from ..nn.spade import SPADE
from .spade import SPADEGenerator

PLACEMENTS = ("blocks", "input")


class SAFMGenerator(SPADEGenerator):
    """[layout, SPD] (B, C + 72, H, W) [+ z] → image (B, 3, H, W) in [-1, 1]."""

    def __init__(self, cond_channels: int, output_size: tuple[int, int], ngf: int = 64,
                 num_upsampling: str = "normal", norm: str = "syncbatch", spectral: bool = True,
                 spade_kernel: int = 3, spade_hidden: int = 128, z_dim: int | None = None,
                 placement: str = "blocks", shape_hidden: int = 36):
        if placement not in PLACEMENTS:
            raise ValueError(f"SAFM placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if cond_channels <= SPD_CHANNELS:
            raise ValueError(f"the SAFM generator is conditioned on the layout followed by {SPD_CHANNELS} SPD "
                             f"channels, so it needs more than {SPD_CHANNELS} channels; got {cond_channels}")
        blocks = placement == "blocks"

        def modulation(channels: int, cond: int, norm_: str, kernel: int, hidden: int):
            if blocks:
                return SAFM(channels, cond, norm_, kernel, hidden, shape_hidden)
            return SPADE(channels, cond, norm_, kernel, hidden)

        super().__init__(cond_channels, output_size, ngf, num_upsampling, norm, spectral, spade_kernel,
                         spade_hidden, z_dim, modulation=modulation,
                         block_cond_channels=None if blocks else cond_channels + shape_hidden)
        self.placement = placement
        self.shape = None if blocks else ShapeConditioning(cond_channels - SPD_CHANNELS, shape_hidden, spade_kernel)

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        return cond if self.shape is None else self.shape(cond)
