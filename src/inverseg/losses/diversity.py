"""CRN diversity loss: per-class best-of-k perceptual loss (Chen & Koltun 2017, §3.4).

For k synthesised images g_1 … g_k of one layout L the loss is

    Σ_p min_u Σ_l λ_l Σ_j ‖L_p^l ⊙ (Φ_l^j(I) − Φ_l^j(g_u(L)))‖₁

with L_p^l the class-p channel of the layout, area-downsampled to layer l's resolution (soft masks at coarse
layers).  It scores a virtual image assembled from the best output for each class, so the outputs are free to
differ everywhere a class is rendered well by some other output.

Normalisation follows the official code (``compute_error`` in demo_256p.py / GTA_Diversity_256p.py): for each
(u, p), term_l = mean over spatial positions of (mask_p × mean over channels of |Δ|), weighted by the same λ as
the perceptual loss and summed over layers including the pixel term.  Because the masks of all classes (the void
channel included, as officially) sum to one per pixel, with k = 1 the loss equals the perceptual loss.

``mean_mix`` blends in the mean over outputs: (1 − m) Σ_p min_u + m Σ_p mean_u.  The official scripts use
m = 0.001 so that outputs never selected still receive a little gradient; the default 0 is the paper's formula.
Batches are averaged over samples (the official batch size is 1).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .perceptual import PerceptualLoss


class DiversityLoss(nn.Module):
    """Per-class min over k outputs of the class-masked perceptual loss; shares ``perceptual``'s extractor and λ.

    ``forward(images (B, k, 3, H, W), reference (B, 3, H, W), label (B, C, H, W), keys=None)`` returns
    ``(total, logs)``.  ``label`` is the generator's input one-hot (soft values allowed), including the void
    channel; pixels covered by no channel are unconstrained.  ``logs`` has ``unweighted/<term>`` and
    ``weighted/<term>`` evaluated at the selected output per class (these are what the shared balancer observes
    in training mode) and ``selected_fraction/<u>``, the share of the classes present for which
    output u was the best.
    """

    def __init__(self, perceptual: PerceptualLoss, mean_mix: float = 0.0):
        super().__init__()
        if not 0.0 <= mean_mix <= 1.0:
            raise ValueError(f"mean_mix must be in [0, 1], got {mean_mix}")
        self.perceptual = perceptual
        self.mean_mix = float(mean_mix)

    def class_terms(self, images: torch.Tensor, reference: torch.Tensor, label: torch.Tensor,
                    keys: Sequence[str] | None = None) -> torch.Tensor:
        """(T, B, k, C) unweighted masked terms: term[l, b, u, p] = mean_hw(L_p^l ⊙ mean_c |Δ_l(u)|)."""
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, k, 3, H, W), got {tuple(images.shape)}")
        if label.dim() != 4 or label.shape[0] != images.shape[0] or label.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"label must be (B, C, H, W) matching the images {tuple(images.shape)}, got "
                             f"{tuple(label.shape)}")
        maps = self.perceptual.difference_maps(images, reference, keys, label=label)
        label = label.to(images.dtype)
        terms = []
        for name in self.perceptual.term_names:
            diff = maps[name]  # (B, k, h, w)
            size = tuple(diff.shape[-2:])
            mask = label if size == tuple(label.shape[-2:]) else F.interpolate(label, size=size, mode="area")
            # Σ_hw mask[b,p] · diff[b,u] for all (u, p) at once, divided by h·w: a batched matrix product.
            terms.append(torch.einsum("bphw,buhw->bup", mask, diff) / (size[0] * size[1]))
        return torch.stack(terms)

    def forward(self, images: torch.Tensor, reference: torch.Tensor, label: torch.Tensor,
                keys: Sequence[str] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = self.class_terms(images, reference, label, keys)  # (T, B, k, C)
        weights = self.perceptual.balancer.current().to(terms)
        per_output = torch.einsum("t,tbuc->buc", weights, terms)  # (B, k, C)
        best, choice = per_output.min(dim=1)  # (B, C)
        total = best.sum(1).mean()
        if self.mean_mix:
            total = (1.0 - self.mean_mix) * total + self.mean_mix * per_output.mean(1).sum(1).mean()
        # Unweighted terms of the assembled "virtual image" (best output per class), for logging and balancing.
        index = choice.unsqueeze(0).unsqueeze(2).expand(terms.shape[0], -1, 1, -1)  # (T, B, 1, C)
        unweighted = terms.gather(2, index).squeeze(2).sum(-1).mean(-1)  # (T,)
        _, logs = self.perceptual.combine(unweighted)
        logs["total"] = total.detach()
        present = label.flatten(2).sum(-1) > 0  # classes absent from a sample tie at 0 and are not counted
        counts = torch.bincount(choice[present], minlength=images.shape[1]).to(terms.dtype)
        for u, count in enumerate(counts / present.sum().clamp_min(1)):
            logs[f"selected_fraction/{u}"] = count
        return total, logs


__all__ = ["DiversityLoss"]
