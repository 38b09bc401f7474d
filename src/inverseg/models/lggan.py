"""LGGAN generator (Tang, Xu, Yan, Torr, Sebe, "Local Class-Specific and Global Image-Level Generative Adversarial
Networks for Semantic-Guided Scene Generation", CVPR 2020; official ``Ha0Tang/LGGAN@e67dfb83:
semantic_image_synthesis/models/networks/generator.py: LGGANGenerator``, methods-later.md §2.1).

One shared encoder E feeds three heads (paper Fig. 2: E, G_g, G_l, G_w):

    E    reflect-pad 3 → conv7 (C → nf) → conv3 s2 (2nf) → conv3 s2 (4nf) = x_encode (¼) → conv3 s2 (8nf)
         → conv3 s2 (16nf) (1/16), all InstanceNorm + ReLU; the 1/16 map is nearest-resized (subsampled: every
         2nd, 4th or 8th row and column) to the start grid — it replaces SPADE's ``fc`` of the downsampled label map;
    G_g  the SPADE trunk (ResBlks 16nf ×3, 8nf, 4nf, 2nf, nf, conditioned on the full layout) → ``global``;
    G_l  9 reflect-padded residual blocks on x_encode, two stride-2 transposed convs (2nf, nf) → feature F at full
         resolution; per class k: F ⊙ M_k → reflect-pad 3 → **class-specific** conv7 (nf → 3) → tanh
         = image_k;
         conv3 over all image_k (3K → 3) → tanh = ``local``;
    G_w  two transposed convs on x_encode (2nf, nf) → conv1 (nf → 2) → softmax = (A_local, A_global);
    out  A_local · local + A_global · global.

The K class-specific convs, which the official code writes out as 35 attributes (``deconv5_0`` … ``deconv5_34``)
over masks kept in ``globals()``, are here **one grouped convolution**: the masked features of all classes are a
(B, K·nf, H, W) tensor and ``groups=K`` gives class k its own (3, nf, 7, 7) kernel — the same parameters in the same
output order (image_k = channels 3k…3k+2, the official concatenation order).  The masked mean of F per class
(the classification module's input, including the zeros outside the mask as officially) is one einsum.

Masks M_k are the layout's one-hot class channels (the edge channel is not a class).  ``local_classes = K'`` smaller
than the number of classes gives classes 0…K'−1 their own branch and one more branch for the sum of all others and
the don't-care channel (official ADE20K: 51 + "other"); the classifier then covers only the K' single classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.spade import SPADEResBlock
from .pix2pixhd import ResnetBlock, conv7_in, down, up
from .spade import UPSAMPLING, add_spade_decoder, spade_decoder, start_grid


@dataclass
class LGGANOutputs:
    """Everything the LGGAN losses need from one generator pass."""

    image: torch.Tensor           # (B, 3, H, W) the fused output
    global_image: torch.Tensor    # (B, 3, H, W) G_g
    local_image: torch.Tensor     # (B, 3, H, W) G_l after the fusion conv
    class_images: torch.Tensor    # (B, K, 3, H, W) image_k, one per local branch
    masks: torch.Tensor           # (B, K, H, W) the branch masks M_k
    class_logits: torch.Tensor    # (B, K', K') classifier scores of the K' single-class branches
    attention: torch.Tensor       # (B, 2, H, W) (A_local, A_global), softmax over the two


class LGGANGenerator(nn.Module):
    """Layout (B, C, H, W) → image (B, 3, H, W) in [-1, 1]; ``forward(layout, details=True)`` →
    :class:`LGGANOutputs`.

    ``num_classes``: the layout's class channels (first in the layout; then the don't-care channel when
    ``dontcare_channel``, then the instance-edge channel).  ``unused_start_conv`` builds the official network's
    ``fc`` (conv3, C → 16nf), which its forward never calls — only to reproduce the official parameter count.
    """

    def __init__(self, cond_channels: int, output_size: tuple[int, int], num_classes: int,
                 dontcare_channel: bool = False, local_classes: int | None = None, ngf: int = 64,
                 num_upsampling: str = "normal", norm: str = "syncbatch", spectral: bool = True,
                 spade_kernel: int = 3, spade_hidden: int = 128, local_blocks: int = 9,
                 unused_start_conv: bool = False):
        super().__init__()
        mask_channels = num_classes + int(dontcare_channel)
        if mask_channels > cond_channels:
            raise ValueError(f"the layout has {cond_channels} channels, fewer than its {mask_channels} class channels")
        if local_classes is not None and not 0 < local_classes <= num_classes:
            raise ValueError(f"model.local_classes must be null or between 1 and {num_classes} (the classes), "
                             f"got {local_classes}")
        self.grid = start_grid(tuple(output_size), num_upsampling)
        # E halves the size four times (the output size is a multiple of 2^ups ≥ 32, so exactly): grid = that / step
        self.start_step = 2 ** (UPSAMPLING[num_upsampling] - 4)
        self.num_classes, self.mask_channels = num_classes, mask_channels
        self.single_classes = num_classes if local_classes is None else local_classes
        # a branch for "every other class" only when classes are grouped (official ADE20K)
        self.other_branch = local_classes is not None and local_classes < num_classes
        self.num_branches = self.single_classes + int(self.other_branch)
        self.ngf = ngf

        # shared encoder E: x_encode after three layers, the start of G_g after five
        self.encoder_head = nn.Sequential(*conv7_in(cond_channels, ngf, "instance"), *down(ngf, 2 * ngf, "instance"),
                                          *down(2 * ngf, 4 * ngf, "instance"))
        self.encoder_tail = nn.Sequential(*down(4 * ngf, 8 * ngf, "instance"), *down(8 * ngf, 16 * ngf, "instance"))
        self.fc = nn.Conv2d(cond_channels, 16 * ngf, 3, padding=1) if unused_start_conv else None

        # G_g: the SPADE trunk
        def block(fin: int, fout: int) -> SPADEResBlock:
            return SPADEResBlock(fin, fout, cond_channels, norm, spectral, spade_kernel, spade_hidden)

        add_spade_decoder(self, ngf, num_upsampling, block)

        # G_l: shared decoder, then K class-specific 7×7 convs as one grouped conv, then the fusion conv
        self.local_blocks = nn.Sequential(*(ResnetBlock(4 * ngf, "instance", "reflect") for _ in range(local_blocks)))
        self.local_up = nn.Sequential(*up(4 * ngf, 2 * ngf, "instance"), *up(2 * ngf, ngf, "instance"))
        self.class_convs = nn.Conv2d(self.num_branches * ngf, self.num_branches * 3, 7, groups=self.num_branches)
        self.local_fuse = nn.Conv2d(self.num_branches * 3, 3, 3, padding=1)
        self.classifier = nn.Linear(ngf, self.single_classes)

        # G_w: the two-channel weight map
        self.attention = nn.Sequential(*up(4 * ngf, 2 * ngf, "instance"), *up(2 * ngf, ngf, "instance"),
                                       nn.Conv2d(ngf, 2, 1))

    # ------------------------------------------------------------------ pieces
    def branch_masks(self, layout: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W): one-hot channels of the single-class branches [+ the sum of the rest incl. don't care]."""
        masks = layout[:, :self.single_classes]
        if self.other_branch:
            other = layout[:, self.single_classes:self.mask_channels].sum(1, keepdim=True)
            masks = torch.cat([masks, other], 1)
        return masks

    def start_map(self, x_encode: torch.Tensor) -> torch.Tensor:
        """E's 1/16 map subsampled to the start grid: every ``start_step``-th row and column, which is exactly what
        nearest interpolation to the grid picks (the step is a power of two).  A slice rather than
        ``F.interpolate(size=grid)``: the exported Resize loses the channel count the next batch norm needs."""
        return self.encoder_tail(x_encode)[:, :, ::self.start_step, ::self.start_step]

    def global_branch(self, start: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        return spade_decoder(self, start, layout)

    def class_branches(self, feature: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """All class-specific convs at once: (B, nf, H, W) × (B, K, H, W) → tanh images (B, K·3, H, W)."""
        batch, channels, height, width = feature.shape
        masked = (feature[:, None] * masks[:, :, None]).reshape(batch, -1, height, width)
        return torch.tanh(self.class_convs(F.pad(masked, (3, 3, 3, 3), mode="reflect")))

    def class_logits(self, feature: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Global average pool of F ⊙ M_k over the whole image (official ``AdaptiveAvgPool2d``) → Linear."""
        height, width = feature.shape[-2:]
        pooled = torch.einsum("bchw,bkhw->bkc", feature, masks[:, :self.single_classes]) / (height * width)
        return self.classifier(pooled)

    # ------------------------------------------------------------------ forward
    def forward(self, layout: torch.Tensor, details: bool = False) -> torch.Tensor | LGGANOutputs:
        x_encode = self.encoder_head(layout)
        start = self.start_map(x_encode)
        global_image = self.global_branch(start, layout)

        masks = self.branch_masks(layout)
        feature = self.local_up(self.local_blocks(x_encode))
        class_images = self.class_branches(feature, masks)
        local_image = torch.tanh(self.local_fuse(class_images))

        attention = torch.softmax(self.attention(x_encode), dim=1)
        image = attention[:, :1] * local_image + attention[:, 1:] * global_image
        if not details:
            return image
        batch, _, height, width = image.shape
        return LGGANOutputs(image, global_image, local_image,
                            class_images.view(batch, self.num_branches, 3, height, width), masks,
                            self.class_logits(feature, masks), attention)
