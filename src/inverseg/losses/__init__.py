"""Losses: the CRN perceptual loss with λ balancing (paper §3.3) and the CRN diversity loss (§3.4)."""

from .diversity import DiversityLoss
from .perceptual import (
    CRN_LAYERS,
    CRN_PIXEL_SCALE,
    OFFICIAL_LAMBDAS,
    PIXEL,
    LambdaBalancer,
    PerceptualLoss,
    ReferenceCache,
)

__all__ = [
    "CRN_LAYERS",
    "CRN_PIXEL_SCALE",
    "OFFICIAL_LAMBDAS",
    "PIXEL",
    "DiversityLoss",
    "LambdaBalancer",
    "PerceptualLoss",
    "ReferenceCache",
]
