"""Semantic segments of a layout: connected components, boxes, contexts and the fixed-grid bit masks of retrieval.

SIMS §3.1 (Qi et al. 2018): a layout L is decomposed into connected components {L_j}, one class each; a memory-bank
segment P_i carries a colour image, a binary mask P_i^mask and a semantic context P_i^cont — the label map inside
the segment's bounding box enlarged by 25 %.  Retrieval compares masks and contexts by IoU.

Everything a layout needs for that lives here, for bank segments and query segments alike, so the two sides are
computed by the very same code:

* :func:`decompose` — per-class connected components (``scipy.ndimage.label``; 8-connectivity like MATLAB's
  ``bwlabel`` in the official ``*_connect_component_mask.m``), a minimum area, and the official Cityscapes option of
  letting *thin* classes (poles, signs) bridge a class so that a building cut by a pole stays one segment.
* :func:`segment_grids` — each segment's mask and context resampled to a fixed G×G grid, in two geometries:
  ``box`` (normalised to the square around the segment's box, and that square enlarged by 25 % for the context:
  compares shape — aspect ratio included — and surroundings independently of position and size) and ``image``
  (the whole image: compares shape *and* location — the paper's h×w masks and the official
  ``search_segments.m``).  Cells are decided by majority over s×s sub-samples, then packed into bits so
  IoUs become AND + popcount (:mod:`inverseg.sims.retrieval`).
* :func:`adjacent_pairs` and :func:`heuristic_front` — which segments touch, and the documented layout heuristic
  for which one is in front when no depth is available (SIMS §3.3 trains on depth; see docs/methods/sims.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

VOID = 255  # label value used for void / outside the image in stored uint8 layouts and contexts


@dataclass(frozen=True)
class Segment:
    """One connected component: its class, its index in the component map, and its pixel box.

    ``box`` = (top, left, bottom, right), bottom/right exclusive; ``bottom`` is also the "lower boundary" used by
    the ordering heuristic (lower in the image = closer to a street-level camera).
    """

    index: int
    class_id: int
    box: tuple[int, int, int, int]
    area: int

    @property
    def height(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def width(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class Decomposition:
    """A layout split into segments: ``component_map[y, x]`` = segment index, or -1 (void, thin or too small)."""

    label: np.ndarray
    component_map: np.ndarray
    segments: list[Segment] = field(default_factory=list)

    def mask(self, index: int) -> np.ndarray:
        """Full-image boolean mask of segment ``index``."""
        return self.component_map == index

    def crop_mask(self, index: int) -> np.ndarray:
        """The mask inside the segment's box (what the bank stores)."""
        top, left, bottom, right = self.segments[index].box
        return self.component_map[top:bottom, left:right] == index


def decompose(
    label: np.ndarray,
    num_classes: int,
    min_area: int = 1,
    connectivity: int = 8,
    thin_classes: tuple[int, ...] = (),
) -> Decomposition:
    """Per-class connected components of an (H, W) id map (values ≥ num_classes are void).

    ``thin_classes`` (official Cityscapes: pole, traffic light, traffic sign) bridge every *other* class: the
    components of class c are found on (L == c) ∪ (L ∈ thin), then restricted to the class-c pixels, so a building
    cut in two by a pole is one segment whose mask excludes the pole.  Thin classes still form their own segments.
    Components smaller than ``min_area`` pixels are dropped (their pixels get -1).
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"decompose expects an (H, W) label map, got shape {label.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    thin = np.isin(label, thin_classes) if thin_classes else None
    component_map = np.full(label.shape, -1, dtype=np.int32)
    segments: list[Segment] = []
    for class_id in np.unique(label):
        class_id = int(class_id)
        if class_id < 0 or class_id >= num_classes:
            continue
        region = label == class_id
        if thin is not None and class_id not in thin_classes:
            components, count = ndimage.label(region | thin, structure=structure)
            components[~region] = 0  # thin pixels only bridge; the segment's footprint is its own class
        else:
            components, count = ndimage.label(region, structure=structure)
        if count == 0:
            continue
        areas = np.bincount(components.ravel(), minlength=count + 1)
        for number, slices in enumerate(ndimage.find_objects(components), start=1):
            if slices is None or areas[number] < max(1, min_area):
                continue
            # the bounding box of the class pixels (find_objects already ignores the removed thin pixels)
            box = (slices[0].start, slices[1].start, slices[0].stop, slices[1].stop)
            index = len(segments)
            window = components[box[0]:box[2], box[1]:box[3]] == number
            component_map[box[0]:box[2], box[1]:box[3]][window] = index
            segments.append(Segment(index=index, class_id=class_id, box=box, area=int(areas[number])))
    return Decomposition(label=label, component_map=component_map, segments=segments)


def min_area_pixels(fraction: float, image_size: tuple[int, int]) -> int:
    """A minimum area given as a fraction of the image → pixels (at least 1)."""
    return max(1, int(math.ceil(fraction * image_size[0] * image_size[1])))


# ---------------------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------------------
def enlarge_box(box: tuple[float, float, float, float], factor: float = 1.25) -> tuple[float, float, float, float]:
    """The box scaled by ``factor`` about its centre (paper: "bounding box enlarged by 25 %"), not clipped."""
    top, left, bottom, right = box
    grow_y = (bottom - top) * (factor - 1) / 2
    grow_x = (right - left) * (factor - 1) / 2
    return (top - grow_y, left - grow_x, bottom + grow_y, right + grow_x)


def square_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The square with the box's centre and its longer side: the frame of box-geometry grids.

    Normalising a mask to its own box would make every rectangle look alike (all fill their box); the square keeps
    the aspect ratio while removing position and scale.
    """
    top, left, bottom, right = box
    side = max(bottom - top, right - left)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    return (cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2)


def clip_box(box: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Round a float box outwards to pixels and clip it to the image (the stored full-resolution context crop)."""
    top, left, bottom, right = box
    return (max(0, int(math.floor(top))), max(0, int(math.floor(left))),
            min(shape[0], int(math.ceil(bottom))), min(shape[1], int(math.ceil(right))))


# ---------------------------------------------------------------------------------------------------------
# Fixed-grid masks and contexts
# ---------------------------------------------------------------------------------------------------------
def sample_points(box: tuple[float, float, float, float], grid: int, supersample: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows / columns of the (grid·s)² sub-cell centres covering a float box (may lie outside the image)."""
    top, left, bottom, right = box
    steps = (np.arange(grid * supersample) + 0.5) / (grid * supersample)
    rows = np.floor(top + steps * (bottom - top)).astype(np.int64)
    cols = np.floor(left + steps * (right - left)).astype(np.int64)
    return rows, cols


def sample_region(array: np.ndarray, box, grid: int, supersample: int, fill: int) -> np.ndarray:
    """Nearest samples of ``array`` at the sub-cell centres of ``box``; points outside the array get ``fill``."""
    rows, cols = sample_points(box, grid, supersample)
    inside_r = (rows >= 0) & (rows < array.shape[0])
    inside_c = (cols >= 0) & (cols < array.shape[1])
    values = array[np.clip(rows, 0, array.shape[0] - 1)][:, np.clip(cols, 0, array.shape[1] - 1)]
    return np.where(inside_r[:, None] & inside_c[None, :], values, fill)


def majority_mask(samples: np.ndarray, grid: int, supersample: int) -> np.ndarray:
    """(G·s, G·s) booleans → (G, G) cell is on when at least half of its sub-samples are."""
    cells = samples.reshape(grid, supersample, grid, supersample).mean(axis=(1, 3))
    return cells >= 0.5


def majority_labels(samples: np.ndarray, num_classes: int, grid: int, supersample: int) -> np.ndarray:
    """(G·s, G·s) ids (≥ num_classes = void) → (G, G) majority id per cell (void = num_classes)."""
    ids = np.where((samples >= 0) & (samples < num_classes), samples, num_classes)
    blocks = ids.reshape(grid, supersample, grid, supersample).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    cell = np.arange(grid * grid)[:, None] * (num_classes + 1)
    counts = np.bincount((cell + blocks).ravel(), minlength=grid * grid * (num_classes + 1))
    return counts.reshape(grid * grid, num_classes + 1).argmax(1).reshape(grid, grid)  # ties → lower id


def pack_bits(cells: np.ndarray) -> np.ndarray:
    """(..., G, G) booleans → (..., G·G/64) uint64 words (little-endian bit order, so counts are exact)."""
    flat = np.ascontiguousarray(cells.reshape(*cells.shape[:-2], -1), dtype=bool)
    if flat.shape[-1] % 64:
        raise ValueError(f"grid cells ({flat.shape[-1]}) must be a multiple of 64: use a grid divisible by 8")
    return np.packbits(flat, axis=-1, bitorder="little").view(np.uint64)


def unpack_bits(words: np.ndarray, grid: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`."""
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")
    return bits.reshape(*words.shape[:-1], grid, grid).astype(bool)


@dataclass
class SegmentGrids:
    """Fixed-size bit representations of a set of segments, as the retrieval stores and compares them.

    ``mask`` (N, W) and ``context`` (N, C, W) are in box geometry (mask: the square around the segment's box;
    context: that square enlarged by ``context_enlarge``); ``image_mask`` / ``image_context`` are the same in
    image geometry (the whole image; context cells outside the enlarged box are void).  W = G·G/64 words.  ``counts`` (N, 4) holds
    the number of set cells of each (contexts: non-void cells).
    """

    mask: np.ndarray
    context: np.ndarray
    image_mask: np.ndarray
    image_context: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, num_classes: int, grid: int) -> "SegmentGrids":
        words = grid * grid // 64
        return cls(np.zeros((0, words), np.uint64), np.zeros((0, num_classes, words), np.uint64),
                   np.zeros((0, words), np.uint64), np.zeros((0, num_classes, words), np.uint64),
                   np.zeros((0, 4), np.int32))

    def __len__(self) -> int:
        return len(self.mask)


def class_planes(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """(..., G, G) ids → (..., C, G, G) one-hot booleans (void cells are all-off)."""
    return ids[..., None, :, :] == np.arange(num_classes)[:, None, None]


def segment_grids(decomposition: Decomposition, num_classes: int, grid: int = 32, context_enlarge: float = 1.25,
                  supersample: int = 4) -> SegmentGrids:
    """The retrieval representation of every segment of a decomposition (bank and query alike)."""
    segments = decomposition.segments
    if not segments:
        return SegmentGrids.empty(num_classes, grid)
    label, component_map = decomposition.label, decomposition.component_map
    height, width = label.shape
    void = num_classes
    label_ids = np.where((label >= 0) & (label < num_classes), label, void)
    whole = (0.0, 0.0, float(height), float(width))
    image_components = sample_region(component_map, whole, grid, supersample, -1)
    image_labels = sample_region(label_ids, whole, grid, supersample, void)
    rows, cols = sample_points(whole, grid, supersample)
    masks, contexts, image_masks, image_contexts = [], [], [], []
    for segment in segments:
        box = tuple(float(v) for v in segment.box)
        square = square_box(box)
        masks.append(majority_mask(sample_region(component_map, square, grid, supersample, -1) == segment.index,
                                   grid, supersample))
        contexts.append(majority_labels(sample_region(label_ids, enlarge_box(square, context_enlarge), grid,
                                                      supersample, void), num_classes, grid, supersample))
        image_masks.append(majority_mask(image_components == segment.index, grid, supersample))
        wide = enlarge_box(box, context_enlarge)  # image geometry: the paper's enlarged bounding box
        inside = ((rows + 0.5 > wide[0]) & (rows + 0.5 < wide[2]))[:, None] & \
                 ((cols + 0.5 > wide[1]) & (cols + 0.5 < wide[3]))[None, :]
        image_contexts.append(majority_labels(np.where(inside, image_labels, void), num_classes, grid, supersample))
    masks, contexts = np.stack(masks), np.stack(contexts)
    image_masks, image_contexts = np.stack(image_masks), np.stack(image_contexts)
    counts = np.stack([masks.sum((1, 2)), (contexts < void).sum((1, 2)), image_masks.sum((1, 2)),
                       (image_contexts < void).sum((1, 2))], axis=1).astype(np.int32)
    return SegmentGrids(
        mask=pack_bits(masks),
        context=pack_bits(class_planes(contexts, num_classes)),
        image_mask=pack_bits(image_masks),
        image_context=pack_bits(class_planes(image_contexts, num_classes)),
        counts=counts,
    )


# ---------------------------------------------------------------------------------------------------------
# Adjacency and the ordering heuristic
# ---------------------------------------------------------------------------------------------------------
def adjacent_pairs(component_map: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (a < b) of segments that touch (4-neighbourhood), sorted."""
    pairs = set()
    for first, second in ((component_map[:, 1:], component_map[:, :-1]), (component_map[1:, :], component_map[:-1, :])):
        touching = (first != second) & (first >= 0) & (second >= 0)
        a, b = first[touching], second[touching]
        for low, high in zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()):
            pairs.add((low, high))
    return sorted(pairs)


# Depth layers of class names for the ordering heuristic (larger = nearer the camera).  Sky is always behind;
# "stuff" surfaces are behind the objects standing on or in front of them (the official "planar vs object" rule
# of train_generate_order.m); thin street furniture sits between the two.
DEFAULT_CLASS_RANKS: dict[str, int] = {
    "sky": 0,
    "building": 1, "wall": 1, "vegetation": 1, "tree": 1, "terrain": 1, "road": 1, "sidewalk": 1,
    "pavement": 1, "background": 1, "facade": 1,
    "fence": 2, "pole": 2, "sign": 2, "traffic light": 2, "traffic sign": 2,
    "car": 3, "truck": 3, "bus": 3, "train": 3, "motorcycle": 3, "bicycle": 3, "person": 3, "rider": 3,
    "pedestrian": 3, "bicyclist": 3,
}
DEFAULT_RANK = 1


def class_ranks(class_names: tuple[str, ...], overrides: dict[str, int] | None = None) -> np.ndarray:
    """Per-class depth layer (see :data:`DEFAULT_CLASS_RANKS`); names not listed get :data:`DEFAULT_RANK`."""
    table = {**DEFAULT_CLASS_RANKS, **{k.lower(): int(v) for k, v in (overrides or {}).items()}}
    return np.array([table.get(name.lower(), DEFAULT_RANK) for name in class_names], dtype=np.int64)


def heuristic_front(a: Segment, b: Segment, ranks: np.ndarray) -> int:
    """0 if segment ``a`` is in front of ``b``, else 1 — the layout heuristic used when there is no depth.

    1. class layer (``ranks``): the nearer layer is in front (objects before walls and roads, anything before sky);
    2. same layer: the segment whose lower boundary is lower in the image is nearer (a street-level camera looks
       at a ground plane: farther things end higher up);
    3. still tied: the larger segment.
    """
    rank_a, rank_b = int(ranks[a.class_id]), int(ranks[b.class_id])
    if rank_a != rank_b:
        return 0 if rank_a > rank_b else 1
    if a.box[2] != b.box[2]:
        return 0 if a.box[2] > b.box[2] else 1
    return 0 if a.area >= b.area else 1


def depth_front(component_map: np.ndarray, a: int, b: int, depth: np.ndarray, band: int = 2,
                disparity: bool = False) -> int | None:
    """0/1 as :func:`heuristic_front` from a depth (or disparity) map: the median over the shared boundary band.

    Official ``train_generate_order.m`` compares the median disparity of the two segments inside their dilated
    shared boundary.  Returns None when either side has no finite value there (the caller falls back).
    """
    structure = np.ones((3, 3), bool)
    mask_a, mask_b = component_map == a, component_map == b
    near_b = ndimage.binary_dilation(mask_b, structure, iterations=band)
    near_a = ndimage.binary_dilation(mask_a, structure, iterations=band)
    values_a = depth[mask_a & near_b]
    values_b = depth[mask_b & near_a]
    values_a, values_b = values_a[np.isfinite(values_a)], values_b[np.isfinite(values_b)]
    if values_a.size == 0 or values_b.size == 0:
        return None
    median_a, median_b = float(np.median(values_a)), float(np.median(values_b))
    if median_a == median_b:
        return None
    a_nearer = median_a > median_b if disparity else median_a < median_b
    return 0 if a_nearer else 1


__all__ = [
    "DEFAULT_CLASS_RANKS", "Decomposition", "Segment", "SegmentGrids", "VOID", "adjacent_pairs", "class_planes",
    "class_ranks", "clip_box", "decompose", "depth_front", "enlarge_box", "heuristic_front", "majority_labels",
    "majority_mask", "min_area_pixels", "pack_bits", "sample_points", "sample_region", "segment_grids",
    "square_box", "unpack_bits",
]
