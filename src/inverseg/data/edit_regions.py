"""Where an editing model learns to edit: boxes erased from a photo whose layout stays complete (SESAME, §3.1 of the
reference notes; official ``data/basebox_dataset.py`` and ``data/segmentation_dataset.py`` of vglsd/OpenSESAME).

The official data (HIM preprocessing) lists every object's bounding box in a JSON file.  Here the boxes come from
the sample itself: one box per instance (instance map) or per connected region of a class (label map only, e.g.
CamVid), so any dataset inverseg loads can train an editing model.  Per sample:

* an **object box**: the bounding box of an object of a class of interest whose longer side is at least
  ``min_box_size`` — or, with probability ``prob_bg`` (and when there is no such object), a **background box**:
  a random rectangle with sides in ``[min_box_size, max_box_size)`` (official ``sample_bg_from_full``);
* optionally a **context crop**: a square window ``context_margin`` × the box's longer side around it (clipped to
  the image, randomly shifted during training), resized to ``crop_size`` (official ``crop_box_with_margin`` +
  ``select_region``);
* the hole is the box rectangle (official ``mask_in``).

Boxes are ``(top, left, bottom, right)`` with exclusive bottom/right, in pixels.  Randomness comes from torch's
RNG, which the Trainer seeds and checkpoints (exact resume).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class RegionRule:
    """The box-sampling numbers of one preset (see ``methods/sesame.py: MaskingConfig`` for their sources)."""

    interest: tuple[int, ...]  # class ids whose objects are erased; empty: every class
    min_box_size: int
    max_box_size: int
    prob_bg: float
    object_choice: str = "random"  # random | first (the official code overwrites its random pick with the first)


def _uniform() -> float:
    return float(torch.rand(()))


def _randint(low: int, high: int) -> int:
    """An integer in [low, high) from torch's RNG (numpy's randint convention)."""
    return int(torch.randint(low, max(high, low + 1), ()))


def object_boxes(label: np.ndarray, instance: np.ndarray | None, interest: tuple[int, ...]) -> list[tuple[Box, int]]:
    """(box, class id) of every object of the classes of interest, ordered by instance id (or class, then region).

    With an instance map an object is one instance id (its class: the label at its pixels); without one it is a
    4-connected region of one class.
    """
    classes = interest or tuple(int(v) for v in np.unique(label))
    found: list[tuple[Box, int]] = []
    if instance is not None:
        for instance_id in np.unique(instance):
            rows, cols = np.nonzero(instance == instance_id)
            cls = int(np.bincount(label[rows, cols].clip(min=0)).argmax())
            if cls in classes:
                found.append(((int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1), cls))
        return found
    for cls in classes:
        regions, _ = ndimage.label(label == cls)
        for index, window in enumerate(ndimage.find_objects(regions)):
            if window is not None:
                found.append(((window[0].start, window[1].start, window[0].stop, window[1].stop), cls))
    return found


def background_box(height: int, width: int, min_size: int, max_size: int) -> Box:
    """A random rectangle with sides in [min_size, max_size), inside the image (official ``sample_bg_from_full``)."""
    if height < min_size + 2 or width < min_size + 2:
        raise ValueError(f"background boxes need images larger than min_box_size + 1 = {min_size + 1} px, got "
                         f"{height}×{width}; fix: lower masking.min_box_size")
    top, left = _randint(0, height - min_size - 1), _randint(0, width - min_size - 1)
    bottom = _randint(top + min_size, min(top + max_size, height - 1))
    right = _randint(left + min_size, min(left + max_size, width - 1))
    return top, left, bottom, right


def choose_box(label: np.ndarray, instance: np.ndarray | None, rule: RegionRule) -> Box:
    """An object box of a class of interest (longer side ≥ min_box_size) or, with prob_bg / none found, a random one."""
    candidates = [box for box, _ in object_boxes(label, instance, rule.interest)
                  if max(box[2] - box[0], box[3] - box[1]) >= rule.min_box_size]
    if _uniform() < rule.prob_bg or not candidates:
        return background_box(*label.shape, rule.min_box_size, rule.max_box_size)
    if rule.object_choice == "first":
        return candidates[0]
    return candidates[_randint(0, len(candidates))]


def context_window(box: Box, height: int, width: int, margin: float, jitter: bool) -> Box:
    """A square window ``margin`` × the box's longer side around its centre, clipped to the image and, with
    ``jitter``, shifted by up to ± (margin − 1)·side / 4 per axis (official ``crop_box_with_margin``)."""
    top, left, bottom, right = box
    longer = max(bottom - top, right - left)
    side = int(round(min(longer * margin, min(height, width))))
    shift = min(longer * (margin - 1.0), min(height, width))
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    y, x = centre_y - side / 2, centre_x - side / 2
    if jitter:
        y += (_uniform() - 0.5) * shift / 2
        x += (_uniform() - 0.5) * shift / 2
    y = int(round(min(max(0.0, y), height - side)))
    x = int(round(min(max(0.0, x), width - side)))
    return y, x, y + side, x + side


def box_mask(box: Box, height: int, width: int) -> torch.Tensor:
    mask = torch.zeros(height, width)
    mask[box[0]:box[2], box[1]:box[3]] = 1.0
    return mask


def crop_resize(image: torch.Tensor, label: torch.Tensor, instance: torch.Tensor | None, window: Box,
                size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Crop (3,H,W) image, (H,W) label [and instance] to ``window`` and resize to size×size (image bicubic, maps
    nearest, as the official ``select_region``)."""
    top, left, bottom, right = window
    crop = image[:, top:bottom, left:right][None]
    shrink = crop.shape[-1] > size
    image = F.interpolate(crop, size=(size, size), mode="bicubic", align_corners=False, antialias=shrink)[0]

    def nearest(ids: torch.Tensor) -> torch.Tensor:
        part = ids[top:bottom, left:right][None, None].float()
        return F.interpolate(part, size=(size, size), mode="nearest")[0, 0].long()

    return image.clamp(-1.0, 1.0), nearest(label), None if instance is None else nearest(instance)


def sample_regions(image: torch.Tensor, label: torch.Tensor, instance: torch.Tensor | None, rule: RegionRule,
                   context_crop: bool, crop_size: int, context_margin: float, jitter: bool, prob_full: float = 0.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """A batch (B,3,H,W) / (B,H,W) [/ (B,H,W)] → (images, labels, instances, holes (B,1,h,w) with 1 = erased).

    ``prob_full``: the share of samples whose hole is the whole image (layout-to-image synthesis; not official).
    """
    images, labels, instances, holes = [], [], [], []
    height, width = label.shape[-2:]
    for index in range(label.shape[0]):
        img, ids = image[index], label[index]
        inst = None if instance is None else instance[index]
        if _uniform() < prob_full:
            box = (0, 0, height, width)
            if context_crop:  # a random square of the image's shorter side, all of it erased
                side = min(height, width)
                top, left = _randint(0, height - side + 1), _randint(0, width - side + 1)
                img, ids, inst = crop_resize(img, ids, inst, (top, left, top + side, left + side), crop_size)
                box = (0, 0, crop_size, crop_size)
        else:
            box = choose_box(ids.cpu().numpy(), None if inst is None else inst.cpu().numpy(), rule)
            if context_crop:
                window = context_window(box, height, width, context_margin, jitter)
                scale = crop_size / (window[2] - window[0])
                box = (max(int((box[0] - window[0]) * scale), 0), max(int((box[1] - window[1]) * scale), 0),
                       min(int((box[2] - window[0]) * scale), crop_size),
                       min(int((box[3] - window[1]) * scale), crop_size))
                img, ids, inst = crop_resize(img, ids, inst, window, crop_size)
        images.append(img)
        labels.append(ids)
        instances.append(inst)
        holes.append(box_mask(box, *ids.shape).to(img))
    stacked_instances = None if instance is None else torch.stack(instances)
    return torch.stack(images), torch.stack(labels), stacked_instances, torch.stack(holes)[:, None]
