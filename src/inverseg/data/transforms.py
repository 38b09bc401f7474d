"""Joint image/label transforms: resize, random crop, horizontal flip — labels always nearest.

Randomness comes from a ``numpy.random.Generator`` the dataset derives from (seed, epoch, index), so that a
sample's augmentation is reproducible and independent of worker scheduling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class JointTransform:
    """``size`` = (H, W) of the output.

    ``resize``: "exact" resizes to ``size`` directly; "short" scales the shorter side to the matching side of
    ``size`` and then crops; "none" only crops.  ``crop``: "center" or "random".  ``scale_jitter`` enlarges the
    resize target by a random factor in [1, 1+jitter] before cropping (pix2pixHD/SPADE's load 286 → crop 256).
    """

    size: tuple[int, int] | None = None
    resize: str = "exact"
    crop: str = "center"
    flip: bool = False
    scale_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.resize not in ("exact", "short", "none"):
            raise ValueError(f"resize must be 'exact', 'short' or 'none', got {self.resize!r}")
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {self.crop!r}")

    @property
    def is_random(self) -> bool:
        return self.flip or self.crop == "random" or self.scale_jitter > 0

    def __call__(
        self,
        image: np.ndarray,
        label: np.ndarray,
        instance: np.ndarray | None,
        rng: np.random.Generator | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        height, width = label.shape
        target_h, target_w = self.size if self.size is not None else (height, width)
        jitter = 1.0 + (rng.uniform(0.0, self.scale_jitter) if (rng is not None and self.scale_jitter) else 0.0)
        if self.resize == "exact":
            new_h, new_w = round(target_h * jitter), round(target_w * jitter)
        elif self.resize == "short":
            scale = max(target_h / height, target_w / width) * jitter
            new_h, new_w = max(target_h, round(height * scale)), max(target_w, round(width * scale))
        else:
            new_h, new_w = height, width
            if height < target_h or width < target_w:
                raise ValueError(
                    f"image {width}×{height} is smaller than the crop {target_w}×{target_h}; fix: use resize 'short'"
                )
        if (new_h, new_w) != (height, width):
            image = resize_array(image, (new_h, new_w), Image.BICUBIC)
            label = resize_array(label, (new_h, new_w), Image.NEAREST)
            if instance is not None:
                instance = resize_array(instance, (new_h, new_w), Image.NEAREST)
        if (new_h, new_w) != (target_h, target_w):
            if self.crop == "random" and rng is not None:
                top = int(rng.integers(0, new_h - target_h + 1))
                left = int(rng.integers(0, new_w - target_w + 1))
            else:
                top, left = (new_h - target_h) // 2, (new_w - target_w) // 2
            window = (slice(top, top + target_h), slice(left, left + target_w))
            image, label = image[window], label[window]
            instance = instance[window] if instance is not None else None
        if self.flip and rng is not None and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
            instance = instance[:, ::-1] if instance is not None else None
        return (
            np.ascontiguousarray(image),
            np.ascontiguousarray(label),
            None if instance is None else np.ascontiguousarray(instance),
        )


def resize_array(array: np.ndarray, size: tuple[int, int], method: int) -> np.ndarray:
    """Resize an (H,W[,3]) array with PIL (the one resize used for training data and inference inputs); integer maps go through 32-bit mode 'I' so ids above 255 survive."""
    height, width = size
    if array.ndim == 3:
        return np.array(Image.fromarray(array).resize((width, height), method))  # writable, for torch
    resized = Image.fromarray(array.astype(np.int32)).resize((width, height), method)
    return np.asarray(resized).astype(array.dtype)
