"""SPADE generator and VAE image encoder (Park et al., "Semantic Image Synthesis with Spatially-Adaptive
Normalization", CVPR 2019 — "GauGAN").  The discriminator is the shared multi-scale PatchGAN
(``inverseg.nn.discriminator``); the SPADE layer and residual block are in ``inverseg.nn.spade``.

Generator (§3, Fig. 4 right; appendix A, Fig. 13; official ``SPADEGenerator``, implementations.md §4.1): no
encoder — the label map enters only through the SPADE layers.  It starts from a small grid, either a 3×3 conv of
the nearest-downsampled label map or, with the VAE, a linear map of a 256-d latent z, then runs SPADE ResBlks
16·nf, 16·nf, 16·nf, 8·nf, 4·nf, 2·nf, nf with nearest ×2 upsampling between them:

    normal (5 ups): head ↑ middle_0   middle_1 ↑ up_0 ↑ up_1 ↑ up_2 ↑ up_3
    more   (6 ups): head ↑ middle_0 ↑ middle_1 ↑ up_0 ↑ up_1 ↑ up_2 ↑ up_3          (official Cityscapes)
    most   (7 ups): … ↑ up_3 ↑ up_4 (nf → nf/2)

then LReLU(0.2) → 3×3 conv → tanh.  The start grid is ``output_size / 2^ups``; the official code derives it as
``crop_size // 2^ups`` wide and ``round(width / aspect_ratio)`` high, which is the same for exact multiples.

Image encoder (§3.3 "multi-modal synthesis", appendix B Fig. 15; official ``ConvEncoder``): the image is resized
(bilinear) to 256×256, six 3×3 stride-2 convs 64, 128, 256, 512, 512, 512 (spectral norm + instance norm, LReLU
0.2 between), flattened 512·4·4 → μ, log σ² (256-d).  Official quirk: for crop sizes < 256 it drops the sixth
conv but still resizes to 256, so the flattened size no longer matches its linear layers; here the input size
and the number of convs are parameters and the linear layers follow from them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import conv_norm
from ..nn.spade import SPADEResBlock

UPSAMPLING = {"normal": 5, "more": 6, "most": 7}


def start_grid(output_size: tuple[int, int], num_upsampling: str) -> tuple[int, int]:
    """(H, W) of the generator's first feature map; the output size must be a multiple of 2^ups."""
    if num_upsampling not in UPSAMPLING:
        raise ValueError(f"num_upsampling must be one of {', '.join(UPSAMPLING)}, got {num_upsampling!r}")
    factor = 2 ** UPSAMPLING[num_upsampling]
    height, width = output_size
    if height % factor or width % factor:
        raise ValueError(f"SPADE with num_upsampling={num_upsampling!r} upsamples {factor}×, so the image size must "
                         f"be a multiple of {factor}, got {height}×{width}; fix: set data.size to a multiple of "
                         f"{factor} or use fewer upsamplings ('normal' = 32×)")
    return height // factor, width // factor


class SPADEGenerator(nn.Module):
    """Conditioning map (B, C, H, W) [+ latent z (B, z_dim)] → image (B, 3, H, W) in [-1, 1]."""

    def __init__(self, cond_channels: int, output_size: tuple[int, int], ngf: int = 64,
                 num_upsampling: str = "normal", norm: str = "syncbatch", spectral: bool = True,
                 spade_kernel: int = 3, spade_hidden: int = 128, z_dim: int | None = None,
                 modulation: Callable[..., nn.Module] | None = None, block_cond_channels: int | None = None):
        """``modulation``: the blocks' conditional normalisation (SPADE; SAFM's generator passes SAFM);
        ``block_cond_channels``: channels of :meth:`condition`'s output when it differs from the input's."""
        super().__init__()
        self.grid = start_grid(tuple(output_size), num_upsampling)
        self.z_dim, self.ngf = z_dim, ngf
        if z_dim:  # VAE mode: the appearance comes from z, the layout only through SPADE
            self.fc = nn.Linear(z_dim, 16 * ngf * self.grid[0] * self.grid[1])
        else:  # deterministic mode: start from the downsampled label map
            self.fc = nn.Conv2d(cond_channels, 16 * ngf, 3, padding=1)

        def block(fin: int, fout: int) -> SPADEResBlock:
            return SPADEResBlock(fin, fout, block_cond_channels or cond_channels, norm, spectral, spade_kernel,
                                 spade_hidden, modulation)

        add_spade_decoder(self, ngf, num_upsampling, block)

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.z_dim:
            if z is None:
                raise ValueError("this SPADE generator was built with a VAE latent: pass z (B, z_dim)")
            x = self.fc(z).unflatten(1, (16 * self.ngf, *self.grid))  # (a traced reshape keeps C known)
        else:
            x = self.fc(F.interpolate(cond, size=self.grid, mode="nearest"))
        return spade_decoder(self, x, self.condition(cond))

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        """The conditioning map the blocks see (after ``fc`` took the raw one): the raw map in SPADE."""
        return cond


class StyleEncoder(nn.Module):
    """The VAE image encoder: image → (μ, log σ²), each (B, z_dim).

    ``num_layers`` 3×3 stride-2 convs with widths nf·(1, 2, 4, 8, 8, 8 …), each spectral-normalised and
    instance-normalised (official ``norm_E='spectralinstance'``), LReLU(0.2) between and after; the image is first
    resized (bilinear) to ``input_size``.
    """

    def __init__(self, nf: int = 64, z_dim: int = 256, input_size: tuple[int, int] = (256, 256),
                 num_layers: int = 6, norm: str = "instance", spectral: bool = True):
        super().__init__()
        self.input_size = tuple(input_size)
        widths = [3] + [nf * min(2**i, 8) for i in range(num_layers)]
        self.convs = nn.ModuleList(conv_norm(fin, fout, 3, 2, 1, norm, spectral)
                                   for fin, fout in zip(widths[:-1], widths[1:]))
        height, width = self.input_size
        for _ in range(num_layers):
            height, width = (height + 1) // 2, (width + 1) // 2
        self.grid = (height, width)
        self.fc_mu = nn.Linear(widths[-1] * height * width, z_dim)
        self.fc_var = nn.Linear(widths[-1] * height * width, z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(image.shape[-2:]) != self.input_size:
            image = F.interpolate(image, size=self.input_size, mode="bilinear", align_corners=False)
        x = image
        for index, conv in enumerate(self.convs):
            x = conv(F.leaky_relu(x, 0.2) if index else x)
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = μ + ε·σ, ε ~ N(0, I) (Kingma & Welling §2.4); ``generator`` makes sampling reproducible."""
    if generator is None:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn(mu.shape, generator=generator).to(mu)
    return mu + eps * torch.exp(0.5 * logvar)


def add_spade_decoder(generator: nn.Module, ngf: int, num_upsampling: str, block) -> None:
    """Give ``generator`` SPADE's decoder modules under the names :func:`spade_decoder` uses: head_0, middle_0/1
    (16·ngf), the up blocks halving the width down to ngf (ngf/2 for 'most'), conv_img.  ``block(fin, fout)``
    builds one SPADE residual block (each generator passes its own conditioning)."""
    generator.head_0 = block(16 * ngf, 16 * ngf)
    generator.middle_0 = block(16 * ngf, 16 * ngf)
    generator.middle_1 = block(16 * ngf, 16 * ngf)
    generator.upsample_between_middles = num_upsampling in ("more", "most")
    widths = [16 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf] + ([ngf // 2] if num_upsampling == "most" else [])
    generator.up_blocks = nn.ModuleList(block(fin, fout) for fin, fout in zip(widths[:-1], widths[1:]))
    generator.conv_img = nn.Conv2d(widths[-1], 3, 3, padding=1)


def spade_decoder(generator: nn.Module, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """SPADE's decoder from the start grid: head_0, middle_0/1 and the up blocks (nearest ×2 before each),
    LReLU, conv_img, tanh.  ``generator`` holds those modules under SPADE's names (LGGAN's global branch too)."""
    x = generator.head_0(x, cond)
    x = generator.middle_0(F.interpolate(x, scale_factor=2, mode="nearest"), cond)
    if generator.upsample_between_middles:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    x = generator.middle_1(x, cond)
    for block in generator.up_blocks:
        x = block(F.interpolate(x, scale_factor=2, mode="nearest"), cond)
    return torch.tanh(generator.conv_img(F.leaky_relu(x, 0.2)))
