"""Small building blocks shared by the adversarial models: normalisation factories, spectral norm, initialisation.

The official repositories pick these by strings parsed at run time (pix2pixHD ``--norm instance``, SPADE
``--norm_G spectralspadesyncbatch3x3``, ``--norm_D spectralinstance``); here each is a named argument.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

PARAM_FREE_NORMS = ("instance", "batch", "syncbatch", "none")
INIT_SCHEMES = ("normal", "xavier")


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation without a learned affine (SPADE §3: "parameter-free"; pix2pixHD's InstanceNorm(affine=False)).

    ``syncbatch`` is SPADE's default (SynchronizedBatchNorm across GPUs); on one device it *is* batch norm, so it
    builds ``nn.BatchNorm2d``.  Under DDP convert with ``nn.SyncBatchNorm.convert_sync_batchnorm``.
    """
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind in ("batch", "syncbatch"):
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(PARAM_FREE_NORMS)}, got {kind!r}")


def spectral_norm(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of ``module.weight``, one power iteration per training forward.

    Uses the parametrisation API: the state dict holds ``parametrizations.weight.original`` and the power-iteration
    vectors ``_u``/``_v`` (the official code's ``weight_orig``/``weight_u``/``weight_v``).
    """
    if not enabled:
        return module
    dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, dim=dim))
    return module


class _DivideBySigma(torch.autograd.Function):
    """W / σ with σ = uᵀ·W·v (u, v constants), differentiated as one expression, bit for bit as autograd does.

    Autograd through ``weight / vdot(u, mv(W, v))`` recomputes W/σ and negates the whole incoming gradient only to
    sum −g·(W/σ)/σ; here the forward's W/σ is reused and the sign is taken after the sum (exact in floating
    point), so ∂L/∂W = g/σ + (u·∂L/∂σ) vᵀ comes out identical with two weight-sized passes fewer.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, matrix: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        sigma = torch.vdot(u, torch.mv(matrix, v))
        normalized = weight / sigma
        ctx.save_for_backward(normalized, u, v, sigma)
        return normalized

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normalized, u, v, sigma = ctx.saved_tensors
        grad_sigma = -(grad * (normalized / sigma)).sum()  # autograd: (−g · ((W/σ)/σ)).sum()
        result = grad / sigma
        result += torch.outer(grad_sigma * u, v).view_as(result)  # mv's gradient, added as autograd accumulates
        return result, None, None, None


class SpectralNorm(_SpectralNorm):
    """torch's spectral-norm parametrisation (same buffers, state-dict keys, power iteration and results) with a
    leaner backward for a trained weight (:class:`_DivideBySigma`; the weights are the largest tensors of the
    SPADE/OASIS blocks).  Without a gradient to compute it is torch's forward unchanged."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1 or self.dim != 0 or not (torch.is_grad_enabled() and weight.requires_grad):
            return super().forward(weight)
        matrix = weight.flatten(1)
        if self.training:
            self._power_method(matrix, self.n_power_iterations)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        return _DivideBySigma.apply(weight, matrix.detach(), u, v)


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, norm: str,
              spectral: bool) -> nn.Module:
    """SPADE's ``get_nonspade_norm_layer``: a conv, optionally spectrally normalised, then a normalisation layer.

    When a normalisation follows, the conv has no bias (as in SPADE): the normalisation would subtract it again,
    so outputs are unchanged — only the parameter count differs from pix2pixHD, which keeps the bias.
    """
    if norm not in PARAM_FREE_NORMS:
        raise ValueError(f"norm must be one of {', '.join(PARAM_FREE_NORMS)}, got {norm!r}")
    conv = spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=norm == "none"),
                         spectral)
    if norm == "none":
        return conv
    if norm == "instance":
        return nn.Sequential(conv, nn.InstanceNorm2d(out_channels, affine=False))
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels, affine=True))


@torch.no_grad()
def initialize(module: nn.Module, scheme: str = "normal", gain: float = 0.02, zero_bias: bool = True) -> nn.Module:
    """The official initialisations, applied to every Conv/ConvTranspose/Linear and affine batch norm.

    ``normal``: weights ~ N(0, gain) (pix2pixHD ``weights_init``, which leaves conv biases at PyTorch's default:
    pass ``zero_bias=False`` for that); ``xavier``: Xavier-normal with ``gain`` and zero biases (SPADE
    ``init_weights('xavier', 0.02)``).  Batch-norm scales ~ N(1, gain), shifts 0 (both).  Spectrally normalised
    layers get the same initialisation of their raw weight, and their power-iteration vectors are re-estimated.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {scheme!r}")
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            spectral = parametrize.is_parametrized(layer, "weight")
            if spectral:
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            if scheme == "normal":
                nn.init.normal_(layer.weight, 0.0, gain)
            else:
                nn.init.xavier_normal_(layer.weight, gain=gain)
            if zero_bias and layer.bias is not None:
                nn.init.zeros_(layer.bias)
            if spectral:
                spectral_norm(layer)
        elif isinstance(layer, _BatchNorm) and layer.affine:
            nn.init.normal_(layer.weight, 1.0, gain)
            nn.init.zeros_(layer.bias)
    return module


def largest_singular_value(weight: torch.Tensor) -> float:
    """σ_max of a conv/linear weight reshaped to (out, −1): what spectral norm keeps at ≈ 1 (tests, diagnostics)."""
    return float(torch.linalg.matrix_norm(weight.detach().reshape(weight.shape[0], -1).double(), ord=2))


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def downsample_avg(x: torch.Tensor) -> torch.Tensor:
    """pix2pixHD/SPADE's pyramid step: AvgPool(3, stride 2, pad 1, count_include_pad=False) — the exact 2× grid."""
    return nn.functional.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


def check_divisible(size: tuple[int, int], factor: int, what: str) -> None:
    """Sizes that do not halve cleanly would silently misalign skip connections; say what to change instead."""
    height, width = size
    if height % factor or width % factor:
        fix_h = math.ceil(height / factor) * factor
        fix_w = math.ceil(width / factor) * factor
        raise ValueError(f"{what} needs height and width divisible by {factor}, got {height}×{width}; "
                         f"fix: set data.size to e.g. [{fix_h}, {fix_w}]")
