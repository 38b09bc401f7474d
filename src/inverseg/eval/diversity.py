"""Diversity: mean pairwise perceptual distance between the k images generated for one layout.

The distance is **LPIPS-style, unweighted**: VGG16 activations at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3
(the layers of LPIPS-VGG), each unit-normalised along the channel axis at every pixel, squared differences summed
over channels, averaged over pixels, summed over the five layers.  LPIPS proper multiplies the squared
differences by learned per-channel weights; those weights are not available offline, so this is LPIPS with all
weights equal to 1 — the same ordering of "more different", a different scale.  Do not compare it with
published LPIPS numbers.
"""

from __future__ import annotations

import itertools

import torch

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
DIVERSITY_NAME = "LPIPS-style, unweighted, VGG16"


class PerceptualDistance:
    """``distance(a, b)`` for (B,3,H,W) images in [-1,1] → (B,) distances."""

    def __init__(self, vgg=None):
        if vgg is None:
            import warnings

            from ..perception import load_vgg

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the VGG16 substitute is expected here; it is named in reports
                vgg = load_vgg("vgg16", layers=LPIPS_LAYERS)
        self.vgg = vgg
        self.description = getattr(vgg, "weights_description", "VGG16")
        self.record = getattr(vgg, "weights_record", None)  # network, weights file and sha256 for reports

    @staticmethod
    def _normalise(features: torch.Tensor) -> torch.Tensor:
        return features / (features.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    @torch.no_grad()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.vgg(a.float()), self.vgg(b.float())
        total = torch.zeros(a.shape[0])
        for name in fa:
            difference = (self._normalise(fa[name]) - self._normalise(fb[name])).pow(2).sum(1)
            total += difference.mean(dim=(1, 2)).cpu()
        return total

    @torch.no_grad()
    def mean_pairwise(self, images: torch.Tensor) -> float:
        """(k,3,H,W) samples of one layout → mean distance over the k(k−1)/2 pairs (one VGG pass for all k)."""
        if images.shape[0] < 2:
            raise ValueError("diversity needs at least 2 samples per layout")
        features = [self._normalise(f) for f in self.vgg(images.float()).values()]
        pairs = list(itertools.combinations(range(images.shape[0]), 2))
        total = sum(float((f[i] - f[j]).pow(2).sum(0).mean()) for i, j in pairs for f in features)
        return total / len(pairs)
