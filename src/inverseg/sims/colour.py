"""Colour statistics and colour transfer for simulated canvases (SIMS §3.4, "colour transfer").

At test time the segments pasted on a canvas come from different photographs and disagree in tone and illumination.
SIMS simulates that when training the synthesis network: a segment of the training image is recoloured towards a
segment of the same class from another photograph.  The official ``train_generate_synthesis.m`` calls
``colour_transfer_MKL`` (Pitié & Kokaram 2007, "The linear Monge-Kantorovitch linear colour mapping for
example-based colour transfer"; the same ``colour-transfer-master`` folder also holds Pitié's iterative IDT, which
the synthesis data does not use): :func:`mkl_transfer` here, the default.  :func:`reinhard_transfer` (Reinhard et
al. 2001, mean/std per channel in CIE L*a*b* or RGB) is the cheaper option this library used before.

All images are torch tensors in [-1, 1] (the library convention), shape (3, H, W) or (B, 3, H, W).
"""

from __future__ import annotations

import numpy as np
import torch

# sRGB (D65) → XYZ, and the D65 white point
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_EPSILON = (6 / 29) ** 3
_KAPPA = (29 / 3) ** 3


def _channels_first(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", matrix.to(image), image)


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] sRGB → CIE L*a*b* (L in 0–100, a/b roughly −128–127)."""
    srgb = ((image + 1) / 2).clamp(0, 1)
    linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    xyz = _channels_first(_RGB_TO_XYZ, linear) / _WHITE.to(image).view(3, 1, 1)
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def rgb_to_lab_numpy(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB → (H, W, 3) float64 L*a*b* — the same formula as :func:`rgb_to_lab`, in numpy (used
    once per training image when a bank is built)."""
    srgb = np.asarray(image, dtype=np.float64) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.double().numpy().T / _WHITE.double().numpy()
    f = np.where(xyz > _EPSILON, np.cbrt(np.maximum(xyz, _EPSILON)), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def segment_stats(values: np.ndarray, component_map: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment channel mean and std of (H, W, 3) ``values`` for segment ids 0 … count−1 in ``component_map``
    (−1 = none), all segments at once → (count, 3) each."""
    ids = component_map.ravel() + 1
    area = np.bincount(ids, minlength=count + 1)[1:].astype(np.float64)
    means, stds = np.zeros((count, 3)), np.zeros((count, 3))
    for channel in range(3):
        flat = values[..., channel].ravel().astype(np.float64)
        total = np.bincount(ids, weights=flat, minlength=count + 1)[1:]
        squares = np.bincount(ids, weights=flat * flat, minlength=count + 1)[1:]
        means[:, channel] = total / np.maximum(area, 1)
        stds[:, channel] = np.sqrt(np.maximum(squares / np.maximum(area, 1) - means[:, channel] ** 2, 0))
    return means, stds


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab`, clipped to [-1, 1]."""
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    xyz = torch.where(f ** 3 > _EPSILON, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE.to(lab).view(3, 1, 1)
    linear = _channels_first(torch.linalg.inv(_RGB_TO_XYZ), xyz).clamp(0, 1)
    srgb = torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    return (srgb * 2 - 1).clamp(-1, 1)


def to_space(image: torch.Tensor, space: str) -> torch.Tensor:
    if space == "lab":
        return rgb_to_lab(image)
    if space == "rgb":
        return image
    raise ValueError(f"colour space must be 'lab' or 'rgb', got {space!r}")


def from_space(values: torch.Tensor, space: str) -> torch.Tensor:
    return lab_to_rgb(values) if space == "lab" else values.clamp(-1, 1)


def masked_stats(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of (3, H, W) ``values`` over a boolean (H, W) ``mask``."""
    picked = values[:, mask]
    if picked.shape[1] == 0:
        return torch.zeros(3, dtype=values.dtype), torch.zeros(3, dtype=values.dtype)
    return picked.mean(1), picked.std(1, unbiased=False)


def reinhard_transfer(image: torch.Tensor, mask: torch.Tensor, target_mean: torch.Tensor, target_std: torch.Tensor,
                      space: str = "lab", min_std: float = 1e-3) -> torch.Tensor:
    """Recolour the ``mask`` pixels of a (3, H, W) image so their per-channel mean/std become the target's.

    x' = (x − μ_s) · σ_t / σ_s + μ_t in ``space`` (Reinhard et al. 2001); pixels outside the mask are unchanged.
    """
    if not bool(mask.any()):
        return image
    values = to_space(image, space)
    mean, std = masked_stats(values, mask)
    scale = target_std.to(values) / std.clamp_min(min_std)
    moved = (values - mean.view(3, 1, 1)) * scale.view(3, 1, 1) + target_mean.to(values).view(3, 1, 1)
    recoloured = from_space(moved, space)
    return torch.where(mask.unsqueeze(0), recoloured, image)


def _sqrt_psd(matrix: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors U and the square roots of the eigenvalues (clipped at ``eps``) of a symmetric 3×3 matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors, values.clamp_min(eps).sqrt()


def mkl_matrix(source_cov: torch.Tensor, target_cov: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The linear Monge–Kantorovich map T between two colour covariances: T Σ_s Tᵀ = Σ_t, T symmetric positive.

    T = Σ_s^{-1/2} (Σ_s^{1/2} Σ_t Σ_s^{1/2})^{1/2} Σ_s^{-1/2} — of all linear maps taking the source Gaussian to
    the target one, the one that moves colours least (Pitié & Kokaram 2007, eq. 11).  Eigenvalues are clipped at
    ``eps`` so flat segments (a rank-deficient Σ_s) stay finite, as in the reference implementation.
    """
    u_s, root_s = _sqrt_psd(source_cov, eps)
    half = u_s @ torch.diag(root_s) @ u_s.T  # Σ_s^{1/2}
    inverse_half = u_s @ torch.diag(1.0 / root_s) @ u_s.T  # Σ_s^{-1/2}
    u_c, root_c = _sqrt_psd(half @ target_cov @ half, eps)
    middle = u_c @ torch.diag(root_c) @ u_c.T  # (Σ_s^{1/2} Σ_t Σ_s^{1/2})^{1/2}
    return inverse_half @ middle @ inverse_half


def mkl_transfer(source: torch.Tensor, target: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
    """Fit the map that gives (N, 3) ``source`` colours the mean and covariance of (M, 3) ``target`` colours,
    x' = T (x − μ_s) + μ_t with T = :func:`mkl_matrix` (official ``colour_transfer_MKL.m``, in RGB), and apply it
    to ``values`` (default: ``source``)."""
    source64, target64 = source.double(), target.double()
    mean_s, mean_t = source64.mean(0), target64.mean(0)
    centred_s, centred_t = source64 - mean_s, target64 - mean_t
    matrix = mkl_matrix(centred_s.T @ centred_s / len(source64), centred_t.T @ centred_t / len(target64))
    values = source if values is None else values
    return ((values.double() - mean_s) @ matrix.T + mean_t).to(values.dtype)


def mkl_recolour(image: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor,
                 apply_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A (3, H, W) image in [-1, 1] whose ``apply_mask`` pixels (default: ``source_mask``) are moved by the MKL map
    fitted from the ``source_mask`` pixels to the (M, 3) ``target`` colours (also in [-1, 1]); clipped to [-1, 1]
    like the official ``z(z<0) = 0; z(z>1) = 1``."""
    apply_mask = source_mask if apply_mask is None else apply_mask
    if int(source_mask.sum()) < 2 or len(target) < 2 or not bool(apply_mask.any()):
        return image
    values = image.permute(1, 2, 0)  # (H, W, 3)
    result = values.clone()
    result[apply_mask] = mkl_transfer(values[source_mask], target, values[apply_mask]).clamp(-1, 1)
    return result.permute(2, 0, 1).contiguous()


__all__ = ["from_space", "lab_to_rgb", "masked_stats", "mkl_matrix", "mkl_recolour", "mkl_transfer",
           "reinhard_transfer", "rgb_to_lab", "rgb_to_lab_numpy",
           "segment_stats", "to_space"]
