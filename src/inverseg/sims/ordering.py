"""Inputs of the ordering network (SIMS §3.3), the same for training pairs from the bank and for query pairs.

The network sees, at a fixed resolution, (a) the pixels of the two adjacent segments one-hot by class and (b) the
whole layout one-hot plus void — the official ``order.py`` feeds the colour-coded pair and the colour-coded full
layout (6 channels); one-hot channels say the same without a palette.  Channels are area-downsampled (soft
fractions, as CRN does with layouts).  The target is the class of the segment in front.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def order_inputs(layout: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, int, int]], num_classes: int,
                 size: tuple[int, int]) -> torch.Tensor:
    """(H, W) ids (≥ num_classes = void) + pairs (mask_a, mask_b, class_a, class_b) → (P, 2C + 1, h, w) float.

    The whole-layout channels are computed once and shared by every pair of the layout.
    """
    height, width = layout.shape
    valid = (layout >= 0) & (layout < num_classes)
    ids = torch.where(valid, layout, torch.full_like(layout, num_classes)).long()
    whole = F.one_hot(ids, num_classes + 1).permute(2, 0, 1).float()
    if tuple(size) != (height, width):
        whole = F.adaptive_avg_pool2d(whole[None], tuple(size))[0]
    features = []
    for mask_a, mask_b, class_a, class_b in pairs:
        pair = torch.zeros(num_classes, height, width)
        pair[class_a] += mask_a.float()
        pair[class_b] += mask_b.float()
        if tuple(size) != (height, width):
            pair = F.adaptive_max_pool2d(pair[None], tuple(size))[0]  # presence: thin segments must not vanish
        features.append(torch.cat([pair, whole]))
    return torch.stack(features) if features else torch.zeros(0, 2 * num_classes + 1, *size)


def order_input(layout: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor, class_a: int, class_b: int,
                num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    """One pair: (2C + 1, h, w) — see :func:`order_inputs`."""
    return order_inputs(layout, [(mask_a, mask_b, class_a, class_b)], num_classes, size)[0]


def bank_pair_masks(bank, pair: np.void) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Layout, the two full-image masks and classes of a stored bank pair (crops placed back at their boxes)."""
    layout = torch.from_numpy(np.array(bank.layouts[int(pair["image"])])).long()
    masks, classes = [], []
    for key in ("a", "b"):
        index = int(pair[key])
        _, crop_mask = bank.crop(index)
        top, left, bottom, right = bank.box(index)
        mask = torch.zeros(layout.shape, dtype=torch.bool)
        mask[top:bottom, left:right] = torch.from_numpy(np.ascontiguousarray(crop_mask))
        masks.append(mask)
        classes.append(int(bank.segments[index]["class_id"]))
    return layout, masks[0], masks[1], classes[0], classes[1]


def pair_probability(logits: torch.Tensor, class_a: torch.Tensor, class_b: torch.Tensor) -> torch.Tensor:
    """P(a in front) from c-way logits restricted to the pair's two classes: softmax over (logit_a, logit_b)."""
    picked = torch.stack([logits.gather(1, class_a[:, None])[:, 0], logits.gather(1, class_b[:, None])[:, 0]], 1)
    return picked.softmax(1)[:, 0]


__all__ = ["bank_pair_masks", "order_input", "order_inputs", "pair_probability"]
