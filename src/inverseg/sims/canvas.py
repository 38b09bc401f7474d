"""Canvases (SIMS §3.3–3.4): retrieved segments pasted in order with elided boundaries, and simulated ones.

Test time (§3.3): each retrieved segment is placed on the query segment, aligned by the transformation network,
and pasted back to front in the predicted order.  A band around the boundary of every pasted segment is masked
out ("boundary elision") so that the synthesis network has to draw the transitions itself.  The result is a
canvas image C and a coverage mask.

Training (§3.4): the synthesis network never sees real canvases during training.  Canvases are *simulated* from a
training pair (I, L).  By default as the official ``train_generate_synthesis.m`` does it: each segment is stencilled
with the intersection of its own mask and that of the best-overlapping same-class segment of another image, some are
recoloured (MKL colour transfer), white noise is sprinkled on a band around every pasted boundary and the input
layout gets void holes — so training canvases disagree with the layout as test canvases do.  ``procedure:
own-mask`` keeps the earlier stencil-by-own-mask procedure (see :class:`SimulationSettings`).

Geometry: all placement maths uses 3×3 matrices on continuous pixel coordinates (x, y, 1) — pixel i covers
[i, i + 1) — and :func:`rect_matrix` to go to and from the [-1, 1] coordinates of ``F.affine_grid``
(``align_corners=False``).  A segment is rendered at full resolution with one ``grid_sample`` from its stored crop,
so placement, window and predicted transform are composed, never resampled one after the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sims import to_matrix, warp
from .colour import mkl_recolour, reinhard_transfer
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
            layout: torch.Tensor, classes: list[int] | None = None, modify_layout: bool = False,
            query_masks: list[torch.Tensor] | None = None, keep_classes: tuple[int, ...] = (),
            void_id: int = 255, elision_mode: str = "erode", noise_fraction: float = 0.5,
            generator: torch.Generator | None = None) -> Canvas:
    """Paste segments back to front (``order[0]`` first, the front one last) and elide their boundaries.

    ``elision_mode="erode"``: coverage = ∪_j erode(visible part of segment j, elision_pixels), a band is left
    uncovered.  ``"noise"`` (official test_generate_canvas.m "inner elision"): inside each visible part, a random
    ``noise_fraction`` of the pixels within an ``elision_pixels``-wide square of its boundary are set to white and
    stay covered — the same white noise the official training canvases carry.  ``modify_layout`` (official
    test_generate_canvas.m) rewrites the layout to what was pasted: the query region of every pasted segment
    (``query_masks``) becomes void, every pixel where a pasted segment is visible takes that segment's class, and
    void pixels whose input class is in ``keep_classes`` get it back (the official ``fill_context`` for
    background classes).  Without ``modify_layout`` the input layout is kept.
    """
    canvas = Canvas.empty(layout)
    if not colours:
        return canvas
    for index in order:
        canvas.image = torch.where(masks[index][None], colours[index], canvas.image)
        canvas.owner[masks[index]] = index
    visible = torch.stack([canvas.owner == index for index in range(len(colours))])
    if elision_mode == "noise":
        canvas.mask = visible.any(0)
        if elision_pixels > 0 and noise_fraction > 0:
            inner = torch.stack([boundary_band(part, elision_pixels) & part for part in visible]).any(0)
            noise = inner & (torch.rand(inner.shape, generator=generator) < noise_fraction)
            canvas.image = torch.where(noise[None], torch.ones_like(canvas.image), canvas.image)
    elif elision_mode == "erode":
        canvas.mask = erode(visible, elision_pixels).any(0)
    else:
        raise ValueError(f"elision_mode must be 'noise' or 'erode', got {elision_mode!r}")
    if modify_layout:
        if classes is None:
            raise ValueError("modify_layout needs the class of every pasted segment")
        rewritten = canvas.layout
        for query in query_masks or []:
            rewritten[query] = void_id
        table = torch.tensor(classes, dtype=rewritten.dtype)
        pasted = canvas.owner >= 0
        rewritten[pasted] = table[canvas.owner[pasted]]
        if keep_classes:
            restore = (rewritten == void_id) & torch.isin(layout, torch.tensor(keep_classes, dtype=layout.dtype))
            rewritten[restore] = layout[restore]
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
PROCEDURES = ("official", "own-mask")
COLOUR_TRANSFERS = ("mkl", "reinhard")
OFFICIAL_MIN_AREA = 1000 / (256 * 512)  # train_generate_synthesis.m: only segments > 1000 px (at 256×512) are pasted


@dataclass
class SimulationSettings:
    """How training canvases are made from (I, L).

    ``procedure: official`` (default) follows ``train_generate_synthesis.m``: every segment larger than
    ``min_area`` is stencilled with the *intersection* of its own mask and the mask of the same-class segment of
    another training image that overlaps it best (IoU in image coordinates, over the segments of
    ``search_images`` random images), recoloured with probability ``colour_transfer_prob`` (0.2: ``rand > 0.8``) by
    the MKL map towards that segment, and half the pixels of a band around its boundary are set to white; the input
    layout gets void holes where a jittered copy of the segment or the retrieved segment spills outside it.
    Training canvases then disagree with the layout the way test canvases do.

    ``procedure: own-mask`` is this library's earlier procedure: each segment stencilled with its own exact mask,
    dropped with ``drop_prob``, eroded with ``elision_prob`` by up to ``max_elision`` × H, recoloured towards a
    random same-class bank segment; the layout is left as it is.
    """

    procedure: str = "official"  # official | own-mask
    empty_prob: float = 0.05  # whole canvas empty: keeps the layout-only lower bound trained (not official: 0)
    colour_transfer: str = "mkl"  # mkl (official colour_transfer_MKL, RGB) | reinhard (mean/std, colour_space)
    colour_transfer_prob: float = 0.2  # official: rand > 0.8
    colour_space: str = "lab"  # reinhard only: lab | rgb
    # official procedure
    min_area: float = OFFICIAL_MIN_AREA  # fraction of the image; smaller segments are not pasted
    search_images: int = 100  # random other images searched for the best-IoU segment (official 100); 0 = all
    noise_band: float = 0.05  # side of the square that dilates the boundary, fraction of H (official strel 0.05·H)
    noise_fraction: float = 0.5  # share of the band's pixels set to white (official: half, randomly)
    label_noise: bool = True  # void holes in the input layout (official "label map add noise")
    jitter_rotation: float = 2.5  # degrees: the jittered copy is rotated by U(−r, r) and shifted (official ±2.5°)
    # own-mask procedure
    drop_prob: float = 0.25  # each segment is left off the canvas with this probability (stencilling)
    elision_prob: float = 0.5  # per kept segment: elide a band around its boundary ...
    max_elision: float = 0.04  # ... of a random width up to this fraction of the image height

    def validate(self) -> None:
        for name in ("drop_prob", "empty_prob", "colour_transfer_prob", "elision_prob", "noise_fraction",
                     "min_area"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"simulate.{name} must be a probability in [0, 1], got {value}")
        if self.procedure not in PROCEDURES:
            raise ValueError(f"simulate.procedure must be one of {', '.join(PROCEDURES)}, got {self.procedure!r}")
        if self.colour_transfer not in COLOUR_TRANSFERS:
            raise ValueError(f"simulate.colour_transfer must be one of {', '.join(COLOUR_TRANSFERS)}, got "
                             f"{self.colour_transfer!r}")
        if self.colour_space not in ("lab", "rgb"):
            raise ValueError(f"simulate.colour_space must be lab or rgb, got {self.colour_space!r}")
        if self.search_images < 0 or self.noise_band < 0 or self.jitter_rotation < 0:
            raise ValueError("simulate.search_images, noise_band and jitter_rotation must be ≥ 0")


def simulate_canvas(image: torch.Tensor, decomposition: Decomposition, settings: SimulationSettings,
                    generator: torch.Generator | None = None, bank=None, source: int | None = None,
                    ranks: np.ndarray | None = None, void_id: int = 255
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training canvas from a training image (3, H, W) and its decomposed layout → (canvas, mask (H, W) bool,
    the layout the network gets (H, W) int64: the input layout, with void holes under the official procedure).

    ``bank`` (a MemoryBank) provides the retrieved segments and colour-transfer targets; ``source`` is the
    image's index in the bank (its own segments are not retrieved); ``ranks`` (class → depth layer, see
    :func:`inverseg.sims.segments.class_ranks`) sets the paint order, back first (official: a fixed class order).
    """
    layout = torch.as_tensor(np.asarray(decomposition.label)).long().clone()
    height, width = image.shape[-2:]

    def chance(probability: float) -> bool:
        return probability > 0 and float(torch.rand((), generator=generator)) < probability

    if chance(settings.empty_prob) or not decomposition.segments:
        return torch.full_like(image, -1.0), torch.zeros(height, width, dtype=torch.bool), layout
    if settings.procedure == "own-mask":
        canvas, mask = _simulate_own_mask(image, decomposition, settings, chance, generator, bank)
        return canvas, mask, layout
    if bank is None:
        raise ValueError("the official canvas simulation retrieves segments from a memory bank; pass bank=")
    return _simulate_official(image, decomposition, settings, chance, generator, bank, source, ranks, layout,
                              void_id)


def _recolour(image: torch.Tensor, region: torch.Tensor, settings: SimulationSettings, bank, pick: int,
              apply: torch.Tensor | None = None) -> torch.Tensor:
    """``image`` with the ``apply`` pixels (default ``region``) recoloured towards bank segment ``pick``."""
    if settings.colour_transfer == "mkl":
        rgb, mask = bank.crop(pick)
        target = torch.from_numpy(np.ascontiguousarray(rgb[mask])).float() / 127.5 - 1
        return mkl_recolour(image, region, target, apply)
    record = bank.segments[pick]
    key = "lab" if settings.colour_space == "lab" else "rgb"
    moved = reinhard_transfer(image, region, torch.from_numpy(np.array(record[f"{key}_mean"])),
                              torch.from_numpy(np.array(record[f"{key}_std"])), space=settings.colour_space)
    if apply is None:
        return moved
    return torch.where(apply[None], moved, image)


def _simulate_own_mask(image, decomposition, settings, chance, generator, bank):
    """The earlier procedure: own exact masks, random drops, erosion, recolouring towards a random bank segment."""
    height = image.shape[-2]
    mask = torch.zeros(image.shape[-2:], dtype=torch.bool)
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
                canvas = _recolour(canvas, region, settings, bank, pick)
        if max_band > 0 and chance(settings.elision_prob):
            band = int(torch.randint(1, max_band + 1, (), generator=generator))
            region = erode(region[None], band)[0]
        mask |= region
    return torch.where(mask[None], canvas, torch.full_like(canvas, -1.0)), mask


def best_overlap(bank, class_id: int, own: np.ndarray, generator: torch.Generator | None = None,
                 source: int | None = None, search_images: int = 100) -> tuple[int, np.ndarray] | None:
    """The bank segment of ``class_id`` from another image whose mask, where it was photographed, has the largest
    IoU with the (H, W) bool mask ``own`` → (bank index, its full-image mask), or None when nothing overlaps.

    Official train_generate_synthesis.m: 100 random training images (``randperm``, the image itself skipped),
    every same-class segment of each, plain mask IoU, the best kept.  ``search_images`` = 0 searches all images.
    """
    candidates = np.asarray(bank.indices_of_class(class_id))
    if len(candidates) == 0:
        return None
    sources = np.asarray(bank.segments["source"])[candidates]
    keep = np.ones(len(candidates), dtype=bool) if source is None else sources != source
    if search_images and bank.num_images > search_images:
        images = torch.randperm(bank.num_images, generator=generator)[:search_images].numpy()
        keep &= np.isin(sources, images)
    candidates = candidates[keep]
    rows, columns = np.nonzero(own)
    top, left, bottom, right = rows.min(), columns.min(), rows.max() + 1, columns.max() + 1
    boxes = np.asarray(bank.segments["box"])[candidates]
    touching = (boxes[:, 0] < bottom) & (boxes[:, 2] > top) & (boxes[:, 1] < right) & (boxes[:, 3] > left)
    areas = np.asarray(bank.segments["area"])[candidates]
    own_area = int(own.sum())
    best, best_iou = None, 0.0
    for index, area in zip(candidates[touching], areas[touching]):
        _, mask = bank.crop(int(index))
        t, l, b, r = bank.box(int(index))
        intersection = int(np.count_nonzero(own[t:b, l:r] & mask))
        iou = intersection / (own_area + int(area) - intersection)
        if iou > best_iou:
            best, best_iou = int(index), iou
    if best is None:
        return None
    full = np.zeros_like(own)
    t, l, b, r = bank.box(best)
    full[t:b, l:r] = bank.crop(best)[1]
    return best, full


def boundary_band(mask: torch.Tensor, side: int) -> torch.Tensor:
    """The pixels within a side×side square (odd-sized, centred) of the boundary of an (H, W) bool mask.

    Boundary = pixels whose 3×3 neighbourhood holds both values — both sides of the edge, like MATLAB's
    ``edge(·, 'Sobel', 0)`` on a binary mask; then ``imdilate`` with ``strel('square', side)``.
    """
    planes = mask.float()[None, None]
    grown = F.max_pool2d(planes, 3, stride=1, padding=1)
    shrunk = -F.max_pool2d(-planes, 3, stride=1, padding=1)
    edge = (grown - shrunk)  # 1 where the neighbourhood is mixed
    radius = max(side, 1) // 2
    if radius:
        edge = F.max_pool2d(edge, 2 * radius + 1, stride=1, padding=radius)
    return edge[0, 0] > 0.5


def jitter_mask(mask: torch.Tensor, max_degrees: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """An (H, W) bool mask rotated about the image centre by U(−max, max) degrees and shifted by the random crop
    the official code takes from the enlarged rotated image (``imrotate`` 'loose' + a random H×W window): up to
    half the growth of the bounding box either way.  Nearest-neighbour, zero outside."""
    height, width = mask.shape
    angle = math.radians((float(torch.rand((), generator=generator)) * 2 - 1) * max_degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    grow_y = height * abs(cos) + width * abs(sin) - height
    grow_x = width * abs(cos) + height * abs(sin) - width
    shift_y = (float(torch.rand((), generator=generator)) - 0.5) * grow_y
    shift_x = (float(torch.rand((), generator=generator)) - 0.5) * grow_x
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    u, v = xs - width / 2 + shift_x, ys - height / 2 + shift_y
    x_in = (cos * u + sin * v + width / 2).floor().long()
    y_in = (-sin * u + cos * v + height / 2).floor().long()
    inside = (x_in >= 0) & (x_in < width) & (y_in >= 0) & (y_in < height)
    result = torch.zeros_like(mask)
    result[inside] = mask[y_in[inside], x_in[inside]]
    return result


def _simulate_official(image, decomposition, settings, chance, generator, bank, source, ranks, layout, void_id):
    """train_generate_synthesis.m, one variant (the official code stores 5 per image; here one per step)."""
    height, width = image.shape[-2:]
    canvas = torch.full_like(image, -1.0)
    mask = torch.zeros(height, width, dtype=torch.bool)
    component_map = decomposition.component_map
    original = torch.as_tensor(np.asarray(decomposition.label)).long()
    white = torch.ones(3, 1, 1, dtype=image.dtype)
    side = int(math.floor(settings.noise_band * height))
    order = sorted(decomposition.segments,
                   key=lambda seg: (int(ranks[seg.class_id]) if ranks is not None else 0, seg.index))
    for segment in order:
        own_np = component_map == segment.index
        own = torch.from_numpy(own_np)
        if segment.area <= settings.min_area * height * width:
            continue  # official: small segments are neither pasted nor perturbed
        found = best_overlap(bank, segment.class_id, own_np, generator, source, settings.search_images)
        retrieved = torch.from_numpy(found[1]) if found is not None else torch.zeros_like(own)
        stencil = own & retrieved
        if stencil.any():
            layer = image
            if chance(settings.colour_transfer_prob):
                layer = _recolour(image, own, settings, bank, found[0], stencil)
            covered = stencil.clone()
            if side > 0 and settings.noise_fraction > 0:  # white noise on the boundary band
                band = boundary_band(stencil, side)
                noise = band & (torch.rand(height, width, generator=generator) < settings.noise_fraction)
                layer = torch.where(noise[None], white, layer)
                covered |= noise
            canvas = torch.where(covered[None], layer, canvas)
            mask |= covered
        if settings.label_noise:  # official "label map add noise": own pixels restored, spill-over made void
            layout[own] = original[own]
            spill = ~own & jitter_mask(own, settings.jitter_rotation, generator)
            if found is not None:
                spill |= ~own & retrieved
            layout[spill] = void_id
    return canvas, mask, layout


__all__ = [
    "COLOUR_TRANSFERS", "Canvas", "OFFICIAL_MIN_AREA", "PROCEDURES", "SimulationSettings", "best_overlap",
    "boundary_band", "compose", "crop_tensor", "erode", "jitter_mask", "map_box", "paint_order", "placement_matrix",
    "rect_matrix", "sample_crop", "sampling_theta", "simulate_canvas", "square_window", "union_box", "unpremultiply",
]
