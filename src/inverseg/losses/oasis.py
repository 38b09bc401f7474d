"""OASIS objectives: the (N+1)-class segmentation loss with class balancing (§3.1, eq. 1–2) and LabelMix (§3.2).

**Targets.**  The discriminator segments an image into N + 1 classes.  OASIS's index 0 is "fake"; a real pixel of
our class id c (0 … N−1) has target c + 1.  Void pixels (the spec's ignore index, or any id outside 0 … N−1) and
the ``zero_weight`` classes (OASIS's "don't care" label, e.g. Cityscapes labelId 0 'unlabeled') keep a target
(c + 1, or 1 for void) but get weight 0 in the real-class term, so they never count.  The fake term covers every
pixel, void included, unweighted.

**Class balancing** (eq. 1–2, official ``get_class_balancing``): per batch, w_c = T / (n · count_c), where count_c is
the number of pixels of class c in the batch, n the number of classes present (void and zero-weight classes not
counted) and T the number of pixels — officially *all* pixels, void included (``torch.numel(label)/C``);
``count_void=False`` uses only the weighted pixels, so that the weights average to exactly 1 over them.

    L_D = −E[Σ_c w_c Σ_pixels y_c log D(x)_c] − E[Σ_pixels log D(G(t, z))_fake]     (means over all pixels)
    L_G = −E[Σ_c w_c Σ_pixels y_c log D(G(t, z))_c]

**LabelMix** (§3.2, Fig. 4; official ``generate_labelmix`` + ``loss_labelmix``): a binary mask M draws one fair
random bit per class; mixed = M·real + (1−M)·fake; the loss is MSE(D(mixed), M·D(real) + (1−M)·D(fake)) over all
logits, with gradients through all three outputs (as officially).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F


def oasis_targets(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,H,W) ids → (B,H,W) targets for real pixels: class c → c + 1; void → 1 (its weight is 0)."""
    valid = (label >= 0) & (label < num_classes)
    return torch.where(valid, label + 1, torch.ones_like(label))


def weighted_mask(label: torch.Tensor, num_classes: int, zero_weight: Sequence[int] = ()) -> torch.Tensor:
    """Pixels that count in the real-class term: real classes that are not declared "don't care"."""
    mask = (label >= 0) & (label < num_classes)
    for class_id in zero_weight:
        mask &= label != int(class_id)
    return mask


def class_balance_weights(label: torch.Tensor, num_classes: int, zero_weight: Sequence[int] = (),
                          count_void: bool = True, balance: bool = True,
                          frequencies: torch.Tensor | None = None) -> torch.Tensor:
    """(B,H,W) ids → (B,H,W) per-pixel weights w_{label} = T / (n_present · count_label), 0 on void/don't care.

    ``balance=False`` (official ``--no_balancing_inloss``) gives weight 1 to every counted pixel.  ``frequencies``
    (num_classes,) — each class's share of the *training split's* pixels, from :func:`class_frequencies` — replaces
    the batch's counts: w_c = 1 / (n_present · f_c) over the dataset (a documented remedy, not official: at batch 4
    one rare-class pixel in a batch gets weight ≈ T, up to 4,468 on CamVid at 96×128).
    """
    counted = weighted_mask(label, num_classes, zero_weight)
    if not balance:
        return counted.float()
    if frequencies is not None:
        shares = frequencies.to(label.device, torch.float32).clone()
        for class_id in zero_weight:
            shares[int(class_id)] = 0.0
        present = int((shares > 0).sum())
        per_class = torch.where(shares > 0, 1.0 / (max(present, 1) * shares.clamp(min=1e-12)),
                                torch.zeros_like(shares))
    else:
        counts = torch.bincount(label[counted], minlength=num_classes).float()
        present = int((counts > 0).sum())
        if present == 0:
            return torch.zeros(label.shape, device=label.device)
        total = label.numel() if count_void else int(counted.sum())
        per_class = torch.where(counts > 0, total / (present * counts.clamp(min=1)), torch.zeros_like(counts))
    index = torch.where(counted, label, torch.zeros_like(label))
    return torch.where(counted, per_class[index], torch.zeros_like(per_class[index]))


def class_frequencies(labels: Iterable[torch.Tensor], num_classes: int, zero_weight: Sequence[int] = (),
                      count_void: bool = True) -> torch.Tensor:
    """Each class's share of all pixels of ``labels`` ((H,W) or (B,H,W) id maps) → (num_classes,) floats.

    The denominator is T as in the per-batch weights: every pixel with ``count_void``, else the counted ones.
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    total = 0
    for label in labels:
        label = torch.as_tensor(label)
        counted = weighted_mask(label, num_classes, zero_weight)
        counts += torch.bincount(label[counted].flatten(), minlength=num_classes)[:num_classes].double()
        total += label.numel() if count_void else int(counted.sum())
    if total == 0:
        raise ValueError("class frequencies: the labels hold no pixels")
    return (counts / total).float()


def balanced_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over all pixels of weight × CE(logits, target) (also SAFM's semantic-alignment loss)."""
    return (F.cross_entropy(logits, targets, reduction="none") * weights).mean()


def real_class_loss(logits: torch.Tensor, label: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Balanced CE towards each pixel's real class (c + 1), mean over all pixels (official ``for_real=True``)."""
    return balanced_cross_entropy(logits, oasis_targets(label, logits.shape[1] - 1), weights)


def fake_class_loss(logits: torch.Tensor) -> torch.Tensor:
    """Unweighted CE towards the fake class 0 at every pixel (official ``for_real=False``)."""
    targets = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, targets)


def labelmix_mask(label: torch.Tensor, num_classes: int, per_sample: bool = False,
                  merge_pair: tuple[int, int] | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,H,W) ids → (B,1,H,W) float mask of 0/1: one fair random bit per class (void is one class).

    Officially one bit per class is shared by the whole batch (``per_sample=False``).  ``merge_pair=(a, b)``
    reproduces an official quirk: the bits are written into the class map in place, class by class in increasing
    official index, so the class with official index 0 (``a``) is matched again when index 1 (``b``) is processed
    and ends with bit_a·bit_b when both are present.
    """
    index = torch.where((label >= 0) & (label < num_classes), label, torch.full_like(label, num_classes))
    shape = (label.shape[0], num_classes + 1) if per_sample else (1, num_classes + 1)
    if generator is None:
        bits = torch.randint(0, 2, shape, device=label.device)
    else:
        bits = torch.randint(0, 2, shape, generator=generator).to(label.device)
    if merge_pair is not None:
        a, b = (num_classes if c is None or not 0 <= c < num_classes else c for c in merge_pair)
        present = torch.zeros(shape, dtype=torch.bool, device=label.device)
        flat = index.reshape(index.shape[0] if per_sample else 1, -1)
        present.scatter_(1, flat, True)
        both = present[:, a] & present[:, b]
        bits[:, a] = torch.where(both, bits[:, a] * bits[:, b], bits[:, a])
    rows = torch.arange(label.shape[0], device=label.device).view(-1, 1, 1) if per_sample else 0
    return bits[rows, index].unsqueeze(1).float()


def labelmix_images(mask: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LabelMix(x, x̂, M) = M ⊙ x + (1 − M) ⊙ x̂."""
    return mask * real + (1 - mask) * fake


def labelmix_loss(mixed_logits: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """‖D(LabelMix(x, x̂, M)) − LabelMix(D(x), D(x̂), M)‖² averaged over all logits (unweighted)."""
    return F.mse_loss(mixed_logits, labelmix_images(mask, real_logits, fake_logits))
