"""The VGG feature-matching ("perceptual") loss of pix2pixHD §3.2 eq. 5, reused unchanged by SPADE.

L_VGG = Σ_i w_i · mean|Φ_i(G(s)) − Φ_i(x)| over relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 with
w = (1/32, 1/16, 1/8, 1/4, 1), on a frozen ImageNet VGG19 with max pooling; the recipes scale it by λ = 10.

Input convention (implementations.md §14.1): both official codes feed images in [-1, 1] straight into
torchvision's VGG19, without ImageNet normalisation — ``legacy``, the default here, reproduces that.  When the
standard ``vgg19-dcbb9e9d.pth`` is absent, ``inverseg.perception.load_vgg`` substitutes the offline VGG16 converted
from Caffe/Keras weights; those weights expect BGR [0, 255] minus the Caffe mean, so for them ``caffe`` (or
``auto`` = the convention that belongs to the weights) is the correct choice, while ``legacy`` feeds them inputs
~127× too small (the loss still works but weighs far less against the adversarial terms).
"""

from __future__ import annotations

import sys
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PIX2PIXHD_VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
PIX2PIXHD_VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
INPUT_CONVENTIONS = ("legacy", "caffe", "imagenet", "auto")


class VGGLoss(nn.Module):
    """Σ_i w_i · L1(Φ_i(fake), Φ_i(real)) with a frozen feature extractor returning a dict of layers."""

    def __init__(self, extractor: nn.Module, layers: Sequence[str] = PIX2PIXHD_VGG_LAYERS,
                 weights: Sequence[float] = PIX2PIXHD_VGG_WEIGHTS):
        super().__init__()
        if len(layers) != len(weights):
            raise ValueError(f"{len(layers)} layers but {len(weights)} weights")
        self.extractor = extractor
        self.layers, self.weights = tuple(layers), tuple(float(w) for w in weights)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake_features = self.extractor(fake)
        with torch.no_grad():
            real_features = self.extractor(real)
        loss = fake.new_zeros(())
        for name, weight in zip(self.layers, self.weights):
            loss = loss + weight * F.l1_loss(fake_features[name], real_features[name])
        return loss


def build_vgg_loss(backbone: str = "auto", weights: str | None = "auto", input_convention: str = "legacy",
                   verbose: bool = True) -> VGGLoss:
    """The pix2pixHD/SPADE VGG loss on VGG19 (or the offline VGG16 substitute, announced on stdout).

    ``backbone``: auto | vgg19 | vgg16; ``weights``: auto | a file path | None (random, for tests only);
    ``input_convention``: legacy (official) | caffe | imagenet | auto (the one that belongs to the weights).
    """
    from ..perception import load_vgg

    if input_convention not in INPUT_CONVENTIONS:
        raise ValueError(f"vgg input convention must be one of {', '.join(INPUT_CONVENTIONS)}, "
                         f"got {input_convention!r}")
    arch = "vgg19" if backbone in ("auto", "vgg19") else backbone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extractor = load_vgg(arch, layers=PIX2PIXHD_VGG_LAYERS, pooling="max",
                             input_convention=None if input_convention == "auto" else input_convention,
                             weights=weights)
    if verbose:
        for warning in caught:
            print(f"note: {warning.message}", file=sys.stderr)
        if extractor.arch != "vgg19" and extractor.input_convention == "legacy" and weights is not None:
            print("note: the VGG loss feeds [-1,1] images (legacy) to VGG16 weights trained on Caffe inputs; "
                  "set loss.vgg_input_convention=caffe (or auto) for the convention of these weights",
                  file=sys.stderr)
    return VGGLoss(extractor)
