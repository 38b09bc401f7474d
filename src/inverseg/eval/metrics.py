"""The numbers: segmentation scores from a confusion matrix, Fréchet distance, kernel (MMD) distance.

Definitions are pinned here once and quoted in every report:

* Confusion matrix ``C[g, p]``: pixels of ground-truth class ``g`` predicted as ``p``; rows are the dataset's
  classes, columns the same classes plus one "no class" column (a network output mapped to ignore).  Pixels
  whose ground truth is the ignore id (void) are not counted.
* IoU of class c = C[c,c] / (Σ_p C[c,p] + Σ_g C[g,c] − C[c,c]); a class absent from both the ground truth and
  the prediction has no IoU and is left out of the mean (mIoU).  Pixel accuracy = Σ C[c,c] / Σ C.
* Fréchet distance between Gaussians fitted to two feature sets:
  ||μ1 − μ2||² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1^½ Σ2 Σ1^½)^½).  The last trace is computed from the eigenvalues
  of the symmetric matrix Σ1^½ Σ2 Σ1^½ (equal to tr((Σ1Σ2)^½)), which stays real and stable for the
  rank-deficient covariances of a few hundred images.
* Kernel distance (KID when the features are FID-Inception's): the unbiased estimate of the squared MMD with
  the cubic polynomial kernel k(x,y) = (xᵀy / d + 1)³ (Bińkowski et al. 2018), averaged over random subsets.
"""

from __future__ import annotations

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------------------
def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(…) predicted ids and (…) ground-truth ids → (C, C+1) int64 counts.

    Ground-truth values outside 0…C-1 (the ignore id) are skipped; predictions outside 0…C-1 (NO_CLASS) land
    in the last column.
    """
    target = target.reshape(-1).long()
    prediction = prediction.reshape(-1).long()
    if target.numel() != prediction.numel():
        raise ValueError(f"prediction has {prediction.numel()} pixels, target {target.numel()}")
    keep = (target >= 0) & (target < num_classes)
    target, prediction = target[keep], prediction[keep]
    prediction = torch.where((prediction >= 0) & (prediction < num_classes), prediction,
                             torch.full_like(prediction, num_classes))
    counts = torch.bincount(target * (num_classes + 1) + prediction, minlength=num_classes * (num_classes + 1))
    return counts.view(num_classes, num_classes + 1).cpu()


def segmentation_scores(confusion: torch.Tensor | np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU (None for classes absent from GT and
    prediction) from a (C, C+1) confusion matrix."""
    matrix = np.asarray(confusion, dtype=np.float64)
    classes = matrix.shape[0]
    if len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for a {classes}-class confusion matrix")
    hits = np.diag(matrix[:, :classes])
    ground_truth = matrix.sum(1)
    predicted = matrix[:, :classes].sum(0)
    union = ground_truth + predicted - hits
    present = union > 0
    iou = np.where(present, hits / np.maximum(union, 1), np.nan)
    accuracy = np.where(ground_truth > 0, hits / np.maximum(ground_truth, 1), np.nan)
    total = matrix.sum()
    return {
        "miou": float(np.nanmean(iou)) if present.any() else None,
        "pixel_accuracy": float(hits.sum() / total) if total else None,
        "mean_accuracy": float(np.nanmean(accuracy)) if (ground_truth > 0).any() else None,
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
        "classes_counted": int(present.sum()),
        "pixels": int(total),
    }


# ---------------------------------------------------------------------------------------------------------
# Distribution distances on features
# ---------------------------------------------------------------------------------------------------------
def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features → mean (D,) and unbiased covariance (D, D), in float64 (pytorch-fid uses np.cov too)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors of shape (N, D), got {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) * 0.5)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(μ1, Σ1) and N(μ2, Σ2); see the module docstring."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"mismatched statistics: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) * 0.5), 0.0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross)
    return max(value, 0.0)


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (N1, D) and (N2, D).

    With fewer vectors than dimensions (a few hundred images, 1280/2048-d features) the D×D route is slow and
    ill-conditioned.  With centred data A1, A2 and Σi = AiᵀAi/(Ni−1), the nonzero eigenvalues of Σ1Σ2 are the
    squared singular values of A1A2ᵀ / √((N1−1)(N2−1)), so tr((Σ1Σ2)^½) is the nuclear norm of that N1×N2
    matrix — the same number from a small SVD.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N, D) feature sets with N ≥ 2 and equal D, got {a.shape} and {b.shape}")
    if max(len(a), len(b)) > a.shape[1]:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    scale_a, scale_b = len(a) - 1, len(b) - 1
    cross = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / np.sqrt(scale_a * scale_b)
    value = ((a.mean(0) - b.mean(0)) ** 2).sum() + (centred_a ** 2).sum() / scale_a + \
        (centred_b ** 2).sum() / scale_b - 2.0 * cross
    return max(float(value), 0.0)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    m, n = x.shape[0], y.shape[0]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> dict:
    """Unbiased squared MMD, cubic polynomial kernel, over ``subsets`` random subsets of
    ``min(subset_size, len(a), len(b))`` vectors drawn without replacement → {mean, std, subsets, subset_size}."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"kernel distance needs at least 2 vectors per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = np.array([
        _mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ])
    return {"mean": float(values.mean()), "std": float(values.std()), "subsets": subsets, "subset_size": size}
