"""GAN objectives, discriminator feature matching and the VAE's KL term.

Discriminator outputs may be a tensor of patch logits or a multi-scale list ``[[features…, logits], …]``
(``nn/discriminator.py``); objectives use the last entry of each scale.

Objectives (each: a discriminator loss on real and on fake logits, a generator loss on fake logits):

=========  ==============================  ==============================  ======================
kind       D, real                         D, fake                         G
=========  ==============================  ==============================  ======================
``hinge``  mean(max(0, 1 − x))             mean(max(0, 1 + x))             −mean(x)        (SPADE)
``ls``     mean((x − 1)²)                  mean(x²)                        mean((x − 1)²)  (pix2pixHD)
``bce``    mean(softplus(−x))              mean(softplus(x))               mean(softplus(−x))
=========  ==============================  ==============================  ======================

``bce`` is SPADE's ``original`` / pix2pixHD's ``--no_lsgan`` (sigmoid + BCE) with the non-saturating generator
loss of Goodfellow et al. §3.  Over scales pix2pixHD **sums** the per-scale losses, SPADE **averages** them
(``scale_reduction``).  The recipes combine D's two terms: pix2pixHD ``0.5·(real + fake)``, SPADE ``real + fake``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

OBJECTIVES = ("hinge", "ls", "bce")
REDUCTIONS = ("mean", "sum")
FM_WEIGHTINGS = ("pix2pixhd", "spade")

Prediction = torch.Tensor | Sequence[Sequence[torch.Tensor]] | Sequence[torch.Tensor]


def _logits(prediction: Prediction) -> list[torch.Tensor]:
    if isinstance(prediction, torch.Tensor):
        return [prediction]
    return [scale[-1] if isinstance(scale, (list, tuple)) else scale for scale in prediction]


class AdversarialLoss:
    """One GAN objective over (possibly multi-scale) discriminator outputs."""

    def __init__(self, kind: str = "hinge", scale_reduction: str = "mean"):
        if kind not in OBJECTIVES:
            raise ValueError(f"gan objective must be one of {', '.join(OBJECTIVES)}, got {kind!r}")
        if scale_reduction not in REDUCTIONS:
            raise ValueError(f"scale_reduction must be one of {', '.join(REDUCTIONS)}, got {scale_reduction!r}")
        self.kind, self.scale_reduction = kind, scale_reduction

    def _reduce(self, terms: list[torch.Tensor]) -> torch.Tensor:
        total = torch.stack(terms).sum()
        return total / len(terms) if self.scale_reduction == "mean" else total

    def _d_term(self, x: torch.Tensor, real: bool) -> torch.Tensor:
        sign = 1.0 if real else -1.0  # real logits should be high, fake logits low
        if self.kind == "hinge":
            return F.relu(1.0 - sign * x).mean()
        if self.kind == "ls":
            return ((x - (1.0 if real else 0.0)) ** 2).mean()
        return F.softplus(-sign * x).mean()

    def discriminator(self, real: Prediction, fake: Prediction) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss on real logits, loss on fake logits) — the caller weights and sums them."""
        return (self._reduce([self._d_term(x, True) for x in _logits(real)]),
                self._reduce([self._d_term(x, False) for x in _logits(fake)]))

    def generator(self, fake: Prediction) -> torch.Tensor:
        terms = []
        for x in _logits(fake):
            if self.kind == "hinge":
                terms.append(-x.mean())
            elif self.kind == "ls":
                terms.append(((x - 1.0) ** 2).mean())
            else:
                terms.append(F.softplus(-x).mean())
        return self._reduce(terms)


def feature_matching_loss(fake: Sequence[Sequence[torch.Tensor]], real: Sequence[Sequence[torch.Tensor]],
                          weight: float = 10.0, weighting: str = "spade") -> torch.Tensor:
    """Discriminator feature matching (pix2pixHD §3.2 eq. 4): L1 between D's hidden features on fake and real.

    Per scale, every output but the last (the logits) counts; real features are detached.  Weighting
    (implementations.md §14.2): SPADE ``weight / num_D`` per term; pix2pixHD ``weight · 4/(n_layers_D+1) / num_D``
    where pix2pixHD's n_layers_D + 1 is the number of hidden outputs — so the two agree at the default depth.
    """
    if weighting not in FM_WEIGHTINGS:
        raise ValueError(f"feature-matching weighting must be one of {', '.join(FM_WEIGHTINGS)}, got {weighting!r}")
    if len(fake) != len(real):
        raise ValueError(f"{len(fake)} fake vs {len(real)} real discriminator scales")
    total = fake[0][0].new_zeros(())
    for fake_scale, real_scale in zip(fake, real):
        hidden = len(fake_scale) - 1
        factor = weight / len(fake) * (4.0 / hidden if weighting == "pix2pixhd" else 1.0)
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            total = total + factor * F.l1_loss(f, r.detach())
    return total


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) = −½ Σ (1 + log σ² − μ² − σ²) (Kingma & Welling, app. B; SPADE §3.3, app. B).

    ``sum`` over batch and latent dimensions is SPADE's ``KLDLoss`` (so it grows with the batch size);
    ``mean`` divides by the batch size.
    """
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    if reduction == "sum":
        return kl
    if reduction == "mean":
        return kl / mu.shape[0]
    raise ValueError(f"KL reduction must be 'sum' or 'mean', got {reduction!r}")
