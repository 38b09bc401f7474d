"""Deterministic k-means in torch (k-means++ seeding, Lloyd iterations, best of ``n_init`` restarts).

pix2pixHD's ``encode_features.py`` clusters the encoded instance features of each class with scikit-learn's
``KMeans(n_clusters=10, random_state=0)`` (k-means++, 10 restarts, ≤300 iterations, tol 1e-4).  This follows the
same recipe without the dependency; the seed makes it reproducible (not bit-identical to scikit-learn).
"""

from __future__ import annotations

import torch


def _plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre ∝ squared distance to the nearest one."""
    n = points.shape[0]
    centres = [points[int(torch.randint(n, (1,), generator=generator))]]
    nearest = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(nearest.sum())
        if total <= 0.0:  # every point coincides with a centre: pick uniformly
            choice = int(torch.randint(n, (1,), generator=generator))
        else:
            choice = int(torch.multinomial(nearest / total, 1, generator=generator))
        centres.append(points[choice])
        nearest = torch.minimum(nearest, ((points - points[choice]) ** 2).sum(1))
    return torch.stack(centres)


def kmeans(points: torch.Tensor, k: int, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
           seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(N, D) points → (centres (k, D), assignment (N,), inertia); k is capped at N.

    Convergence: the squared centre shift falls below ``tol`` × the mean per-dimension variance (scikit-learn's
    relative tolerance).  An empty cluster keeps its previous centre.
    """
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"kmeans needs (N, D) points with N ≥ 1, got shape {tuple(points.shape)}")
    data = points.detach().to("cpu", torch.float64)
    k = min(int(k), data.shape[0])
    generator = torch.Generator().manual_seed(seed)
    threshold = tol * float(data.var(0, unbiased=False).mean())
    best: tuple[torch.Tensor, torch.Tensor, float] | None = None
    for _ in range(n_init):
        centres = _plus_plus(data, k, generator)
        for _ in range(max_iter):
            assignment = torch.cdist(data, centres).argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, assignment, data)
            counts = torch.bincount(assignment, minlength=k).unsqueeze(1)
            updated = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
            shift = float(((updated - centres) ** 2).sum())
            centres = updated
            if shift <= threshold:
                break
        assignment = torch.cdist(data, centres).argmin(1)
        inertia = float(((data - centres[assignment]) ** 2).sum())
        if best is None or inertia < best[2]:
            best = (centres, assignment, inertia)
    centres, assignment, inertia = best
    return centres.to(points.dtype), assignment, inertia
