"""Depthwise convolution with a different predicted kernel at every pixel (the "conditional convolution" of CC-FPSE,
Liu et al., NeurIPS 2019, §3.1; reused by SAFM, Lv et al., CVPR 2022, §3.2, whose official ``DepthConv`` is
CC-FPSE's).

    Y[n, c, i, j] = Σ_{a,b} X[n, c, i + a − k//2, j + b − k//2] · V[n, c·k² + a·k + b, i, j]    (zero padding)

The kernel tensor V (N, C·k², H, W) holds each channel's k² taps next to each other, row-major — the layout the
official kernel-predicting convs output.  No bias, and the kernels are used as predicted (the official softmax over
the taps is commented out).  ``F.unfold`` lays out every pixel's neighbourhood in exactly that channel-major,
tap-minor order, so the whole operation is one product and one sum over the taps: no loop over pixels or taps,
differentiable in both inputs, on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def conditional_depthwise_conv(x: torch.Tensor, kernels: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """(N, C, H, W) features and (N, C·k², H, W) per-pixel kernels → (N, C, H, W); stride 1, padding k//2."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd so that the output keeps the input size, got {kernel_size}")
    batch, channels, height, width = x.shape
    taps = kernel_size * kernel_size
    if tuple(kernels.shape) != (batch, channels * taps, height, width):
        raise ValueError(f"per-pixel kernels for input {tuple(x.shape)} and a {kernel_size}×{kernel_size} kernel "
                         f"must have shape {(batch, channels * taps, height, width)}, got {tuple(kernels.shape)}")
    # unflatten, not view(batch, …): the same views, but a traced view with the batch size loses every dimension
    # of its output, and the ONNX export of a later parameter-free batch norm needs the channel count
    patches = F.unfold(x, kernel_size, padding=kernel_size // 2).unflatten(1, (channels, taps))
    patches = patches.unflatten(3, (height, width))
    return (patches * kernels.unflatten(1, (channels, taps))).sum(dim=2)
