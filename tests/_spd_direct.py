"""A direct, unvectorised Shape-aware Position Descriptor, written from the official algorithm's description
(methods-later.md §4.1) pixel pair by pixel pair, to check ``inverseg.labels.shape_context`` against.

It shares no code with the library: the exterior is a breadth-first flood fill from outside the image, and each
pair's bin comes from float32 scalar arithmetic (numpy), as the official CUDA path computes it."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

EDGES = np.logspace(np.log10(0.125), np.log10(2.0), 6).astype(np.float32)
F = np.float32


def exterior(mask: np.ndarray) -> np.ndarray:
    """Pixels outside ``mask`` reachable from beyond the image border through 4-neighbours outside the mask."""
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), bool)
    padded[1:-1, 1:-1] = mask
    seen = np.zeros_like(padded)
    seen[0, 0] = True
    queue = deque([(0, 0)])
    while queue:
        i, j = queue.popleft()
        for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
            if 0 <= a < height + 2 and 0 <= b < width + 2 and not seen[a, b] and not padded[a, b]:
                seen[a, b] = True
                queue.append((a, b))
    return seen


def outline(mask: np.ndarray) -> list[tuple[int, int]]:
    outside = exterior(mask)
    pixels = []
    for i, j in zip(*np.nonzero(mask)):
        a, b = i + 1, j + 1  # padded coordinates
        if outside[a - 1, b] or outside[a + 1, b] or outside[a, b - 1] or outside[a, b + 1]:
            pixels.append((int(i), int(j)))
    return pixels


def spd(regions: np.ndarray) -> np.ndarray:
    """(H,W) region ids (negative: none) → (72,H,W) float32, every pair of every region counted one by one."""
    height, width = regions.shape
    counts = np.zeros((72, height, width), np.float64)
    for value in sorted(int(v) for v in np.unique(regions) if v >= 0):
        mask = regions == value
        contour = outline(mask)
        points = [(int(i), int(j)) for i, j in zip(*np.nonzero(mask))]

        def offsets(p, c):
            d_row = F(p[0]) - F(c[0])
            d_col = -(F(p[1]) - F(c[1]))  # −0.0 when the columns agree
            return d_row, d_col, np.sqrt(d_row * d_row + d_col * d_col)

        largest = max(offsets(p, c)[2] for p in points for c in contour)
        for p in points:
            for c in contour:
                d_row, d_col, radius = offsets(p, c)
                with np.errstate(invalid="ignore"):
                    scaled = radius / (largest / F(2))
                ring = sum(bool(scaled <= edge) for edge in EDGES)
                if ring == 0:
                    continue
                theta = np.arctan2(d_row, d_col)
                if theta < 0:
                    theta = theta + F(2 * math.pi)
                sector = int(np.floor(theta / F(2 * math.pi / 12)))
                counts[(ring - 1) * 12 + sector, p[0], p[1]] += 1
    total = counts.sum(0, keepdims=True)
    return (counts / np.where(total == 0, 1, total)).astype(np.float32)
