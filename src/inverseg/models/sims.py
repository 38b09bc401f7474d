"""The three networks of SIMS (Qi, Chen, Jia, Koltun, CVPR 2018): synthesis f, transformation T, ordering.

* :class:`SynthesisNetwork` — f(C, L) (§3.4): an encoder–decoder with skip connections.  The encoder builds a
  multi-scale representation of (layout, canvas, canvas mask); the decoder is a cascade of CRN refinement modules
  (``models/crn.py``) that see, at every scale, the *whole network input* (layout ⊕ canvas ⊕ canvas mask) resized
  to that scale, the encoder features of that scale and the upsampled coarser decoder features.  Official
  ``synthesis_256_512.py``: ``label_input = concat([label, proposal, mask])`` (24 channels: 20-ch label + canvas
  RGB/255 + mask) is the tensor that ``recursive_generator`` calls ``label``; every ``downsampled_k`` and the final
  full-resolution concat resize that 24-channel tensor, so pasted texture reaches every decoder level directly.
  Encoder blocks of 2,2,3,3,3,3 convs with 64,128,256,512,512,512 maps each followed by a 3×3/2 average pool,
  decoder blocks of 2 convs (512 ×5, then 256), a final 2×256 block at full resolution, then a linear RGB head
  ((x+1)/2·255, i.e. read as [-1, 1]) and a 20-class semantic head.  All convs: 3×3, no bias, layer norm,
  LReLU(0.2), like CRN.  ``decoder_input="layout"`` feeds the decoder the layout alone (this library's earlier
  wiring, kept as an option): canvas detail then reaches the decoder only through pooled encoder features.
* :class:`TransformationNetwork` — T (§3.2): a spatial transformer.  A VGG-like encoder of (retrieved colour,
  retrieved mask, target mask) in a square window, global average pooling and a linear layer initialised to the
  identity transform.  Official ``transformation.py`` predicts 6 free affine parameters (FC weights 0, bias =
  identity); ``params="rts"`` (default) predicts translation, rotation and an anisotropic log-scale, the
  transformations the paper names.
* :class:`OrderingNetwork` — (§3.3): a VGG-like classifier of a pair of adjacent segments in the layout; the
  output is a c-way distribution over classes: the class of the segment in front (official ``order.py``: 1×1 conv
  1024, dropout 0.5, 20-way logits).

The affine helpers at the end use ``F.affine_grid`` conventions: θ maps *output* normalised coordinates to the
*input* coordinates sampled (``align_corners=False``), so warping with θ and then with θ' samples the input at
θ·θ'.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .crn import RefinementModule, tf_slim_init


class ConvStack(nn.Module):
    """n × [3×3 conv (no bias) → layer norm → LReLU(0.2)] at one resolution (slim.repeat in the official code)."""

    def __init__(self, in_channels: int, width: int, convs: int = 2, negative_slope: float = 0.2):
        super().__init__()
        layers = []
        for index in range(convs):
            layers += [nn.Conv2d(in_channels if index == 0 else width, width, 3, padding=1, bias=False),
                       nn.GroupNorm(1, width), nn.LeakyReLU(negative_slope)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """3×3 average pool, stride 2 (slim.avg_pool2d 'SAME'); padding excluded from the average like TF.

    TF pads 'SAME' asymmetrically (0 before, 1 after, for even sizes); PyTorch pads symmetrically — the cells are
    shifted by half an input pixel, which only matters when porting weights.
    """
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


# ---------------------------------------------------------------------------------------------------------
# Synthesis network f
# ---------------------------------------------------------------------------------------------------------
class SynthesisNetwork(nn.Module):
    """f(canvas, canvas mask, layout) → RGB (B, 3, H, W) read as [-1, 1], and optional semantic logits.

    ``encoder_widths[i]`` / ``encoder_convs[i]``: encoder level i (each followed by a 3×3/2 average pool);
    ``decoder_widths[i]``: the decoder block at the scale of encoder level i's pooled output (same order, shallow
    → deep); ``final_width``: the full-resolution block.  ``layout_resize``: how the layout is brought to each
    scale — "bilinear" (official, align_corners=True) or "area" (CRN's soft class fractions).
    ``decoder_input``: what every decoder level and the final block concatenate — "full" (official: layout ⊕
    canvas ⊕ mask, the whole network input) or "layout" (the layout alone).
    """

    DECODER_INPUTS = ("full", "layout")

    def __init__(
        self,
        layout_channels: int,
        encoder_widths: Sequence[int],
        encoder_convs: Sequence[int],
        decoder_widths: Sequence[int],
        final_width: int,
        semantic_classes: int = 0,
        layout_resize: str = "bilinear",
        decoder_input: str = "full",
    ):
        super().__init__()
        encoder_widths, encoder_convs = tuple(encoder_widths), tuple(encoder_convs)
        decoder_widths = tuple(decoder_widths)
        if not encoder_widths or len(encoder_widths) != len(encoder_convs) or \
                len(decoder_widths) != len(encoder_widths):
            raise ValueError(f"encoder_widths {list(encoder_widths)}, encoder_convs {list(encoder_convs)} and "
                             f"decoder_widths {list(decoder_widths)} must have one entry per level")
        if layout_resize not in ("bilinear", "area"):
            raise ValueError(f"layout_resize must be 'bilinear' or 'area', got {layout_resize!r}")
        if decoder_input not in self.DECODER_INPUTS:
            raise ValueError(f"decoder_input must be 'full' or 'layout', got {decoder_input!r}")
        self.layout_channels = layout_channels
        self.in_channels = layout_channels + 4  # + canvas RGB in [0, 1] (zero where empty) + canvas mask
        self.layout_resize = layout_resize
        self.decoder_input = decoder_input
        guide = self.in_channels if decoder_input == "full" else layout_channels  # re-injected at every scale
        self.encoder = nn.ModuleList()
        previous = self.in_channels
        for width, convs in zip(encoder_widths, encoder_convs):
            self.encoder.append(ConvStack(previous, width, convs))
            previous = width
        # decoder block i sees: guide @ scale i + encoder pool i + upsampled decoder block i+1
        self.decoder = nn.ModuleList()
        for index, width in enumerate(decoder_widths):
            coarser = decoder_widths[index + 1] if index + 1 < len(decoder_widths) else 0
            self.decoder.append(RefinementModule(guide + encoder_widths[index] + coarser, width))
        self.final = RefinementModule(guide + decoder_widths[0], final_width)
        self.to_rgb = nn.Conv2d(final_width, 3, 1)
        self.to_semantic = nn.Conv2d(final_width, semantic_classes, 1) if semantic_classes else None
        tf_slim_init(self)

    def _at_scale(self, guide: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The decoder's guide (full input or layout) at one decoder scale (official ``downsampled_k``)."""
        if tuple(guide.shape[-2:]) == tuple(size):
            return guide
        if self.layout_resize == "area":
            return F.adaptive_avg_pool2d(guide, size)
        return F.interpolate(guide, size=size, mode="bilinear", align_corners=True)

    @staticmethod
    def _up(x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)

    def forward(self, layout: torch.Tensor, canvas: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``layout`` (B, C, H, W) one-hot (+ void), ``canvas`` (B, 3, H, W) in [-1, 1], ``mask`` (B, 1, H, W)."""
        if layout.shape[1] != self.layout_channels:
            raise ValueError(f"SynthesisNetwork expects a {self.layout_channels}-channel layout, got "
                             f"{tuple(layout.shape)}")
        mask = mask.float()
        canvas01 = (canvas + 1) / 2 * mask  # official: proposal / 255, zero where nothing was pasted
        x = torch.cat([layout, canvas01, mask], dim=1)
        guide = x if self.decoder_input == "full" else layout
        pooled = []
        for block in self.encoder:
            x = _pool(block(x))
            pooled.append(x)
        features = None
        for index in reversed(range(len(self.decoder))):
            size = pooled[index].shape[-2:]
            parts = [self._at_scale(guide, size), pooled[index]]
            if features is not None:
                parts.append(self._up(features, size))
            features = self.decoder[index](torch.cat(parts, dim=1))
        features = self.final(torch.cat([guide, self._up(features, layout.shape[-2:])], dim=1))
        semantic = self.to_semantic(features) if self.to_semantic is not None else None
        return self.to_rgb(features), semantic


# ---------------------------------------------------------------------------------------------------------
# Transformation network T
# ---------------------------------------------------------------------------------------------------------
class TransformationNetwork(nn.Module):
    """(B, 5, S, S) = [retrieved RGB in [0, 1] (zero outside), retrieved mask, target mask] → θ (B, 2, 3).

    θ acts in window-normalised coordinates (see :func:`warp`); the last layer starts at zero so the untrained
    network predicts the identity (official: FC weights 0, bias = identity).
    """

    PARAMS = {"rts": 5, "affine": 6}

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128), convs: Sequence[int] | None = None,
                 params: str = "rts", in_channels: int = 5):
        super().__init__()
        if params not in self.PARAMS:
            raise ValueError(f"transformation params must be one of {', '.join(self.PARAMS)}, got {params!r}")
        widths = tuple(widths)
        convs = tuple(convs) if convs else (2,) * len(widths)
        if len(convs) != len(widths):
            raise ValueError(f"{len(widths)} widths but {len(convs)} conv counts")
        self.params = params
        blocks, previous = [], in_channels
        for width, count in zip(widths, convs):
            blocks += [ConvStack(previous, width, count), nn.AvgPool2d(2, ceil_mode=True)]
            previous = width
        self.encoder = nn.Sequential(*blocks)
        self.head = nn.Linear(previous, self.PARAMS[params])
        tf_slim_init(self)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = self.head(self.encoder(x).mean(dim=(2, 3)))
        return params_to_theta(values, self.params)


# ---------------------------------------------------------------------------------------------------------
# Ordering network
# ---------------------------------------------------------------------------------------------------------
class OrderingNetwork(nn.Module):
    """(B, 2C + 1, h, w) = [the pair's pixels one-hot by class, the whole layout one-hot + void] → (B, C) logits.

    Trained with cross-entropy on the class of the front segment; at test time the two classes of the pair are
    compared (the paper: "a c-dimensional one-hot vector").
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = (32, 64, 128, 128),
                 convs: Sequence[int] | None = None, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        widths = tuple(widths)
        convs = tuple(convs) if convs else (2,) * len(widths)
        if len(convs) != len(widths):
            raise ValueError(f"{len(widths)} widths but {len(convs)} conv counts")
        self.num_classes = num_classes
        self.in_channels = 2 * num_classes + 1
        blocks, previous = [], self.in_channels
        for width, count in zip(widths, convs):
            blocks += [ConvStack(previous, width, count), nn.AvgPool2d(2, ceil_mode=True)]
            previous = width
        self.encoder = nn.Sequential(*blocks)
        self.hidden = nn.Linear(previous, hidden)
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(hidden, num_classes)
        tf_slim_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x).mean(dim=(2, 3))
        return self.classify(self.dropout(F.leaky_relu(self.hidden(features), 0.2)))


# ---------------------------------------------------------------------------------------------------------
# Affine transforms
# ---------------------------------------------------------------------------------------------------------
def params_to_theta(values: torch.Tensor, kind: str = "rts") -> torch.Tensor:
    """Network outputs → θ (B, 2, 3); zeros give the identity for both parametrisations.

    ``rts``: (tx, ty, rotation in radians, log sx, log sy); θ = R(rotation) · diag(sx, sy) plus translation.
    ``affine``: the six entries added to the identity (official transformation.py).
    """
    if kind == "affine":
        identity = torch.tensor([1.0, 0, 0, 0, 1.0, 0], device=values.device, dtype=values.dtype)
        return (values + identity).view(-1, 2, 3)
    if kind != "rts":
        raise ValueError(f"unknown affine parametrisation {kind!r}")
    tx, ty, angle, log_sx, log_sy = values.unbind(-1)
    sx, sy = log_sx.exp(), log_sy.exp()
    cos, sin = angle.cos(), angle.sin()
    row0 = torch.stack([cos * sx, -sin * sy, tx], dim=-1)
    row1 = torch.stack([sin * sx, cos * sy, ty], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def theta_to_rts(theta: torch.Tensor) -> torch.Tensor:
    """Inverse of ``params_to_theta(·, "rts")`` for θ without shear: (B, 2, 3) → (B, 5)."""
    a, b, tx = theta[..., 0, 0], theta[..., 0, 1], theta[..., 0, 2]
    c, d, ty = theta[..., 1, 0], theta[..., 1, 1], theta[..., 1, 2]
    angle = torch.atan2(c, a)
    sx = torch.sqrt(a * a + c * c)
    sy = torch.sqrt(b * b + d * d)
    return torch.stack([tx, ty, angle, sx.log(), sy.log()], dim=-1)


def to_matrix(theta: torch.Tensor) -> torch.Tensor:
    """(…, 2, 3) → (…, 3, 3) homogeneous."""
    bottom = torch.zeros(*theta.shape[:-2], 1, 3, dtype=theta.dtype, device=theta.device)
    bottom[..., 0, 2] = 1
    return torch.cat([theta, bottom], dim=-2)


def invert_theta(theta: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(to_matrix(theta))[..., :2, :]


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """θ for warping with ``first`` and then with ``second`` (samples the input at first·second)."""
    return (to_matrix(first) @ to_matrix(second))[..., :2, :]


def warp(image: torch.Tensor, theta: torch.Tensor, size: tuple[int, int] | None = None,
         mode: str = "bilinear") -> torch.Tensor:
    """Spatial-transformer warp: output(x) = image(θ·x) in normalised coordinates, zeros outside."""
    size = tuple(size or image.shape[-2:])
    grid = F.affine_grid(theta.to(image.dtype), [image.shape[0], image.shape[1], *size], align_corners=False)
    return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)


def random_rts(count: int, max_translation: float, max_rotation: float, max_log_scale: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(count, 5) uniform random rts parameters (rotation in radians)."""
    bounds = torch.tensor([max_translation, max_translation, max_rotation, max_log_scale, max_log_scale])
    return (torch.rand(count, 5, generator=generator) * 2 - 1) * bounds


__all__ = [
    "ConvStack", "OrderingNetwork", "SynthesisNetwork", "TransformationNetwork", "compose", "invert_theta",
    "params_to_theta", "random_rts", "theta_to_rts", "to_matrix", "warp",
]
