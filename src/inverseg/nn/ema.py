"""Exponential moving average of generator weights, and batch-norm re-estimation for the averaged copy.

OASIS (§3.4 / its ``utils.update_EMA``) samples from an EMA of G with decay 0.9999 (0.999 on Cityscapes) and,
because the averaged weights do not match the batch-norm statistics of any real network state, re-estimates the
EMA network's running statistics on training batches before evaluating or saving (implementations.md §14.8).

Usage::

    ema = make_ema(generator)                  # a frozen deep copy, same state-dict keys
    update_ema(ema, generator, decay=0.9999)   # after each generator step
    recalibrate_batch_norm(ema, lambda net, batch: net(encode(batch)), batches)
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BUFFER_MODES = ("copy", "average")


def make_ema(model: nn.Module) -> nn.Module:
    """A deep copy that never receives gradients (its state-dict keys equal the model's)."""
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, buffers: str = "copy") -> None:
    """``ema ← decay·ema + (1−decay)·model`` for every parameter.

    Buffers (batch-norm running statistics, spectral-norm power-iteration vectors) are copied from the model with
    ``buffers="copy"``; ``"average"`` averages the floating-point ones too, which is what OASIS does by averaging
    the whole state dict (integer buffers such as ``num_batches_tracked`` are always copied).
    """
    if buffers not in BUFFER_MODES:
        raise ValueError(f"buffers must be one of {BUFFER_MODES}, got {buffers!r}")
    for averaged, live in zip(ema.parameters(), model.parameters(), strict=True):
        averaged.lerp_(live.detach(), 1.0 - decay)
    for averaged, live in zip(ema.buffers(), model.buffers(), strict=True):
        if buffers == "average" and averaged.is_floating_point():
            averaged.lerp_(live, 1.0 - decay)
        else:
            averaged.copy_(live)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, run: Callable[[nn.Module, object], object], batches: Iterable,
                           max_batches: int | None = None, cumulative: bool = True) -> int:
    """Re-estimate the running statistics of every batch norm in ``model`` from ``run(model, batch)`` calls.

    Only the batch-norm layers switch to training mode (spectral-norm vectors and everything else stay as they
    are).  ``cumulative=True`` resets the statistics and takes their exact average over the batches (momentum
    None, as imaginaire does); ``False`` keeps the layers' momentum and does not reset, as OASIS's ≤50 forward
    passes do.  Returns the number of batches used (0 when the model has no batch norm).
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        if cumulative:
            norm.reset_running_stats()
            norm.momentum = None
        norm.train()
    count = 0
    try:
        for batch in batches:
            if max_batches is not None and count >= max_batches:
                break
            run(model, batch)
            count += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, mode in modes.items():
            module.training = mode
    return count
