"""Exponential moving average of generator weights, and batch-norm re-estimation for the averaged copy.

OASIS (§3.4 / its ``utils.update_EMA``) samples from an EMA of G with decay 0.9999 (0.999 on Cityscapes) and,
because the averaged weights do not match the batch-norm statistics of any real network state, re-estimates the
EMA network's running statistics on training batches before evaluating or saving (implementations.md §14.8).

Usage::

    ema = make_ema(generator)                  # a frozen deep copy, same state-dict keys
    update_ema(ema, generator, decay=0.9999)   # after each generator step
    renormalize_spectral_norm(ema)             # before sampling/saving: σ of the *averaged* weights
    recalibrate_batch_norm(ema, lambda net, batch: net(encode(batch)), batches)

Spectral norm under averaging: ``buffers="average"`` lerps the power-iteration vectors u, v as well, so they stop
being unit vectors (and stop matching the averaged weight W); an eval-mode forward does no power iteration, so
σ = uᵀWv is underestimated and the EMA weights W/σ come out amplified.  :func:`renormalize_spectral_norm` power-
iterates on the averaged weights until σ converges.  The official code gets the same effect implicitly: its
``update_EMA`` runs its ≤ 50 recalibration passes with the EMA network in train mode, one power iteration each.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

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


def spectral_norms(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(parametrisation, parametrisation list) of every ``torch.nn.utils.parametrizations.spectral_norm`` in
    ``model``; the list's ``original`` is the unnormalised weight."""
    found = []
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for plist in module.parametrizations.values():
            for item in plist:
                if hasattr(item, "_u") and hasattr(item, "_v") and hasattr(item, "dim"):
                    found.append((item, plist))
    return found


def _weight_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The (rows, −1) matrix whose largest singular value spectral norm divides by (torch's reshaping)."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.dim()) if d != dim))
    return weight.flatten(1)


@torch.no_grad()
def renormalize_spectral_norm(model: nn.Module, tolerance: float = 1e-6, max_iterations: int = 2000,
                              min_iterations: int = 3) -> int:
    """Power-iterate every spectral norm's u, v on its current weight until σ = uᵀWv converges.

    Needed after :func:`update_ema` (see the module docstring).  Starts from the stored v (re-normalised), so a
    network whose vectors are already converged changes by less than ``tolerance``; stops when the relative change
    of σ falls below ``tolerance`` (the Rayleigh-quotient estimate converges as (σ₂/σ₁)^2k) or after
    ``max_iterations``.  Updates ``_u``/``_v`` in place; returns the number of spectral-norm layers.
    """
    layers = spectral_norms(model)
    for norm, plist in layers:
        matrix = _weight_matrix(plist.original, norm.dim)
        v = F.normalize(norm._v, dim=0, eps=norm.eps)
        if not bool(torch.isfinite(v).all()) or float(v.norm()) == 0.0:
            v = F.normalize(torch.ones_like(v), dim=0)
        sigma = None
        for iteration in range(max_iterations):
            u = F.normalize(torch.mv(matrix, v), dim=0, eps=norm.eps)
            v = F.normalize(torch.mv(matrix.H, u), dim=0, eps=norm.eps)
            estimate = float(torch.dot(u, torch.mv(matrix, v)))
            done = sigma is not None and abs(estimate - sigma) <= tolerance * abs(estimate)
            sigma = estimate
            if done and iteration + 1 >= min_iterations:
                break
        norm._u.copy_(u)
        norm._v.copy_(v)
    return len(layers)


def effective_spectral_norms(model: nn.Module) -> list[float]:
    """The true largest singular value of each spectrally normalised weight as an eval-mode forward uses it
    (W / uᵀWv with the stored vectors): 1 when the vectors are right (tests, diagnostics)."""
    values = []
    for norm, plist in spectral_norms(model):
        matrix = _weight_matrix(plist.original.detach(), norm.dim).double()
        sigma = torch.dot(norm._u.double(), torch.mv(matrix, norm._v.double()))
        values.append(float(torch.linalg.matrix_norm(matrix / sigma, ord=2)))
    return values
