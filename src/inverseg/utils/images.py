"""Conversions at the I/O boundary ([-1,1] tensors ↔ uint8 arrays) and simple image grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3,H,W) in [-1,1] → (H,W,3) uint8 (clipped, rounded)."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().byte()
    return array.permute(1, 2, 0).numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 → (3,H,W) float in [-1,1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def fit_height(array: np.ndarray, height: int, nearest: bool = False) -> np.ndarray:
    if array.shape[0] == height:
        return array
    width = max(1, round(array.shape[1] * height / array.shape[0]))
    method = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(array).resize((width, height), method))


def grid(rows: list[list[np.ndarray]], pad: int = 4, background: int = 255,
         titles: list[str] | None = None) -> np.ndarray:
    """Rows of (H,W,3) uint8 tiles → one uint8 image; tiles in a row share their height.

    ``titles`` (one per column) are drawn above the first row with PIL's default font.
    """
    heights = [max(t.shape[0] for t in row) for row in rows]
    widths = [sum(t.shape[1] for t in row) + pad * (len(row) - 1) for row in rows]
    title_h = 14 if titles else 0
    canvas = np.full((title_h + sum(heights) + pad * (len(rows) + 1), max(widths) + 2 * pad, 3), background,
                     np.uint8)
    top = title_h + pad
    for row, height in zip(rows, heights):
        left = pad
        for tile in row:
            canvas[top: top + tile.shape[0], left: left + tile.shape[1]] = tile
            left += tile.shape[1] + pad
        top += height + pad
    if titles:
        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        left = pad
        for title, tile in zip(titles, rows[0]):
            draw.text((left, 1), title, fill=(0, 0, 0))
            left += tile.shape[1] + pad
        canvas = np.asarray(image)
    return canvas


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
