"""Multi-scale PatchGAN discriminator (pix2pixHD §3.2 "multi-scale discriminators"; SPADE §4 / appendix A).

``num_scales`` identical PatchGANs look at the conditional input ``concat(label encoding, image)`` at full,
half, quarter … resolution (each step: AvgPool 3×3, stride 2, pad 1, ``count_include_pad=False``, applied to the
whole concatenation, so the one-hot label is averaged too — as officially).  Every PatchGAN returns the output of
each of its layer groups; the last one is the patch logit map, the others feed the feature-matching loss.

One PatchGAN, conv 4×4 with padding 2 throughout::

    conv s2 → ndf, LReLU(0.2)                                  (no normalisation)
    conv s2 → 2·ndf, norm, LReLU     ┐ num_layers − 2 of these, widths doubling, capped at 512
    …                                ┘
    conv s1 → min(2^(num_layers−1)·ndf, 512), norm, LReLU      (the last hidden layer keeps the resolution)
    conv s1 → 1                                                (no normalisation; patch logits)

**The depth parameter.** ``num_layers`` counts the convs before the output conv.  The official flags both called
``n_layers_D`` mean different things (implementations.md §14.3): pix2pixHD's ``n_layers_D=3`` counts the stride-2
layers and *appends* the stride-1 layer; SPADE's ``n_layers_D=4`` counts all hidden layers and makes its *last*
one stride 1.  Both defaults build the same network — ``num_layers=4`` here (64 s2, 128 s2, 256 s2, 512 s1, 1 s1;
five outputs).  Convert with :func:`num_layers_from_pix2pixhd` / :func:`num_layers_from_spade`.

Normalisation: pix2pixHD uses instance norm (``spectral=False``); SPADE ``spectralinstance`` (spectral norm on the
normalised convs, then instance norm).  The first and the output convs are never normalised in either.

**Two streams** (``two_stream=True``; SESAME, Ntavelis et al., ECCV 2020, §3.2, and the discriminator SAFM's
official code trains with, methods-later.md §3.3/§4.4): the semantic channels and the image (the last 3 channels of
the input) go through two PatchGAN bodies of identical shape; the image stream's last hidden features f are
rescaled by the channel sum of the semantic stream's, ``f + f · Σ_c s_c``, before the output conv.  Only the image
stream's features are returned for feature matching (unfused), then the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_norm, downsample_avg


def num_layers_from_pix2pixhd(n_layers_D: int) -> int:
    """pix2pixHD's ``--n_layers_D`` → ``num_layers`` (it appends one stride-1 layer after n_layers_D strided ones)."""
    return n_layers_D + 1


def num_layers_from_spade(n_layers_D: int) -> int:
    """SPADE's ``--n_layers_D`` → ``num_layers`` (the same count)."""
    return n_layers_D


def patch_body(in_channels: int, ndf: int, num_layers: int, norm: str, spectral: bool,
               max_channels: int = 512) -> tuple[list[nn.Sequential], int]:
    """The hidden layer groups of a PatchGAN (everything before the output conv) and their last width."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be ≥ 1, got {num_layers}")
    groups = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2))]
    width = ndf
    for index in range(1, num_layers):
        previous, width = width, min(width * 2, max_channels)
        stride = 1 if index == num_layers - 1 else 2
        groups.append(nn.Sequential(conv_norm(previous, width, 4, stride, 2, norm, spectral), nn.LeakyReLU(0.2)))
    return groups, width


class PatchDiscriminator(nn.Module):
    """One PatchGAN; ``forward`` returns ``[hidden_1, …, hidden_num_layers, logits]``."""

    def __init__(self, in_channels: int, ndf: int = 64, num_layers: int = 4, norm: str = "instance",
                 spectral: bool = False, max_channels: int = 512):
        super().__init__()
        groups, width = patch_body(in_channels, ndf, num_layers, norm, spectral, max_channels)
        groups.append(nn.Sequential(nn.Conv2d(width, 1, 4, stride=1, padding=2)))
        self.groups = nn.ModuleList(groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for group in self.groups:
            x = group(x)
            outputs.append(x)
        return outputs


class TwoStreamPatchDiscriminator(nn.Module):
    """SESAME's PatchGAN: input ``concat(semantics, image)``; ``forward`` → ``[image hidden_1 …, logits]``."""

    def __init__(self, in_channels: int, ndf: int = 64, num_layers: int = 4, norm: str = "instance",
                 spectral: bool = False, max_channels: int = 512, image_channels: int = 3):
        super().__init__()
        if in_channels <= image_channels:
            raise ValueError(f"a two-stream discriminator needs semantic channels before the {image_channels} image "
                             f"channels, got {in_channels} input channels")
        self.image_channels = image_channels
        semantic, _ = patch_body(in_channels - image_channels, ndf, num_layers, norm, spectral, max_channels)
        self.semantic = nn.Sequential(*semantic)
        image, width = patch_body(image_channels, ndf, num_layers, norm, spectral, max_channels)
        self.image = nn.ModuleList(image)
        self.output = nn.Conv2d(width, 1, 4, stride=1, padding=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        semantics = self.semantic(x[:, :-self.image_channels]).sum(dim=1, keepdim=True)
        features = x[:, -self.image_channels:]
        outputs = []
        for group in self.image:
            features = group(features)
            outputs.append(features)
        outputs.append(self.output(features + features * semantics))
        return outputs


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGANs (two-stream ones with ``two_stream``); ``forward`` → one output list per scale,
    full resolution first."""

    def __init__(self, in_channels: int, num_scales: int = 2, ndf: int = 64, num_layers: int = 4,
                 norm: str = "instance", spectral: bool = False, two_stream: bool = False):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be ≥ 1, got {num_scales}")
        kind = TwoStreamPatchDiscriminator if two_stream else PatchDiscriminator
        self.scales = nn.ModuleList(kind(in_channels, ndf, num_layers, norm, spectral) for _ in range(num_scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        results = []
        for index, discriminator in enumerate(self.scales):
            if index:
                x = downsample_avg(x)
            results.append(discriminator(x))
        return results
