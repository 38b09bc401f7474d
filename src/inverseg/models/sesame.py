"""SESAME generator and discriminator (Ntavelis et al., "SESAME: Semantic Editing of Scenes by Adding, Manipulating
or Erasing Objects", ECCV 2020; official code vglsd/OpenSESAME, ``models/networks/generator.py: SesameGenerator``
and ``discriminator.py: SesameMultiscaleDiscriminator``; reference notes methods-later.md §3.2–3.3).

Generator — an encoder–decoder that inpaints a hole.  Input: the masked photo (hole filled with 0, i.e. mid-grey
in [-1, 1]) concatenated with the semantics (one-hot layout [+ don't-care] [+ edges] and the hole channel); the
SPADE layers are conditioned on the semantics alone::

    reflect-pad 3, conv 7×7 → ngf, IN, ReLU                                       encoder (no spectral norm)
    n_downsample × [conv 3×3 stride 2 → 2×, IN, ReLU]                             (256 → 64 px, 64 → 256 ch)
    n_resnet_blocks pix2pixHD ResnetBlocks (reflect pad, 3×3, IN, ReLU, …)        semantic core;
        first with dilation 1, the others dilation 2                               blocks 2…4 dilated
    n_spade_blocks SPADE ResBlks, all but the last with dilation 2
    n_downsample × [nearest ×2, SPADE ResBlk c → c/2]                             decoder
    LReLU(0.2), conv 3×3 → 3, tanh

The convs of the encoder and of the ResnetBlocks have no bias (instance norm follows; SPADE's
``get_nonspade_norm_layer`` removes it); the SPADE ResBlks use spectral norm (``norm_G spectralspadesyncbatch3x3``).
U-Net skips and ``--wide`` exist in the official code but both training scripts run without them
(``--no_skip_connections``), so they are not built here.

Discriminator — two streams of the SPADE PatchGAN shape, one on the image (the last 3 input channels) and one on
the semantics (all other channels).  Only after the last hidden layer are they fused: with image features f and
semantic features s, ``f + f · Σ_c s_c`` (the channel sum of the semantic stream rescales every image channel — not
a projection discriminator's inner product), then the 4×4 output conv.  The features returned for feature matching
are the image stream's (semantic stream excluded), as officially.  Two scales, the second on the 3×3/2 average-
pooled input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.discriminator import MultiScaleDiscriminator, PatchDiscriminator
from ..nn.layers import check_divisible
from ..nn.spade import SPADEResBlock


def _conv_in_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                  activation: bool = True) -> list[nn.Module]:
    """A bias-free conv followed by parameter-free instance norm (and ReLU)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
                               nn.InstanceNorm2d(out_channels, affine=False)]
    return layers + [nn.ReLU()] if activation else layers


class ResnetBlock(nn.Module):
    """pix2pixHD's residual block with reflection padding and a dilation: x + [pad, conv, IN, ReLU, pad, conv, IN](x)."""

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(dilation),
            nn.Conv2d(channels, channels, 3, dilation=dilation, bias=False),
            nn.InstanceNorm2d(channels, affine=False),
            nn.ReLU(),
            nn.ReflectionPad2d(dilation),
            nn.Conv2d(channels, channels, 3, dilation=dilation, bias=False),
            nn.InstanceNorm2d(channels, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class SesameGenerator(nn.Module):
    """(masked image (B,3,H,W), semantics (B,S,H,W)) → image (B,3,H,W) in [-1, 1]; S = layout channels + hole."""

    def __init__(self, semantic_channels: int, ngf: int = 64, n_downsample: int = 2, n_resnet_blocks: int = 4,
                 n_spade_blocks: int = 5, norm: str = "syncbatch", spectral: bool = True, spade_kernel: int = 3,
                 spade_hidden: int = 128, initial_kernel: int = 7):
        super().__init__()
        if n_resnet_blocks < 1 or n_spade_blocks < 1:
            raise ValueError(f"SESAME needs at least one ResnetBlock and one SPADE block, got {n_resnet_blocks} "
                             f"and {n_spade_blocks}")
        self.n_downsample = n_downsample
        encoder: list[nn.Module] = [nn.ReflectionPad2d(initial_kernel // 2),
                                    *_conv_in_relu(3 + semantic_channels, ngf, initial_kernel)]
        width = ngf
        for _ in range(n_downsample):
            encoder += _conv_in_relu(width, 2 * width, 3, stride=2, padding=1)
            width *= 2
        self.encoder = nn.Sequential(*encoder)
        self.resnet_core = nn.Sequential(*(ResnetBlock(width, dilation=1 if index == 0 else 2)
                                           for index in range(n_resnet_blocks)))

        def spade_block(fin: int, fout: int, dilation: int = 1) -> SPADEResBlock:
            return SPADEResBlock(fin, fout, semantic_channels, norm, spectral, spade_kernel, spade_hidden,
                                 dilation=dilation)

        self.spade_core = nn.ModuleList(spade_block(width, width, 2 if index < n_spade_blocks - 1 else 1)
                                        for index in range(n_spade_blocks))
        self.up_blocks = nn.ModuleList()
        for _ in range(n_downsample):
            self.up_blocks.append(spade_block(width, width // 2))
            width //= 2
        self.conv_img = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, masked_image: torch.Tensor, semantics: torch.Tensor) -> torch.Tensor:
        check_divisible(tuple(masked_image.shape[-2:]), 2 ** self.n_downsample, "the SESAME generator")
        x = self.encoder(torch.cat([masked_image, semantics], dim=1))
        x = self.resnet_core(x)
        for block in self.spade_core:
            x = block(x, semantics)
        for block in self.up_blocks:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), semantics)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class SesamePatchDiscriminator(nn.Module):
    """One two-stream PatchGAN; ``forward(concat(semantics, image))`` → ``[image features…, patch logits]``."""

    def __init__(self, semantic_channels: int, ndf: int = 64, num_layers: int = 4, norm: str = "instance",
                 spectral: bool = True):
        super().__init__()
        self.image = PatchDiscriminator(3, ndf, num_layers, norm, spectral)
        self.semantics = PatchDiscriminator(semantic_channels, ndf, num_layers, norm, spectral)
        del self.semantics.groups[-1]  # the semantic stream ends with its last hidden layer (no output conv)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        image, semantics = x[:, -3:], x[:, :-3]
        for group in self.semantics.groups:
            semantics = group(semantics)
        outputs = []
        for group in self.image.groups[:-1]:
            image = group(image)
            outputs.append(image)
        fused = image + image * semantics.sum(1, keepdim=True)
        outputs.append(self.image.groups[-1](fused))
        return outputs


class SesameDiscriminator(MultiScaleDiscriminator):
    """``num_scales`` two-stream PatchGANs, full resolution first (``MultiScaleDiscriminator.forward``)."""

    def __init__(self, semantic_channels: int, num_scales: int = 2, ndf: int = 64, num_layers: int = 4,
                 norm: str = "instance", spectral: bool = True):
        nn.Module.__init__(self)
        if num_scales < 1:
            raise ValueError(f"num_scales must be ≥ 1, got {num_scales}")
        self.scales = nn.ModuleList(SesamePatchDiscriminator(semantic_channels, ndf, num_layers, norm, spectral)
                                    for _ in range(num_scales))
