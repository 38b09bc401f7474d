"""Canvases (SIMS §3.3–3.4): retrieved segments pasted in order with elided boundaries, and simulated ones.

Test time (§3.3): each retrieved segment is placed on the query segment, aligned by the transformation network,
and pasted back to front in the predicted order.  A band around the boundary of every pasted segment is masked
out ("boundary elision") so that the synthesis network has to draw the transitions itself.  The result is a
canvas image C and a coverage mask.

Training (§3.4): the synthesis network never sees real canvases during training.  Canvases are *simulated* from a
training pair (I, L): the image is stencilled by the layout's segments (some dropped), some segments are recoloured
towards a same-class bank segment (colour transfer) and random bands around segment boundaries are elided.

Geometry: all placement maths uses 3×3 matrices on continuous pixel coordinates (x, y, 1) — pixel i covers
[i, i + 1) — and :func:`rect_matrix` to go to and from the [-1, 1] coordinates of ``F.affine_grid``
(``align_corners=False``).  A segment is rendered at full resolution with one ``grid_sample`` from its stored crop,
so placement, window and predicted transform are composed, never resampled one after the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sims import to_matrix, warp
from .colour import reinhard_transfer
from .segments import Decomposition

Box = tuple[float, float, float, float]  # top, left, bottom, right


# ---------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------
def rect_matrix(box: Box) -> torch.Tensor:
    """3×3 (float64): normalised [-1, 1]² of a rectangle → its continuous pixel coordinates (x, y)."""
    top, left, bottom, right = (float(v) for v in box)
    return torch.tensor([[(right - left) / 2, 0.0, (left + right) / 2],
                         [0.0, (bottom - top) / 2, (top + bottom) / 2],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def square_window(box: Box, enlarge: float = 1.25) -> Box:
    """A square around a box, side = enlarge × its longer side (keeps rotations true rotations)."""
    top, left, bottom, right = box
    side = max(bottom - top, right - left, 1.0) * enlarge
    cy, cx = (top + bottom) / 2, (left + right) / 2
    return (cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2)


def union_box(first: Box, second: Box) -> Box:
    return (min(first[0], second[0]), min(first[1], second[1]), max(first[2], second[2]), max(first[3], second[3]))


def placement_matrix(source: Box, target: Box) -> torch.Tensor:
    """crop pixel coordinates → image pixel coordinates, mapping rectangle ``source`` (in the crop) onto ``target``.

    Image geometry (official): source = the whole crop, target = the segment's own box in its source image — it
    stays where it was photographed.  Box geometry: source = the square around the crop, target = the square
    around the query's box — a uniform scale and a shift, the initial alignment the transformation network
    refines (:func:`inverseg.sims.segments.square_box`).
    """
    return rect_matrix(target) @ torch.linalg.inv(rect_matrix(source))


def map_box(matrix: torch.Tensor, box: Box) -> Box:
    """The box spanned by the two corners of ``box`` under a (scale + shift) placement matrix."""
    top, left, bottom, right = box
    corners = matrix @ torch.tensor([[left, right], [top, bottom], [1.0, 1.0]], dtype=torch.float64)
    return (float(corners[1].min()), float(corners[0].min()), float(corners[1].max()), float(corners[0].max()))


def sampling_theta(crop_size: tuple[int, int], placement: torch.Tensor, window: Box, theta: torch.Tensor | None,
                   output: Box) -> torch.Tensor:
    """θ for ``grid_sample`` on the crop that renders the placed, transformed segment into rectangle ``output``.

    crop_norm = N_crop⁻¹ · placement⁻¹ · N_window · θ · N_window⁻¹ · N_output · out_norm
    (θ = None: identity).  ``output`` is the full image for rendering, or the window itself for network input.
    """
    crop = rect_matrix((0, 0, crop_size[0], crop_size[1]))
    win = rect_matrix(window)
    transform = torch.eye(3, dtype=torch.float64) if theta is None else to_matrix(theta.detach().double())
    matrix = torch.linalg.inv(crop) @ torch.linalg.inv(placement) @ win @ transform @ torch.linalg.inv(win) \
        @ rect_matrix(output)
    return matrix[:2].float()


def sample_crop(crop: torch.Tensor, theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(4, h, w) premultiplied RGB-in-[0, 1] + mask → (4, H, W) through ``theta`` (bilinear, zeros outside)."""
    return warp(crop[None], theta[None].to(crop), size=size)[0]


def unpremultiply(sampled: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, H, W) sampled premultiplied crop → RGB in [-1, 1] and a boolean mask (coverage ≥ threshold).

    The stored colour is zero outside the segment; dividing by the interpolated mask keeps edge pixels from
    darkening.
    """
    coverage = sampled[3]
    rgb01 = sampled[:3] / coverage.clamp_min(1e-6)
    mask = coverage >= threshold
    return (rgb01.clamp(0, 1) * 2 - 1) * mask, mask


def crop_tensor(rgb: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """A bank crop (h, w, 3) uint8 + (h, w) bool → (4, h, w) float: RGB in [0, 1] (zero outside) + mask."""
    colour = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255
    alpha = torch.from_numpy(np.ascontiguousarray(mask)).float()[None]
    return torch.cat([colour * alpha, alpha])


# ---------------------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------------------
def erode(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary erosion of (N, H, W) masks by a (2p+1)² square; image borders do not erode."""
    if pixels <= 0:
        return masks.bool()
    inverse = (~masks.bool()).float()[:, None]
    grown = F.max_pool2d(inverse, 2 * pixels + 1, stride=1, padding=pixels)[:, 0]
    return grown < 0.5


@dataclass
class Canvas:
    """A composed canvas: image (3, H, W) in [-1, 1] (−1 = black where empty), coverage mask (H, W) bool, the
    segment index visible at each pixel before elision (−1: none) and the layout the synthesis network gets."""

    image: torch.Tensor
    mask: torch.Tensor
    owner: torch.Tensor
    layout: torch.Tensor

    @classmethod
    def empty(cls, layout: torch.Tensor) -> "Canvas":
        height, width = layout.shape[-2:]
        return cls(image=torch.full((3, height, width), -1.0), mask=torch.zeros(height, width, dtype=torch.bool),
                   owner=torch.full((height, width), -1, dtype=torch.long), layout=layout.clone())

    def display(self) -> torch.Tensor:
        """The canvas as a picture: pasted pixels, black elsewhere."""
        return torch.where(self.mask[None], self.image, torch.full_like(self.image, -1.0))


def compose(colours: list[torch.Tensor], masks: list[torch.Tensor], order: list[int], elision_pixels: int,
            layout: torch.Tensor, classes: list[int] | None = None, modify_layout: bool = False) -> Canvas:
    """Paste segments back to front (``order[0]`` first, the front one last) and elide their boundaries.

    Coverage = ∪_j erode(visible part of segment j, elision_pixels).  ``modify_layout`` (official
    test_generate_canvas.m) rewrites the layout to the class of the pasted segment wherever one is visible, so the
    output no longer follows the input layout exactly; by default the input layout is kept.
    """
    canvas = Canvas.empty(layout)
    if not colours:
        return canvas
    for index in order:
        canvas.image = torch.where(masks[index][None], colours[index], canvas.image)
        canvas.owner[masks[index]] = index
    visible = torch.stack([canvas.owner == index for index in range(len(colours))])
    canvas.mask = erode(visible, elision_pixels).any(0)
    if modify_layout:
        if classes is None:
            raise ValueError("modify_layout needs the class of every pasted segment")
        table = torch.tensor(classes, dtype=canvas.layout.dtype)
        pasted = canvas.owner >= 0
        canvas.layout[pasted] = table[canvas.owner[pasted]]
    return canvas


def paint_order(count: int, pairs: list[tuple[int, int, float]]) -> list[int]:
    """Back-to-front order from pairwise beliefs (a, b, P(a in front of b)).

    Topological order of "behind before in front"; when the beliefs form a cycle, the remaining segment whose
    unresolved "something is behind me" constraints are weakest goes next.  Ties by index (deterministic).
    """
    behind: dict[int, dict[int, float]] = {i: {} for i in range(count)}  # node → {node behind it: confidence}
    for a, b, p_a in pairs:
        if p_a >= 0.5:
            behind[a][b] = max(behind[a].get(b, 0.0), p_a - 0.5)
        else:
            behind[b][a] = max(behind[b].get(a, 0.0), 0.5 - p_a)
    order, done = [], set()
    while len(order) < count:
        remaining = [i for i in range(count) if i not in done]
        ready = [i for i in remaining if all(j in done for j in behind[i])]
        if ready:
            chosen = ready[0]
        else:
            chosen = min(remaining, key=lambda i: (sum(w for j, w in behind[i].items() if j not in done), i))
        order.append(chosen)
        done.add(chosen)
    return order


# ---------------------------------------------------------------------------------------------------------
# Simulated canvases for training (§3.4)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SimulationSettings:
    """How training canvases are made from (I, L): stencilling, colour transfer, boundary elision."""

    drop_prob: float = 0.25  # each segment is left off the canvas with this probability (stencilling)
    empty_prob: float = 0.05  # whole canvas empty: keeps the layout-only path (the paper's lower bound) trained
    colour_transfer_prob: float = 0.5  # per kept segment: recolour towards a random same-class bank segment
    colour_space: str = "lab"  # lab | rgb (Reinhard mean/std matching; official: Pitié IDT)
    elision_prob: float = 0.5  # per kept segment: elide a band around its boundary ...
    max_elision: float = 0.04  # ... of a random width up to this fraction of the image height

    def validate(self) -> None:
        for name in ("drop_prob", "empty_prob", "colour_transfer_prob", "elision_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"simulate.{name} must be a probability in [0, 1], got {value}")
        if self.colour_space not in ("lab", "rgb"):
            raise ValueError(f"simulate.colour_space must be lab or rgb, got {self.colour_space!r}")


def simulate_canvas(image: torch.Tensor, decomposition: Decomposition, settings: SimulationSettings,
                    generator: torch.Generator | None = None, bank=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A training canvas from a training image (3, H, W) and its decomposed layout → (canvas, mask (H, W) bool).

    ``bank`` (a MemoryBank) provides colour-transfer targets; without one, colours are left as they are.
    """
    height, width = image.shape[-2:]
    mask = torch.zeros(height, width, dtype=torch.bool)

    def chance(probability: float) -> bool:
        return probability > 0 and float(torch.rand((), generator=generator)) < probability

    if chance(settings.empty_prob) or not decomposition.segments:
        return torch.full_like(image, -1.0), mask
    canvas = image.clone()
    component_map = torch.from_numpy(decomposition.component_map)
    max_band = int(round(settings.max_elision * height))
    for segment in decomposition.segments:
        if chance(settings.drop_prob):
            continue
        region = component_map == segment.index
        if bank is not None and chance(settings.colour_transfer_prob):
            candidates = bank.indices_of_class(segment.class_id)
            if len(candidates):
                pick = int(candidates[int(torch.randint(len(candidates), (), generator=generator))])
                record = bank.segments[pick]
                key = "lab" if settings.colour_space == "lab" else "rgb"
                canvas = reinhard_transfer(canvas, region, torch.from_numpy(np.array(record[f"{key}_mean"])),
                                           torch.from_numpy(np.array(record[f"{key}_std"])),
                                           space=settings.colour_space)
        if max_band > 0 and chance(settings.elision_prob):
            band = int(torch.randint(1, max_band + 1, (), generator=generator))
            region = erode(region[None], band)[0]
        mask |= region
    return torch.where(mask[None], canvas, torch.full_like(canvas, -1.0)), mask


__all__ = [
    "Canvas", "SimulationSettings", "compose", "crop_tensor", "erode", "map_box", "paint_order", "placement_matrix",
    "rect_matrix", "sample_crop", "sampling_theta", "simulate_canvas", "square_window", "union_box",
    "unpremultiply",
]
