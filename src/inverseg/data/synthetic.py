"""Procedural street scenes: the default data, so that every command works without a download.

A scene is a street seen from a car: a road with lane markings running to a vanishing point, pavements, façades
(window grids, shops, doors) or hedges, poles with lamps and signs, fences, trees, cars, pedestrians, bicyclists
and a sky with clouds.  All random choices come from ``numpy.random.default_rng(seed)`` and are made in metres and
in normalised screen units before any pixel exists, so one seed depicts the same layout at every resolution; only
the sensor grain is drawn per pixel (from its own stream, so it cannot shift the layout).

Labels use CamVid's 11 classes (``inverseg.labels.schemes.CAMVID``; no void pixels) and instance maps follow
pix2pixHD: things (pole, sign, car, pedestrian, bicyclist) get ``class*1000 + k``, stuff gets its class id.

The point is learnability rather than photorealism: each class has texture (value-noise fBm), every scene has its
own lighting (sun direction, strength and colour temperature, cast shadows, haze) and its own class colours, so a
generator cannot succeed by painting flat class colours.  Rendering is vectorised numpy with a depth buffer:
façades and the ground are evaluated per column / per row, objects only inside their bounding boxes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from ..labels.schemes import CAMVID
from .base import make_sample
from .transforms import JointTransform

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
THING_CLASSES = (POLE, SIGN, CAR, PEDESTRIAN, BICYCLIST)
ASPECT = 4.0 / 3.0  # screen x spans [-ASPECT/2, ASPECT/2] in image heights, whatever the pixel grid

# Split seeds: scene seed = seed * 10**6 + offset + index, so splits (and dataset seeds) never share a layout.
SPLIT_OFFSETS = {"train": 0, "val": 500_000, "test": 900_000}
SPLIT_CAPACITY = {"train": 500_000, "val": 400_000, "test": 100_000}
DEFAULT_LENGTHS = {"train": 2000, "val": 50, "test": 50}

WALL_COLORS = np.array([
    (0.62, 0.33, 0.25), (0.78, 0.70, 0.55), (0.86, 0.84, 0.78), (0.58, 0.58, 0.56), (0.80, 0.62, 0.36),
    (0.60, 0.67, 0.72), (0.78, 0.58, 0.55), (0.45, 0.35, 0.29), (0.70, 0.72, 0.62), (0.38, 0.39, 0.41),
], np.float32)
CAR_PAINTS = np.array([
    (0.85, 0.85, 0.85), (0.07, 0.07, 0.08), (0.55, 0.56, 0.58), (0.30, 0.31, 0.33), (0.62, 0.08, 0.07),
    (0.10, 0.20, 0.48), (0.12, 0.28, 0.18), (0.82, 0.66, 0.12), (0.62, 0.56, 0.46), (0.36, 0.11, 0.12),
], np.float32)
CAR_PAINT_P = (0.2, 0.15, 0.18, 0.12, 0.08, 0.09, 0.04, 0.03, 0.06, 0.05)
CLOTHES = np.array([
    (0.12, 0.12, 0.14), (0.20, 0.26, 0.42), (0.55, 0.12, 0.10), (0.80, 0.78, 0.72), (0.30, 0.36, 0.25),
    (0.70, 0.58, 0.40), (0.45, 0.45, 0.48), (0.15, 0.35, 0.55), (0.85, 0.65, 0.20), (0.50, 0.25, 0.45),
], np.float32)
SKIN = np.array([(0.88, 0.70, 0.58), (0.76, 0.56, 0.42), (0.56, 0.38, 0.27), (0.36, 0.25, 0.18)], np.float32)
HAIR = np.array([(0.08, 0.06, 0.05), (0.30, 0.20, 0.12), (0.60, 0.48, 0.30), (0.55, 0.55, 0.55)], np.float32)
FENCE_COLORS = np.array([(0.40, 0.28, 0.18), (0.20, 0.26, 0.22), (0.5, 0.5, 0.5)], np.float32)
FOLIAGE = np.array([(0.20, 0.34, 0.09), (0.28, 0.40, 0.12), (0.16, 0.29, 0.14), (0.33, 0.38, 0.10),
                    (0.46, 0.38, 0.12)], np.float32)


_WHEEL_ANGLES = np.arange(8) * math.pi / 4 + math.pi / 8
_WHEEL_SIN, _WHEEL_COS = np.sin(_WHEEL_ANGLES), np.cos(_WHEEL_ANGLES)
_BOX = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
_WHEEL = [(1, 0, 0), (-1, 0, 0)] + [(0.0, sn, cs) for sn, cs in zip(_WHEEL_SIN, _WHEEL_COS)]
# car plane table: body box, cabin box (each car inserts its two window slopes at rows 12:14), two axles
_CAR_PLANES = np.array(_BOX + _BOX + _WHEEL + _WHEEL, np.float32)
_CAR_STARTS = np.array([0, 6, 14, 24])
_CAR_PART_OF = np.repeat(np.arange(4), [6, 8, 10, 10])
_WHITE_PAINT = np.float32([0.9, 0.9, 0.88])
_YELLOW_PAINT = np.float32([0.85, 0.70, 0.2])


# ----------------------------------------------------------------------------------------------- pixel grids
@lru_cache(maxsize=16)
def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Screen coordinates of pixel centres: x in image heights around the centre, y in [0, 1] from the top."""
    xs = (((np.arange(width) + 0.5) / width - 0.5) * ASPECT).astype(np.float32)
    ys = ((np.arange(height) + 0.5) / height).astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


@lru_cache(maxsize=128)
def _lerp_index(n: int, cells: int, nodes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Left lattice index and smoothstep weight for n samples of a lattice with ``cells`` cells on [0, 1].

    Samples sit at pixel centres, or (``nodes``) at the nodes of a finer lattice spanning the same interval.
    """
    p = (np.arange(n) / (n - 1) if nodes else (np.arange(n) + 0.5) / n) * cells
    i = np.minimum(p.astype(np.int64), cells - 1)
    t = p - i
    i.flags.writeable = False
    return i, (t * t * (3 - 2 * t)).astype(np.float32)


def _resample(lattice: np.ndarray, height: int, width: int, nodes: bool) -> np.ndarray:
    iy, sy = _lerp_index(height, lattice.shape[0] - 1, nodes)
    ix, sx = _lerp_index(width, lattice.shape[1] - 1, nodes)
    top = lattice[iy]
    rows = top + (lattice[iy + 1] - top) * sy[:, None]
    left = rows[:, ix]
    return left + (rows[:, ix + 1] - left) * sx


@lru_cache(maxsize=16)
def _vignette(height: int, width: int) -> np.ndarray:
    xs, ys = _pixel_centres(height, width)
    r2 = (xs[None, :] / (ASPECT / 2)) ** 2 * 0.5 + ((ys[:, None] - 0.5) * 2) ** 2 * 0.5
    out = (1.0 - 0.12 * r2).astype(np.float32)[..., None]
    out.flags.writeable = False
    return out


def _lattices(rng: np.random.Generator, cells_y: int, cells_x: int, octaves: int, gain: float = 0.5) -> list:
    """Random lattices of an fBm: octave o has 2**o times the cells and gain**o of the amplitude."""
    total = sum(gain ** o for o in range(octaves))
    return [rng.uniform(-1, 1, (cells_y * 2 ** o + 1, cells_x * 2 ** o + 1)).astype(np.float32) * (gain ** o / total)
            for o in range(octaves)]


def _fbm(lattices: list, height: int, width: int) -> np.ndarray:
    """Value-noise fBm: the octaves are summed on the finest lattice, then resampled to the pixels once.

    Plain gathers and lerps, not matrix products: numpy's BLAS would start threads for them, which stalls badly
    next to torch's threads or a busy machine.
    """
    finest = lattices[-1]
    total = finest.copy()
    for lattice in lattices[:-1]:
        total += _resample(lattice, finest.shape[0], finest.shape[1], nodes=True)
    return _resample(total, height, width, nodes=False)


def _clamp(x, lo: float = 0.0, hi: float = 1.0):
    """np.clip without its Python-level overhead (it is called on many tiny arrays)."""
    return np.minimum(np.maximum(x, lo), hi)


def _band(d: np.ndarray, half: float, foot) -> np.ndarray:
    """Fraction of a pixel (footprint ``foot``, centred at distance ``d`` ≥ 0 from a band's axis) the band covers.

    Box-filtering thin lines by their pixel footprint keeps far lane markings and window grids from aliasing
    into random speckle, so the same layout looks the same at every resolution.
    """
    return _clamp((np.minimum(d + foot / 2, half) - np.maximum(d - foot / 2, -half)) / foot, 0.0, 1.0)


def _periodic(u: np.ndarray, period) -> np.ndarray:
    """Distance from u to the nearest multiple of ``period``."""
    return np.abs((u / period + 0.5) % 1.0 - 0.5) * period


def _stripes(u: np.ndarray, period, half, foot, d: np.ndarray | None = None) -> np.ndarray:
    """Coverage of bands of half-width ``half`` centred at multiples of ``period``; fades to the mean when tiny.

    ``d`` may pass a precomputed ``_periodic(u, period)`` when several band widths share one grid.
    """
    d = _periodic(u, period) if d is None else d
    cover = _band(d, half, foot)
    fade = _clamp(2 * foot / period - 1)
    return cover + (2 * half / period - cover) * fade


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = _clamp((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _capsule(a: np.ndarray, b: np.ndarray, p0: tuple, p1: tuple, radius: float) -> np.ndarray:
    """Pixels (local metres a right, b up) within ``radius`` of the segment p0–p1: limbs, frames, pole arms."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    wx, wy = a - p0[0], b - p0[1]
    t = _clamp((wx * vx + wy * vy) / (vx * vx + vy * vy + 1e-9), 0.0, 1.0)
    dx, dy = wx - t * vx, wy - t * vy
    return dx * dx + dy * dy < radius * radius


def _pick(rng: np.random.Generator, options, weights=None):
    """``rng.choice`` without its overhead (it dominated layout time): one uniform draw against the weights."""
    if weights is None:
        return options[int(rng.random() * len(options))]
    r = rng.random() * sum(weights)
    for option, weight in zip(options, weights):
        r -= weight
        if r < 0:
            return option
    return options[-1]


def _jitter(rng: np.random.Generator, colours, amount: float = 0.12) -> np.ndarray:
    """Colours ((3,) or (n,3)) with brightness and each channel varied: a class never has one fixed colour."""
    colours = np.asarray(colours, np.float32)
    flat = colours.reshape(-1, 3)
    r = rng.random((len(flat), 4), dtype=np.float32)
    out = flat * (1 - amount + 2 * amount * r[:, :1]) * (1 - amount / 2 + amount * r[:, 1:])
    return np.minimum(out, 1.0).reshape(colours.shape)


# ----------------------------------------------------------------------------------------------- layout
class _Side:
    """One side of the street: a façade plane at ``x`` split into segments along the depth axis.

    Segment kinds: 0 building, 1 hedge/trees (optionally fenced), 2 gap (a side street).
    """

    def __init__(self, rng: np.random.Generator, x: float, z_end: float, index_base: int) -> None:
        self.x = x
        self.index_base = index_base
        bounds, kinds = [-30.0], []
        while bounds[-1] < z_end:
            kind = _pick(rng, (0, 1, 2), (0.72, 0.2, 0.08))
            if kinds and kinds[-1] == 2:
                kind = 0
            width = rng.uniform(8, 14) if kind == 2 else rng.uniform(6, 24)
            bounds.append(min(bounds[-1] + width, z_end))
            kinds.append(kind)
        n = len(kinds)
        self.bounds = np.array(bounds, np.float32)
        self.kinds = np.array(kinds)
        tall = rng.random(n) < 0.25
        self.heights = np.where(tall, rng.uniform(18, 40, n), rng.uniform(6, 18, n)).astype(np.float32)
        self.walls = _jitter(rng, WALL_COLORS[rng.integers(len(WALL_COLORS), size=n)], 0.15)
        self.window_period = rng.uniform(2.2, 3.8, n).astype(np.float32)
        self.floor_height = rng.uniform(2.9, 3.6, n).astype(np.float32)
        self.window_half_w = (self.window_period * rng.uniform(0.18, 0.34, n)).astype(np.float32)
        self.window_half_h = (self.floor_height * rng.uniform(0.22, 0.32, n)).astype(np.float32)
        self.shop = rng.random(n) < 0.45
        self.door_u = rng.uniform(1.5, 5.0, n).astype(np.float32)
        self.stain = rng.uniform(0.1, 0.4, n).astype(np.float32)
        self.frame_light = rng.random(n) < 0.6
        self.glass = _jitter(rng, np.tile(np.float32([0.10, 0.12, 0.15]), (n, 1)), 0.3)
        self.veg_base = rng.uniform(2.5, 9.0, n).astype(np.float32)
        self.veg_amp = rng.uniform(0.5, 3.0, n).astype(np.float32)
        self.fenced = rng.random(n) < 0.55
        self.fence_height = rng.uniform(1.0, 2.0, n).astype(np.float32)
        self.fence_color = _jitter(rng, FENCE_COLORS[rng.integers(len(FENCE_COLORS), size=n)], 0.2)
        self.knots = np.arange(-30.0, z_end + 4.0, 1.7, dtype=np.float32)
        self.knot_values = rng.uniform(-1, 1, len(self.knots)).astype(np.float32)
        # what casts shadows: buildings by their height, hedges by their base height, gaps not at all
        caster = np.where(self.kinds == 0, self.heights, np.where(self.kinds == 1, self.veg_base, 0.0))
        self.shadow_heights = np.append(caster, 0.0).astype(np.float32)  # index -1 and n (outside) → 0

    def segment(self, z: np.ndarray) -> np.ndarray:
        return _clamp(np.searchsorted(self.bounds, z, side="right") - 1, 0, len(self.kinds) - 1)

    def shadow_height(self, z: np.ndarray) -> np.ndarray:
        index = np.searchsorted(self.bounds, z, side="right") - 1
        return self.shadow_heights[np.where(index >= len(self.kinds), -1, index)]

    def vegetation_top(self, z: np.ndarray, seg: np.ndarray) -> np.ndarray:
        return self.veg_base[seg] + self.veg_amp[seg] * np.interp(z, self.knots, self.knot_values)


class _Scene:
    """Every random choice of one scene, in metres and screen units (independent of the pixel grid)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.table = rng.random(256).astype(np.float32)  # per-window variation, looked up by hashed indices
        # camera: focal length in image heights, height in metres, horizon row and vanishing column on screen
        self.f = rng.uniform(0.8, 1.0)
        self.cam_h = rng.uniform(1.25, 1.7)
        self.horizon = rng.uniform(0.36, 0.5)
        self.vx = rng.uniform(-0.12, 0.12)
        self._light(rng)
        self._road(rng)
        self.z_end = rng.uniform(45, 160) if rng.random() < 0.35 else 400.0  # a building closing the street
        self.left = _Side(rng, self.x_road_left - self.pave_left, self.z_end, 0)
        self.right = _Side(rng, self.x_road_right + self.pave_right, self.z_end, 1000)
        self.end_wall = _Side(rng, 0.0, 100.0, 2000) if self.z_end < 400 else None
        if self.end_wall is not None:
            self.end_height = rng.uniform(8, 30)
        self.foliage = _jitter(rng, FOLIAGE[_pick(rng, range(5), (0.3, 0.3, 0.2, 0.12, 0.08))], 0.15)
        self.trunk = _jitter(rng, (0.30, 0.24, 0.18), 0.2)
        self.noise_coarse = _lattices(rng, 3, 4, 4)
        self.noise_fine = _lattices(rng, 12, 16, 3, gain=0.6)
        self.noise_cloud = _lattices(rng, 2, 3, 5, gain=0.55)
        self._objects(rng)

    # ---------------------------------------------------------------------------------------- parts
    def _light(self, rng: np.random.Generator) -> None:
        self.overcast = rng.random() < 0.35
        elevation = math.radians(rng.uniform(18, 65))
        azimuth = rng.uniform(-math.pi, math.pi)
        self.sun = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                             math.cos(elevation) * math.cos(azimuth)], np.float32)
        self.sun_i = rng.uniform(0.08, 0.25) if self.overcast else rng.uniform(0.55, 1.0)
        self.ambient = rng.uniform(0.65, 0.85) if self.overcast else rng.uniform(0.35, 0.55)
        warmth = rng.uniform(-0.5, 1.0)
        self.sun_col = np.array([1 + 0.1 * warmth, 1.0, 1 - 0.15 * warmth], np.float32)
        self.amb_col = (np.array([0.9, 0.96, 1.1], np.float32) if not self.overcast
                        else np.array([0.97, 0.99, 1.03], np.float32)) * self.ambient
        self.exposure = rng.uniform(0.9, 1.15) / (self.ambient + 0.55 * self.sun_i)
        self.amb_e = (self.amb_col * self.exposure).astype(np.float32)  # exposed multipliers used by light()
        self.sun_e = (self.sun_col * self.sun_i * self.exposure).astype(np.float32)
        self.tint = rng.uniform(0.96, 1.04, 3).astype(np.float32)
        if self.overcast:
            top = rng.uniform(0.55, 0.78)
            self.zenith = np.array([top, top + 0.02, top + rng.uniform(0.03, 0.1)], np.float32)
            self.sky_horizon = _clamp(self.zenith + rng.uniform(0.1, 0.2), 0, 1).astype(np.float32)
            self.cloud_cover = rng.uniform(0.6, 1.0)
        else:
            self.zenith = np.array([rng.uniform(0.2, 0.4), rng.uniform(0.42, 0.6), rng.uniform(0.72, 0.95)],
                                   np.float32)
            self.sky_horizon = (0.45 * self.zenith + 0.55 * rng.uniform(0.82, 0.95)).astype(np.float32)
            self.cloud_cover = rng.uniform(0.0, 0.8)
        self.cloud_col = _jitter(rng, (0.95, 0.95, 0.96), 0.06)
        self.fog_dist = rng.uniform(60, 200) if self.overcast else rng.uniform(120, 400)

    def _road(self, rng: np.random.Generator) -> None:
        self.lanes = _pick(rng, (2, 3, 4), (0.45, 0.3, 0.25))
        self.lane_w = rng.uniform(2.9, 3.6)
        own = int(rng.integers(self.lanes))
        self.x_road_left = -(own + 0.5) * self.lane_w + rng.uniform(-0.4, 0.4)
        self.x_road_right = self.x_road_left + self.lanes * self.lane_w
        self.pave_left, self.pave_right = rng.uniform(1.8, 5.0, 2)
        self.two_way = rng.random() < 0.65
        self.divider = self.lanes // 2 if self.two_way else -1
        self.divider_yellow = rng.random() < 0.35
        self.edge_lines = rng.random() < 0.5
        self.dash_period, self.dash_len = rng.uniform(7, 12), rng.uniform(2.5, 4.5)
        self.crossing = rng.uniform(8, 35) if rng.random() < 0.25 else None
        grey = rng.uniform(0.26, 0.44)
        self.road_col = _jitter(rng, (grey, grey, grey * rng.uniform(0.97, 1.08)), 0.06)
        self.pave_col = _jitter(rng, ((0.62, 0.61, 0.58), (0.66, 0.58, 0.50), (0.55, 0.55, 0.57),
                                      (0.60, 0.45, 0.40))[rng.integers(4)], 0.12)
        self.curb_col = _jitter(rng, (0.72, 0.72, 0.70), 0.08)
        self.tile = rng.uniform(0.4, 1.0)

    def _objects(self, rng: np.random.Generator) -> None:
        """Cars, people, poles, signs, trees and railings, each as a small dict of metres and colours."""
        self.cars, self.people, self.poles, self.trees, self.railings = [], [], [], [], []
        xl, xr, lw = self.x_road_left, self.x_road_right, self.lane_w
        parked = {side: rng.random() < 0.45 and self.lanes >= 3 for side in (-1, 1)}
        occupied: dict[int, list[tuple[float, float]]] = {}  # lane → (centre depth, length) of its cars

        def place_car(lane: int, x: float, z: float, facing: int) -> None:
            kind = _pick(rng, range(4), (0.45, 0.25, 0.2, 0.1))  # sedan, hatchback, SUV, van
            length = (rng.uniform(4.3, 4.9), rng.uniform(3.7, 4.2), rng.uniform(4.4, 4.9), rng.uniform(4.8, 5.4))[kind]
            if any(abs(z - z0) < (length + l0) / 2 + 1.0 for z0, l0 in occupied.get(lane, [])):
                return
            occupied.setdefault(lane, []).append((z + length / 2, length))
            height = (rng.uniform(1.38, 1.5), rng.uniform(1.42, 1.52), rng.uniform(1.65, 1.8), rng.uniform(1.9, 2.1))
            self.cars.append(dict(
                x=x, z=z, length=length, width=rng.uniform(1.7, 1.95) if kind != 3 else rng.uniform(1.85, 2.0),
                body_top=rng.uniform(0.82, 0.95) if kind < 3 else rng.uniform(0.95, 1.05), top=height[kind],
                kind=kind, facing=facing, paint=_jitter(rng, CAR_PAINTS[_pick(rng, range(10), CAR_PAINT_P)], 0.08),
                bumper_dark=rng.random() < 0.5,
            ))

        for side in (-1, 1):
            if parked[side]:
                x = (xl + 1.05) if side < 0 else (xr - 1.05)
                z = rng.uniform(3, 12)
                while z < 70:
                    if rng.random() < 0.75:
                        place_car(-1 if side < 0 else self.lanes, x, z, _pick(rng, (-1, 1)))
                    z += rng.uniform(5.5, 12)
        n_cars = _pick(rng, range(7), (0.05, 0.2, 0.25, 0.2, 0.15, 0.1, 0.05))
        moving_lanes = [k for k in range(self.lanes)
                        if not ((k == 0 and parked[-1]) or (k == self.lanes - 1 and parked[1]))]
        for i in range(n_cars):
            lane = _pick(rng, moving_lanes)
            x = xl + (lane + 0.5) * lw + rng.uniform(-0.3, 0.3)
            z = 4.0 + 60.0 * rng.random() ** 1.6 if i else rng.uniform(5, 25)
            if abs(x) < 1.2:
                z = max(z, 6.0)
            oncoming = self.two_way and lane < self.divider
            place_car(lane, x, z, -1 if oncoming else 1)

        def person(x: float, z: float, view: str, cyclist: bool = False) -> dict:
            skin, hair, top, legs, bike = _jitter(rng, np.stack([
                SKIN[rng.integers(4)], HAIR[rng.integers(4)], CLOTHES[rng.integers(10)],
                CLOTHES[_pick(rng, (0, 1, 3, 5, 6))], CLOTHES[rng.integers(10)]]), 0.12)
            return dict(x=x, z=z, height=rng.uniform(1.55, 1.92), view=view, cyclist=cyclist,
                        facing=_pick(rng, (-1, 1)), stride=rng.uniform(0.05, 0.3), skin=skin, hair=hair, top=top,
                        legs=legs, bike=bike)

        for _ in range(_pick(rng, range(7), (0.1, 0.2, 0.2, 0.2, 0.15, 0.1, 0.05))):
            side = _pick(rng, (-1, 1))
            inner, width = (xl, self.pave_left) if side < 0 else (xr, self.pave_right)
            x = inner + side * rng.uniform(0.4, max(0.5, width - 0.4))
            view = _pick(rng, ("front", "back", "side"), (0.35, 0.35, 0.3))
            self.people.append(person(x, 3.5 + 45 * rng.random() ** 1.4, view))
        if self.crossing is not None and rng.random() < 0.6:
            self.people.append(person(rng.uniform(xl + 0.5, xr - 0.5), self.crossing + rng.uniform(0.5, 3), "side"))
        for _ in range(_pick(rng, range(3), (0.35, 0.45, 0.2))):
            side = _pick(rng, (-1, 1))
            x = (xl + rng.uniform(0.6, 1.1)) if side < 0 else (xr - rng.uniform(0.6, 1.1))
            view = "side" if rng.random() < 0.3 else _pick(rng, ("front", "back"))
            self.people.append(person(x, 4.0 + 40 * rng.random() ** 1.3, view, cyclist=True))

        for side in (-1, 1):
            curb = xl if side < 0 else xr
            if rng.random() < 0.85:
                spacing, lamp = rng.uniform(12, 30), rng.random() < 0.65
                colour = _jitter(rng, ((0.45, 0.46, 0.47), (0.18, 0.2, 0.18), (0.6, 0.6, 0.58))[rng.integers(3)], 0.1)
                z = rng.uniform(3, 14)
                while z < 90:
                    self.poles.append(dict(x=curb + side * 0.35, z=z, height=rng.uniform(5, 8), lamp=lamp,
                                           arm=-side, colour=colour, sign=self._sign(rng) if rng.random() < 0.3
                                           else None))
                    z += spacing * rng.uniform(0.85, 1.15)
            for _ in range(_pick(rng, range(3), (0.3, 0.45, 0.25))):  # short posts that carry one sign
                self.poles.append(dict(x=curb + side * rng.uniform(0.3, 0.7), z=rng.uniform(4, 50),
                                       height=rng.uniform(2.3, 3.2), lamp=False, arm=-side,
                                       colour=_jitter(rng, (0.55, 0.56, 0.57), 0.1), sign=self._sign(rng)))
            if rng.random() < 0.45:
                width = self.pave_left if side < 0 else self.pave_right
                spacing, z = rng.uniform(7, 16), rng.uniform(2, 12)
                while z < 80:
                    self.trees.append(dict(x=curb + side * min(1.1, width / 2), z=z, trunk=rng.uniform(1.8, 3.2),
                                           radius=rng.uniform(1.3, 2.8), squash=rng.uniform(0.8, 1.3),
                                           lumps=np.concatenate([[[0.0, 0.0, 1.0, 1.0]], np.column_stack([
                                               rng.uniform(-0.6, 0.6, (4, 2)), np.full((4, 2), 0.6)])]).astype(
                                               np.float32)))
                    z += spacing * rng.uniform(0.8, 1.2)
            if rng.random() < 0.25:
                z0 = rng.uniform(2, 20)
                self.railings.append(dict(x=curb + side * 0.15, z0=z0, z1=z0 + rng.uniform(10, 40),
                                          height=rng.uniform(0.8, 1.15),
                                          colour=_jitter(rng, ((0.25, 0.27, 0.28), (0.7, 0.7, 0.68),
                                                               (0.3, 0.42, 0.32))[rng.integers(3)], 0.1)))

    @staticmethod
    def _sign(rng: np.random.Generator) -> dict:
        shape = _pick(rng, ("circle", "triangle", "rect", "light"), (0.35, 0.2, 0.3, 0.15))
        outer = {"circle": (0.75, 0.08, 0.07), "triangle": (0.75, 0.08, 0.07), "light": (0.08, 0.08, 0.08),
                 "rect": ((0.1, 0.25, 0.6), (0.1, 0.45, 0.25), (0.9, 0.9, 0.9))[rng.integers(3)]}[shape]
        inner = (0.92, 0.92, 0.9) if shape != "circle" or rng.random() < 0.6 else (0.1, 0.3, 0.7)
        return dict(shape=shape, outer=_jitter(rng, outer, 0.1), inner=_jitter(rng, inner, 0.06),
                    height=rng.uniform(2.0, 2.8), size=rng.uniform(0.5, 0.8), lit=int(rng.integers(3)))

    # ---------------------------------------------------------------------------------------- lighting
    def shadow(self, x, y, z) -> np.ndarray:
        """Soft shadow (0 lit … 1 shaded) that the façades on the sun's side cast on points (x, y, z)."""
        sx = float(self.sun[0])
        if abs(sx) < 1e-3 or self.sun_i < 0.3:
            return np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), np.float32)
        if np.ndim(x) == np.ndim(y) == np.ndim(z) == 0:
            return self.point_shadow(float(x), float(y), float(z))
        side = self.left if sx < 0 else self.right
        t = (side.x - x) / sx
        y_at, z_at = y + t * self.sun[1], z + t * self.sun[2]
        shade = _clamp((side.shadow_height(z_at) - y_at) / (0.25 + 0.03 * np.abs(t)) + 0.5, 0.0, 1.0)
        return np.where(t > 0, shade, 0.0).astype(np.float32)

    def point_shadow(self, x: float, y: float, z: float) -> float:
        """``shadow`` for one point, in plain Python (objects ask once each)."""
        sx = float(self.sun[0])
        if abs(sx) < 1e-3 or self.sun_i < 0.3:
            return 0.0
        side = self.left if sx < 0 else self.right
        t = (side.x - x) / sx
        if t <= 0:
            return 0.0
        height = float(side.shadow_height(np.float32(z + t * float(self.sun[2]))))
        return min(max((height - y - t * float(self.sun[1])) / (0.25 + 0.03 * t) + 0.5, 0.0), 1.0)

    def light(self, normal_dot_sun, shade, sky_view: float | np.ndarray = 1.0) -> np.ndarray:
        """Ambient (sky) plus direct sun, as an RGB multiplier, already exposed."""
        if np.ndim(normal_dot_sun) == np.ndim(shade) == np.ndim(sky_view) == 0:
            direct = max(float(normal_dot_sun), 0.0) * (1.0 - float(shade))
            return self.amb_e * float(sky_view) + self.sun_e * direct
        direct = np.maximum(normal_dot_sun, 0.0) * (1.0 - shade)
        return (self.amb_e * np.asarray(sky_view, np.float32)[..., None]
                + self.sun_e * np.asarray(direct, np.float32)[..., None])

    def fog(self, rgb: np.ndarray, depth) -> np.ndarray:
        """Aerial perspective: blend towards the horizon colour with distance."""
        if np.ndim(depth) == 0:
            return rgb + (self.sky_horizon - rgb) * np.float32(1.0 - math.exp(-float(depth) / self.fog_dist))
        amount = (1.0 - np.exp(-np.asarray(depth, np.float32) / self.fog_dist))[..., None]
        return rgb + (self.sky_horizon - rgb) * amount


# ----------------------------------------------------------------------------------------------- rendering
class _Canvas:
    """Colour, label, instance and depth buffers; painting writes only where a surface is nearer than what is there."""

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.label = np.zeros((height, width), np.uint8)
        self.instance = np.zeros((height, width), np.int32)
        self.depth = np.full((height, width), np.inf, np.float32)
        self.counts: dict[int, int] = {}

    def new_instance(self, cls: int) -> int:
        k = self.counts.get(cls, 0)
        self.counts[cls] = k + 1
        return cls * 1000 + k

    def paint(self, rows: slice, cols: slice, mask: np.ndarray, depth, rgb: np.ndarray, cls: int,
              instance: int | None = None) -> None:
        """Paint inside a window: ``mask`` (h,w), ``depth`` scalar or broadcastable, ``rgb`` (h,w,3) or (3,)."""
        zbuf = self.depth[rows, cols]
        mask = mask & (depth < zbuf)
        if not mask.any():
            return
        zbuf[mask] = depth if np.ndim(depth) == 0 else np.broadcast_to(depth, mask.shape)[mask]
        self.rgb[rows, cols][mask] = rgb if rgb.ndim == 1 else np.broadcast_to(rgb, mask.shape + (3,))[mask]
        self.label[rows, cols][mask] = cls
        self.instance[rows, cols][mask] = cls if instance is None else instance

    def paint_at(self, rows: np.ndarray, cols: np.ndarray, depth: np.ndarray, rgb: np.ndarray,
                 cls: np.ndarray) -> None:
        """Paint a list of pixels (stuff only: the instance id is the class id)."""
        self.depth[rows, cols] = depth
        self.rgb[rows, cols] = rgb
        self.label[rows, cols] = cls
        self.instance[rows, cols] = cls


class _Renderer:
    """Draws one ``_Scene`` on one pixel grid; the noise fields are shared by every surface of the scene."""

    def __init__(self, scene: _Scene, height: int, width: int) -> None:
        self.s = scene
        self.h, self.w = height, width
        self.xs, self.ys = _pixel_centres(height, width)
        self.canvas = _Canvas(height, width)
        self.n_coarse = _fbm(scene.noise_coarse, height, width)
        self.n_fine = _fbm(scene.noise_fine, height, width)

    # ------------------------------------------------------------------------------------ screen helpers
    def cols(self, x0: float, x1: float) -> slice | None:
        j0 = max(0, math.ceil((x0 / ASPECT + 0.5) * self.w - 0.5))
        j1 = min(self.w, math.floor((x1 / ASPECT + 0.5) * self.w - 0.5) + 1)
        return slice(j0, j1) if j1 > j0 else None

    def rows(self, y0: float, y1: float) -> slice | None:
        i0 = max(0, math.ceil(y0 * self.h - 0.5))
        i1 = min(self.h, math.floor(y1 * self.h - 0.5) + 1)
        return slice(i0, i1) if i1 > i0 else None

    def billboard(self, x: float, z: float, half: float, top: float, bottom: float = 0.0):
        """Pixels around an upright object standing at (x, z): slices and local metres (a right, b up)."""
        s = self.s
        k = s.f / z
        xc, yg = s.vx + s.f * x / z, s.horizon + s.f * s.cam_h / z
        cols, rows = self.cols(xc - half * k, xc + half * k), self.rows(yg - top * k, yg - bottom * k)
        if cols is None or rows is None:
            return None
        a = ((self.xs[cols] - xc) / k)[None, :]
        b = ((yg - self.ys[rows]) / k)[:, None]
        return rows, cols, a, b

    def side_plane(self, x: float, z0: float, z1: float):
        """Columns showing the vertical plane X = x between depths z0 and z1; per-column depth, per-pixel height."""
        s = self.s
        if abs(x) < 1e-3:
            return None
        xa, xb = s.vx + s.f * x / z0, s.vx + s.f * x / z1
        cols = self.cols(min(xa, xb), max(xa, xb))
        if cols is None:
            return None
        dx = self.xs[cols] - s.vx
        with np.errstate(divide="ignore"):
            z = np.where(dx * x > 0, s.f * x / dx, np.inf).astype(np.float32)
        height = s.cam_h - (self.ys[:, None] - s.horizon) * z[None, :] / s.f
        return cols, z[None, :], height

    # ------------------------------------------------------------------------------------ scene parts
    def ground(self) -> None:
        """Ground geometry only (labels, depth); its colour is computed at the end for the pixels still visible."""
        s, c = self.s, self.canvas
        g0 = int(np.searchsorted(self.ys, s.horizon + 1e-4, side="right"))
        self.g0 = g0
        self.ground_z = (s.f * s.cam_h / (self.ys[g0:] - s.horizon)).astype(np.float32)
        self.dark = np.ones((self.h, self.w), np.float32)  # contact and object shadows, multiplied in at the end
        if g0 >= self.h:
            return
        z = self.ground_z[:, None]
        x = (self.xs - s.vx)[None, :] * (z / s.f)
        road = (x > s.x_road_left) & (x < s.x_road_right)
        for side in (s.left, s.right):  # side streets continue the road through façade gaps
            gap = side.kinds[side.segment(z)] == 2
            beyond = x < side.x if side is s.left else x > side.x
            road |= gap & beyond & (z > side.bounds[0])
        label = np.where(road, ROAD, PAVEMENT).astype(np.uint8)
        c.label[g0:] = label
        c.instance[g0:] = label
        c.depth[g0:] = z

    def shade_ground(self) -> None:
        """Asphalt with wheel tracks and box-filtered markings, slabbed pavement with a curb; sun, shadows, haze."""
        s, c = self.s, self.canvas
        ri, ci = np.nonzero((c.label[self.g0:] == ROAD) | (c.label[self.g0:] == PAVEMENT))
        if len(ri) == 0:
            return
        z = self.ground_z[ri]
        ri = ri + self.g0
        x = (self.xs[ci] - s.vx) * (z / s.f)
        foot_x = z / s.f * (ASPECT / self.w)
        foot_z = z * z / (s.f * s.cam_h * self.h)
        xl, xr = s.x_road_left, s.x_road_right
        road = c.label[ri, ci] == ROAD
        n1, n2 = self.n_coarse[ri, ci], self.n_fine[ri, ci]
        albedo = np.empty((len(ri), 3), np.float32)
        k = np.nonzero(road)[0]
        if len(k):
            xr_, zr, fx, fz, m2 = x[k], z[k], foot_x[k], foot_z[k], n2[k]
            lane_d = ((xr_ - xl) / s.lane_w % 1.0 - 0.5) * s.lane_w
            tracks = 0.1 * np.exp(-((np.abs(lane_d) - 0.85) / 0.35) ** 2)
            marks, yellow = np.zeros_like(xr_), np.zeros_like(xr_)
            for lane in range(1, s.lanes):
                d = np.abs(xr_ - (xl + lane * s.lane_w))
                if lane == s.divider and s.divider_yellow:  # double yellow centre line
                    yellow = _band(np.abs(d - 0.12), 0.06, fx)
                elif lane == s.divider:
                    marks = np.maximum(marks, _band(d, 0.07, fx))
                else:
                    marks = np.maximum(marks, _band(d, 0.06, fx) * _band(_periodic(zr, s.dash_period),
                                                                       s.dash_len / 2, fz))
            if s.edge_lines:
                marks = np.maximum(marks, _band(np.abs(xr_ - xl - 0.3), 0.07, fx))
                marks = np.maximum(marks, _band(np.abs(xr_ - xr + 0.3), 0.07, fx))
            if s.crossing is not None:
                zebra = _band(np.abs(zr - s.crossing - 1.75), 1.75, fz) * _stripes(xr_, 1.0, 0.25, fx)
                marks = np.maximum(marks, zebra * ((xr_ > xl + 0.3) & (xr_ < xr - 0.3)))
            paint = ((xr_ > xl) & (xr_ < xr)) * (0.85 + 0.15 * _clamp(m2 * 3 + 0.5))  # worn; none in side streets
            asphalt = (1.0 + 0.12 * n1[k] + 0.15 * m2 - tracks)[:, None] * s.road_col
            albedo[k] = (asphalt + (_WHITE_PAINT - asphalt) * (marks * paint)[:, None]
                         + (_YELLOW_PAINT - asphalt) * (yellow * paint)[:, None])
        k = np.nonzero(~road)[0]
        if len(k):
            xp, zp, m2 = x[k], z[k], n2[k]
            joints = np.maximum(_stripes(xp - xl, s.tile, 0.025, foot_x[k]), _stripes(zp, s.tile, 0.025, foot_z[k]))
            curb = ((xp < xl) & (xp > xl - 0.3)) | ((xp > xr) & (xp < xr + 0.3))
            albedo[k] = np.where(curb[:, None], s.curb_col * (1.0 + 0.15 * m2)[:, None],
                                 (1.0 + 0.25 * n1[k] + 0.2 * m2 - 0.3 * joints)[:, None] * s.pave_col)
        albedo *= self.dark[ri, ci][:, None]
        rgb = s.fog(albedo * s.light(s.sun[1], s.shadow(x, 0.0, z)), z) * s.tint
        c.rgb[ri, ci] = rgb

    def shade_sky(self) -> None:
        """Gradient from a hazy horizon to the zenith with fBm clouds, for the pixels nothing else covers."""
        s, c = self.s, self.canvas
        ri, ci = np.nonzero(np.isinf(c.depth))
        if len(ri) == 0:
            return
        up = _clamp((s.horizon - self.ys[ri]) / s.horizon) ** 0.7
        base = s.sky_horizon + (s.zenith - s.sky_horizon) * up[:, None]
        clouds = _fbm(s.noise_cloud, self.h, self.w)[ri, ci] * 1.6 + 0.25 * self.n_fine[ri, ci]
        threshold = 0.35 - 0.5 * s.cloud_cover
        cover = _smoothstep(threshold, threshold + 0.3, clouds) * (0.4 + 0.6 * up)
        shade = 1.0 - (0.35 if s.overcast else 0.18) * _clamp(0.4 - clouds)
        cloud_rgb = s.cloud_col * (shade * (0.78 if s.overcast else 1.0))[:, None]
        c.rgb[ri, ci] = (base + (cloud_rgb - base) * cover[:, None]) * s.tint

    def facade_albedo(self, side: _Side, seg, u, h, width, top, foot_u, foot_h, n1, n2) -> np.ndarray:
        """Wall with stains, window grid with frames and per-window glass, shop fronts or a door, plinth, cornice.

        All inputs are 1-D (one entry per visible pixel); ``seg`` indexes the side's building arrays.
        """
        period, floor = side.window_period[seg], side.floor_height[seg]
        colour = side.walls[seg]
        offset = (width % period) / 2
        inside = (u > 0.7) & (u < width - 0.7)
        upper = (h > floor) & (h < top - 0.7) & inside
        along = u - offset
        vertical = h - 0.55 * floor
        half_w, half_h = side.window_half_w[seg], side.window_half_h[seg]
        du, dv = _periodic(along, period), _periodic(vertical, floor)
        window = _stripes(along, period, half_w, foot_u, du) * _stripes(vertical, floor, half_h, foot_h, dv) * upper
        frame = (_stripes(along, period, half_w + 0.12, foot_u, du)
                 * _stripes(vertical, floor, half_h + 0.12, foot_h, dv) * upper - window)
        index = ((np.floor(along / period + 0.5) * 7 + np.floor(h / floor) * 13).astype(np.int64)
                 + seg * 31 + side.index_base) % 256
        variation = self.s.table[index]
        glass = side.glass[seg] + (0.1 + 0.35 * variation)[:, None] * self.s.sky_horizon
        curtain = variation > 0.82
        glass[curtain] = np.float32([0.62, 0.56, 0.48]) * (0.5 + 0.5 * variation[curtain, None])
        frame_col = np.where(side.frame_light[seg][:, None], np.float32(0.85), colour * 0.6)
        dirt = 1.0 + side.stain[seg] * (0.8 * n1 + 0.6 * n2) - 0.1 * n2
        edges = (u < 0.25) | (u > width - 0.25) | (h < 0.4)
        dirt = dirt * np.where(edges, 0.78, 1.0) * (1.0 + 0.15 * _band(np.abs(h - top + 0.2), 0.2, foot_h))
        rgb = colour * (dirt * (1.0 - window - frame))[:, None] + glass * window[:, None] + frame_col * frame[:, None]
        ground = np.nonzero(inside & (h < floor))[0]  # ground floor: a glazed shop front with a fascia, or a door
        if len(ground):
            sg, ug, hg = seg[ground], along[ground], h[ground]
            fu = foot_u[ground] if np.ndim(foot_u) else foot_u
            fh = foot_h[ground] if np.ndim(foot_h) else foot_h
            shop = side.shop[sg]
            front = (_stripes(ug, period[ground], period[ground] * 0.42, fu) * _band(np.abs(hg - 1.55), 1.2, fh)
                     * shop)
            fascia = _band(np.abs(hg - floor[ground] + 0.35), 0.3, fh) * shop
            door = (~shop & (np.abs(u[ground] - side.door_u[sg]) < 0.55) & (hg < 2.2))
            part = rgb[ground]
            part += (glass[ground] * 0.8 - part) * front[:, None] + (colour[ground] * 0.35 - part) * fascia[:, None]
            part[door] = np.float32([0.25, 0.17, 0.12]) * (1 + 0.3 * n2[ground][door, None])
            rgb[ground] = part
        return rgb

    def facades(self) -> None:
        s, c = self.s, self.canvas
        for side, normal in ((s.left, 1.0), (s.right, -1.0)):
            plane = self.side_plane(side.x, 0.5, s.z_end)
            if plane is None:
                continue
            cols, z, h = plane
            seg = side.segment(z)
            kind = side.kinds[seg]
            veg_top = side.vegetation_top(z, seg)
            top = np.where(kind == 0, side.heights[seg], np.where(kind == 1, veg_top, -1.0))
            rough = np.where(kind == 1, 0.8, 0.0) * self.n_fine[:, cols]  # ragged hedge tops
            visible = (h >= 0) & (h <= top + rough) & (z < np.minimum(s.z_end, c.depth[:, cols]))
            ri, cj = np.nonzero(visible)
            if len(ri) == 0:
                continue
            ci = cj + cols.start
            z, seg, kind, h = z[0, cj], seg[0, cj], kind[0, cj], h[ri, cj]
            top, veg_top = top[0, cj], veg_top[0, cj]
            n1, n2 = self.n_coarse[ri, ci], self.n_fine[ri, ci]
            foot_u = z * z / (s.f * abs(side.x)) * (ASPECT / self.w)
            foot_h = z / s.f / self.h
            label = np.full(len(ri), BUILDING, np.uint8)
            albedo = np.empty((len(ri), 3), np.float32)
            build = kind == 0
            if build.any():
                u = z[build] - side.bounds[seg[build]]
                width = side.bounds[seg[build] + 1] - side.bounds[seg[build]]
                albedo[build] = self.facade_albedo(side, seg[build], u, h[build], width, top[build], foot_u[build],
                                                   foot_h[build], n1[build], n2[build])
            veg = ~build
            if veg.any():
                label[veg] = TREE
                glow = 0.25 * _clamp(h[veg] - veg_top[veg] + 1.5, 0.0, 1.5)
                albedo[veg] = s.foliage * (0.75 + 0.9 * n2[veg] + 0.5 * n1[veg] + glow)[:, None]
                fence = veg & side.fenced[seg] & (h < side.fence_height[seg])
                if fence.any():
                    label[fence] = FENCE
                    slats = _stripes(z[fence], 0.22, 0.07, foot_u[fence])
                    albedo[fence] = side.fence_color[seg[fence]] * (1.0 - 0.45 * slats - 0.2 * (h[fence] < 0.15))[:, None]
            shade = s.shadow(side.x, h, z)
            sky_view = 0.7 + 0.2 * _clamp(h / 6.0)
            rgb = s.fog(albedo * s.light(normal * s.sun[0], shade, sky_view), z) * s.tint
            c.paint_at(ri, ci, z, rgb, label)

    def end_wall(self) -> None:
        s, c = self.s, self.canvas
        if s.end_wall is None:
            return
        z, wall = s.z_end, s.end_wall
        x0, x1 = s.left.x, s.right.x
        cols = self.cols(s.vx + s.f * x0 / z, s.vx + s.f * x1 / z)
        rows = self.rows(s.horizon + s.f * (s.cam_h - s.end_height) / z, s.horizon + s.f * s.cam_h / z)
        if cols is None or rows is None:
            return
        ri, ci = np.nonzero(c.depth[rows, cols] > z)
        if len(ri) == 0:
            return
        ri, ci = ri + rows.start, ci + cols.start
        u = (self.xs[ci] - s.vx) * z / s.f - x0
        h = s.cam_h - (self.ys[ri] - s.horizon) * z / s.f
        seg = np.zeros(len(ri), np.int64)
        foot = z / s.f / self.h
        albedo = self.facade_albedo(wall, seg, u, h, x1 - x0, s.end_height, foot, foot, self.n_coarse[ri, ci],
                                    self.n_fine[ri, ci])
        rgb = s.fog(albedo * s.light(-s.sun[2], 0.0, 0.75), z) * s.tint
        c.paint_at(ri, ci, np.float32(z), rgb, np.uint8(BUILDING))

    def ground_shadow(self, cx: float, cz: float, half_x: float, half_z: float, strength: float,
                      texture: bool = False) -> None:
        """Darken the ground in a soft rectangle (metres): contact shadows under cars, tree and people shade."""
        s = self.s
        if cz - half_z <= 0.3 or self.g0 >= self.h:
            return
        near, far = cz - half_z, cz + half_z
        rows = self.rows(s.horizon + s.f * s.cam_h / far, s.horizon + s.f * s.cam_h / near)
        corners = [s.vx + s.f * (cx + dx) / zz for dx in (-half_x, half_x) for zz in (near, far)]
        cols = self.cols(min(corners), max(corners))
        if rows is None or cols is None:
            return
        rows = slice(max(rows.start, self.g0), rows.stop)
        if rows.stop <= rows.start:
            return
        z = self.ground_z[rows.start - self.g0:rows.stop - self.g0, None]
        x = (self.xs[cols] - s.vx)[None, :] * (z / s.f)
        edge = np.maximum((np.abs(x - cx) - half_x) / 0.25, (np.abs(z - cz) - half_z) / 0.35)
        alpha = _clamp(0.5 - edge) * strength
        if texture:
            alpha = alpha * _clamp(0.6 + 2.5 * self.n_fine[rows, cols])
        self.dark[rows, cols] *= 1.0 - alpha

    def shadows(self) -> None:
        s = self.s
        sun_frac = s.sun_i / (s.sun_i + s.ambient)
        slope = _clamp(-s.sun[[0, 2]] / max(float(s.sun[1]), 0.2), -3.0, 3.0)
        for car in s.cars:
            lit = 1.0 - float(s.shadow(car["x"], 0.8, car["z"] + car["length"] / 2))
            half_x, half_z = car["width"] / 2 + 0.05, car["length"] / 2 + 0.05
            cz = car["z"] + car["length"] / 2
            self.ground_shadow(car["x"], cz, half_x * 0.95, half_z * 0.95, 0.45)
            if lit * sun_frac > 0.05:
                self.ground_shadow(car["x"] + slope[0] * 0.6, cz + slope[1] * 0.6, half_x, half_z,
                                   0.6 * sun_frac * lit)
        for tree in s.trees:
            lit = 1.0 - float(s.shadow(tree["x"], 3.0, tree["z"]))
            if lit * sun_frac > 0.05:
                rise = tree["trunk"] + tree["radius"]
                r = tree["radius"] * 0.8
                self.ground_shadow(tree["x"] + slope[0] * rise, tree["z"] + slope[1] * rise, r, r,
                                   0.7 * sun_frac * lit, texture=True)
        for person in s.people:
            self.ground_shadow(person["x"], person["z"], 0.3, 0.3, 0.3 if not person["cyclist"] else 0.35)

    # ------------------------------------------------------------------------------------ objects
    def car(self, car: dict) -> None:
        """A car as four convex polytopes (body, cabin with sloped windows, two axles), ray-cast in its box."""
        s, c = self.s, self.canvas
        x, z0, length, width = car["x"], car["z"], car["length"], car["width"]
        hb, hc, facing = car["body_top"], car["top"], car["facing"]
        if z0 < 1.0:
            return
        half = width / 2
        # cabin profile along the car, measured from the near end; rear-facing cars show the rear window near
        rear = (0.15, 0.35) if car["kind"] == 3 else ((0.9, 1.45) if car["kind"] != 1 else (0.35, 0.75))
        front = (length - 1.35, length - 2.2) if car["kind"] != 3 else (length - 0.7, length - 1.3)
        near_slope, far_slope = (rear, front) if facing > 0 else ((length - front[0], length - front[1]),
                                                                  (length - rear[0], length - rear[1]))
        corners_x = [s.vx + s.f * (x + dx) / zz for dx in (-half, half) for zz in (z0, z0 + length)]
        corners_y = [s.horizon + s.f * (s.cam_h - hh) / zz for hh in (0.0, hc) for zz in (z0, z0 + length)]
        cols, rows = self.cols(min(corners_x), max(corners_x)), self.rows(min(corners_y), max(corners_y))
        if cols is None or rows is None:
            return
        # planes n·p ≤ d of body, cabin (a box cut by the two window slopes) and two octagonal axles
        za, zb = z0 + near_slope[0], z0 + near_slope[1]  # near window: from (hb, za) up to (hc, zb)
        zc, zd = z0 + far_slope[0], z0 + far_slope[1]
        slopes = np.array([[0.0, zb - za, -(hc - hb)], [0.0, zc - zd, hc - hb]], np.float32)
        normals = np.concatenate([_CAR_PLANES[:12], slopes, _CAR_PLANES[12:]])
        inner = 0.04 - half
        offsets = np.concatenate([
            [x + half, half - x, hb, -0.3, z0 + length, -z0],
            [x + half - 0.1, half - 0.1 - x, hc, 0.02 - hb, z0 + length, -z0, slopes[0, 1] * hb + slopes[0, 2] * za,
             slopes[1, 1] * hb + slopes[1, 2] * zc],
            [x - inner, -x - inner], _WHEEL_SIN * 0.32 + _WHEEL_COS * (z0 + 0.85) + 0.32,
            [x - inner, -x - inner], _WHEEL_SIN * 0.32 + _WHEEL_COS * (z0 + length - 0.85) + 0.32,
        ]).astype(np.float32)
        starts, part_of = _CAR_STARTS, _CAR_PART_OF
        dx = ((self.xs[cols] - s.vx) / s.f)[None, :, None]
        dy = (-(self.ys[rows] - s.horizon) / s.f)[:, None, None]
        den = dx * normals[:, 0] + dy * normals[:, 1] + normals[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (offsets - normals[:, 1] * s.cam_h) / den
        enter = np.where(den < 0, t, -np.inf)
        t_in = np.maximum.reduceat(enter, starts, axis=-1)
        t_out = np.minimum.reduceat(np.where(den > 0, t, np.inf), starts, axis=-1)
        t_part = np.where((t_in <= t_out) & (t_in > 0), t_in, np.inf)
        part = t_part.argmin(-1)
        best = np.take_along_axis(t_part, part[..., None], -1)[..., 0]
        mask = np.isfinite(best)
        if not mask.any():
            return
        face = np.where(part_of == part[..., None], enter, -np.inf).argmax(-1)
        normals[12:14] /= np.linalg.norm(normals[12:14], axis=1, keepdims=True)
        nrm = normals[face]
        t = np.where(mask, best, z0)
        hx, hy, hz = t * dx[..., 0], s.cam_h + t * dy[..., 0], t
        lit = 1.0 - float(s.shadow(x, 1.0, z0 + length / 2))
        light = s.light(nrm @ s.sun, 1.0 - lit, 0.75 + 0.25 * nrm[..., 1])
        sky = s.sky_horizon * (0.12 + 0.3 * _clamp(nrm[..., 1], 0.0, 1.0))[..., None]
        paint = car["paint"]
        rgb = paint * light + sky
        near_face = nrm[..., 2] < -0.99
        lat = np.abs(hx - x)
        if car["bumper_dark"]:
            rgb = np.where(((hy < 0.45) & (part == 0))[..., None], 0.1 * light + 0.5 * sky, rgb)
        lamp = near_face & (part == 0) & (hy > hb - 0.24) & (hy < hb - 0.07) & (lat > half - 0.33)
        lamp_col = np.array([0.75, 0.06, 0.05] if facing > 0 else [0.95, 0.93, 0.85], np.float32)
        rgb = np.where(lamp[..., None], lamp_col * (0.6 + 0.4 * light), rgb)
        plate = near_face & (part == 0) & (lat < 0.26) & (hy > 0.42) & (hy < 0.55)
        rgb = np.where(plate[..., None], np.float32(0.85) * light, rgb)
        # glass: the sloped windows (minus pillars) and the side windows of the cabin
        sloped = (part == 1) & (np.abs(nrm[..., 2]) > 0.1) & (lat < half - 0.2) & (hy > hb + 0.04) & (hy < hc - 0.04)
        frac = _clamp((hy - hb) / (hc - hb), 0.0, 1.0)
        z_near = z0 + near_slope[0] + (near_slope[1] - near_slope[0]) * frac
        z_far = z0 + far_slope[0] + (far_slope[1] - far_slope[0]) * frac
        pillar = np.abs(hz - (z_near + z_far) / 2) < 0.06
        sides = ((part == 1) & (np.abs(nrm[..., 0]) > 0.99) & (hy > hb + 0.07) & (hy < hc - 0.07)
                 & (hz > z_near + 0.12) & (hz < z_far - 0.12) & ~pillar)
        glass = np.array([0.05, 0.06, 0.07], np.float32) * light + s.sky_horizon * (0.15 + 0.35 * frac)[..., None]
        rgb = np.where((sloped | sides)[..., None], glass, rgb)
        tyre = part >= 2
        hub = tyre & (np.abs(nrm[..., 0]) > 0.99) & (np.minimum(np.abs(hz - z0 - 0.85), np.abs(hz - z0 - length + 0.85)) ** 2
                                                     + (hy - 0.32) ** 2 < 0.17 ** 2)
        rgb = np.where(tyre[..., None], np.where(hub[..., None], 0.5 * light, 0.05 * light), rgb)
        rgb = s.fog(rgb, t) * s.tint
        c.paint(rows, cols, mask, t, rgb, CAR, c.new_instance(CAR))

    def person(self, p: dict) -> None:
        """A pedestrian or a bicyclist as capsules in local metres; shaded as one upright cylinder."""
        s, c = self.s, self.canvas
        if p["z"] < 1.5:
            return
        k = p["height"] / 1.75
        cyclist, view = p["cyclist"], p["view"]
        half = (0.95 if cyclist and view == "side" else 0.4) * max(k, 1.0)
        box = self.billboard(p["x"], p["z"], half, p["height"] + (0.3 if cyclist else 0.05))
        if box is None:
            return
        rows, cols, a, b = box
        a = a * p["facing"] if view == "side" else a
        shape = np.broadcast_shapes(a.shape, b.shape)
        rgb = np.zeros(shape + (3,), np.float32)
        mask = np.zeros(shape, bool)

        def put(part: np.ndarray, colour) -> None:
            nonlocal mask
            rgb[part] = colour
            mask = mask | part

        lift = 0.0
        if cyclist:
            frame = p["bike"]
            tyre = np.float32(0.06)
            if view == "side":
                for hub_a in (-0.52, 0.52):
                    r = np.sqrt((a - hub_a) ** 2 + (b - 0.34) ** 2)
                    put((r < 0.35) & (r > 0.29), tyre)
                    put(r < 0.04, np.float32(0.5))
                for p0, p1 in (((-0.52, 0.34), (0.0, 0.3)), ((0.0, 0.3), (-0.15, 0.85)), ((-0.15, 0.85), (0.4, 0.85)),
                               ((0.4, 0.85), (0.52, 0.34)), ((0.0, 0.3), (0.4, 0.85)), ((0.4, 0.85), (0.38, 1.02))):
                    put(_capsule(a, b, p0, p1, 0.028), frame)
                hip, shoulder, head = (-0.12, 0.95), (0.12, 1.48), (0.2, 1.66)
                put(_capsule(a, b, hip, (0.08, 0.55), 0.07), p["legs"])
                put(_capsule(a, b, (0.08, 0.55), (0.06, 0.18), 0.06), p["legs"])
                put(_capsule(a, b, hip, shoulder, 0.16), p["top"])
                put(_capsule(a, b, shoulder, (0.38, 1.02), 0.05), p["top"])
                put((a - head[0]) ** 2 + (b - head[1]) ** 2 < 0.11 ** 2, p["skin"])
                put(((a - head[0]) ** 2 + (b - head[1] - 0.03) ** 2 < 0.12 ** 2) & (b > head[1] + 0.02), p["hair"])
            else:
                put(_capsule(a, b, (0.0, 0.05), (0.0, 0.66), 0.035), tyre)
                put(_capsule(a, b, (-0.28, 1.02), (0.28, 1.02), 0.025), frame)
                put(_capsule(a, b, (0.0, 0.6), (0.0, 1.0), 0.03), frame)
                for side in (-1, 1):
                    put(_capsule(a, b, (side * 0.1, 0.98), (side * 0.12, 0.35), 0.07), p["legs"])
                put(_capsule(a, b, (0.0, 1.05), (0.0, 1.4), 0.18), p["top"])
                for side in (-1, 1):
                    put(_capsule(a, b, (side * 0.2, 1.42), (side * 0.27, 1.04), 0.05), p["top"])
                put(a ** 2 + (b - 1.62) ** 2 < 0.11 ** 2, p["hair"] if view == "back" else p["skin"])
                if view == "front":
                    put((a ** 2 + (b - 1.65) ** 2 < 0.115 ** 2) & (b > 1.66), p["hair"])
            lift = 1.0
        else:
            a, b = a / k, b / k
            if view == "side":
                swing = p["stride"]
                put(_capsule(a, b, (0.0, 0.9), (swing, 0.07), 0.07), p["legs"])
                put(_capsule(a, b, (0.0, 0.9), (-swing, 0.07), 0.07), p["legs"] * 0.8)
                put(_capsule(a, b, (0.0, 0.98), (0.02, 1.4), 0.13), p["top"])
                put(_capsule(a, b, (0.02, 1.4), (-swing * 0.8, 0.9), 0.05), p["top"] * 0.85)
                put((a - 0.03) ** 2 + (b - 1.6) ** 2 < 0.105 ** 2, p["skin"])
                put(((a - 0.01) ** 2 + (b - 1.62) ** 2 < 0.11 ** 2) & ((b > 1.63) | (a < -0.03)), p["hair"])
            else:
                for side in (-1, 1):
                    put(_capsule(a, b, (side * 0.09, 0.9), (side * 0.1, 0.07), 0.075), p["legs"])
                    put(_capsule(a, b, (side * 0.1, 0.09), (side * 0.12, 0.03), 0.06), np.float32(0.08))
                put(_capsule(a, b, (0.0, 1.0), (0.0, 1.36), 0.19), p["top"])
                for side in (-1, 1):
                    put(_capsule(a, b, (side * 0.21, 1.38), (side * 0.25, 0.86), 0.055), p["top"] * 0.9)
                    put(_capsule(a, b, (side * 0.25, 0.88), (side * 0.25, 0.82), 0.05), p["skin"])
                put(a ** 2 + (b - 1.6) ** 2 < 0.105 ** 2, p["hair"] if view == "back" else p["skin"])
                if view == "front":
                    put((a ** 2 + (b - 1.63) ** 2 < 0.11 ** 2) & (b > 1.65), p["hair"])
        if not mask.any():
            return
        across = _clamp(a / 0.3, -1.0, 1.0)
        ndl = across * s.sun[0] - np.sqrt(1.0 - across ** 2) * s.sun[2]
        shade = float(s.shadow(p["x"], 1.0 + lift * 0.0, p["z"]))
        light = s.light(ndl, shade, 0.75 + 0.1 * _clamp(b / 1.8, 0, 1))
        out = rgb * light * (1.0 + 0.15 * self.n_fine[rows, cols])[..., None]
        out = s.fog(out, p["z"]) * s.tint
        cls = BICYCLIST if cyclist else PEDESTRIAN
        c.paint(rows, cols, mask, np.float32(p["z"]), out, cls, c.new_instance(cls))

    def pole(self, pole: dict) -> None:
        s, c = self.s, self.canvas
        z = pole["z"]
        if z < 1.0:
            return
        reach = 1.6 if pole["lamp"] else 0.2
        box = self.billboard(pole["x"], z, reach + 0.3, pole["height"] + 0.4)
        if box is not None:
            rows, cols, a, b = box
            radius = 0.07 if pole["height"] > 4 else 0.04
            a_arm = a * pole["arm"]  # the lamp arm reaches over the road
            mask = (np.abs(a) < radius) & (b < pole["height"])
            if pole["lamp"]:
                top = pole["height"]
                mask |= _capsule(a_arm, b, (0.0, top - 0.3), (reach * 0.5, top + 0.05), 0.045)
                mask |= _capsule(a_arm, b, (reach * 0.5, top + 0.05), (reach, top - 0.02), 0.045)
                head = (np.abs(a_arm - reach) < 0.28) & (np.abs(b - top + 0.06) < 0.07)
                mask |= head
            across = _clamp(a / radius, -1.0, 1.0)
            ndl = across * s.sun[0] - np.sqrt(1.0 - across ** 2) * s.sun[2]
            light = s.light(ndl, float(s.shadow(pole["x"], 2.0, z)), 0.85)
            rgb = s.fog(pole["colour"] * light, z) * s.tint
            c.paint(rows, cols, mask, np.float32(z), rgb, POLE, c.new_instance(POLE))
        if pole["sign"] is not None:
            self.sign(pole, pole["sign"])

    def sign(self, pole: dict, sign: dict) -> None:
        s, c = self.s, self.canvas
        z = pole["z"] - 0.05
        size = sign["size"]
        centre = min(sign["height"], pole["height"] - size / 2)
        box = self.billboard(pole["x"], z, size, centre + size, centre - size)
        if box is None:
            return
        rows, cols, a, b = box
        b = b - centre
        shape = sign["shape"]
        r = size / 2
        if shape == "circle":
            d = np.sqrt(a * a + b * b)
            mask, inner = d < r, d < r * 0.72
        elif shape == "triangle":
            mask = (b > -r * 0.8) & (np.abs(a) < (r * 0.9 - b) * 0.66)
            inner = (b > -r * 0.55) & (np.abs(a) < (r * 0.45 - b) * 0.66)
        elif shape == "rect":
            mask = (np.abs(a) < r * 1.2) & (np.abs(b) < r * 0.8)
            inner = (np.abs(a) < r * 1.05) & (np.abs(b) < r * 0.65)
        else:  # a traffic light: dark box, three lamps, one lit
            mask = (np.abs(a) < 0.16) & (np.abs(b) < 0.45)
            inner = np.zeros(np.broadcast_shapes(a.shape, b.shape), bool)
        rgb = np.where(inner[..., None], sign["inner"], sign["outer"]).astype(np.float32)
        if shape == "light":
            for k, (offset, colour) in enumerate(((0.28, (1.0, 0.1, 0.05)), (0.0, (1.0, 0.75, 0.1)),
                                                  (-0.28, (0.1, 0.9, 0.4)))):
                lamp = a * a + (b - offset) ** 2 < 0.09 ** 2
                rgb = np.where(lamp[..., None], np.array(colour, np.float32) * (1.0 if k == sign["lit"] else 0.25), rgb)
        elif shape == "rect" and sign["inner"][2] > 0.8:
            stroke = (np.abs(b) < r * 0.1) & (np.abs(a) < r * 0.8)  # a white bar on coloured signs
            rgb = np.where(stroke[..., None], sign["outer"] * 0.4 + 0.5, rgb)
        light = s.light(max(-float(s.sun[2]), 0.0), float(s.shadow(pole["x"], centre, z)), 0.8)
        rgb = s.fog(rgb * light * (1.0 + 0.1 * self.n_fine[rows, cols])[..., None], z) * s.tint
        c.paint(rows, cols, mask, np.float32(z), rgb, SIGN, c.new_instance(SIGN))

    def tree(self, tree: dict) -> None:
        s, c = self.s, self.canvas
        z, radius = tree["z"], tree["radius"]
        if z < 1.0:
            return
        r_v = radius * tree["squash"]
        centre = tree["trunk"] + r_v * 0.8
        box = self.billboard(tree["x"], z, radius * 1.4, centre + r_v * 1.4)
        if box is None:
            return
        rows, cols, a, b = box
        n1, n2 = self.n_coarse[rows, cols], self.n_fine[rows, cols]
        lumps = tree["lumps"]  # (k, 4): centre a, centre b, radius a, radius b (in crown radii)
        da = (a[None] - lumps[:, 0, None, None] * radius) / (lumps[:, 2, None, None] * radius)
        db = (b[None] - centre - lumps[:, 1, None, None] * r_v) / (lumps[:, 3, None, None] * r_v)
        crown = (da * da + db * db).min(0) + 1.6 * n2 < 1.0
        trunk = (np.abs(a) < 0.1 + 0.06 * _clamp(1.0 - b, 0.0, 1.0)) & (b < centre)
        across = _clamp(a / radius, -1.0, 1.0)
        up = _clamp((b - centre) / r_v, -1.0, 1.0)
        ndl = across * s.sun[0] + up * s.sun[1] * 0.6 - 0.5 * s.sun[2]
        leaf = s.foliage * np.maximum(0.85 + 1.4 * n2 + 0.6 * n1 + 0.25 * up, 0.3)[..., None]
        bark = s.trunk * (1.0 + 0.4 * n2)[..., None]
        albedo = np.where(crown[..., None], leaf, bark)
        shade = float(s.shadow(tree["x"], centre, z))
        rgb = s.fog(albedo * s.light(np.where(crown, ndl, across * s.sun[0]), shade, 0.8), z) * s.tint
        c.paint(rows, cols, crown | trunk, np.float32(z), rgb, TREE)

    def railing(self, rail: dict) -> None:
        s, c = self.s, self.canvas
        plane = self.side_plane(rail["x"], rail["z0"], rail["z1"])
        if plane is None:
            return
        cols, z, h = plane
        mask = (h >= 0) & (h <= rail["height"]) & (z >= rail["z0"]) & (z <= rail["z1"])
        if not mask.any():
            return
        rows = slice(0, self.h)
        foot_u = z * z / (s.f * abs(rail["x"])) * (ASPECT / self.w)
        foot_h = z / s.f / self.h
        bars = np.maximum(_stripes(z, 0.15, 0.025, foot_u), _stripes(z, 2.0, 0.05, foot_u))
        rails = np.maximum(_band(np.abs(h - rail["height"] + 0.04), 0.04, foot_h), _band(np.abs(h - 0.15), 0.03, foot_h))
        cover = np.maximum(bars, rails)[..., None]
        light = s.light(-np.sign(rail["x"]) * s.sun[0], s.shadow(rail["x"], h, z), 0.8)
        metal = s.fog(rail["colour"] * light, z) * s.tint
        behind = c.rgb[rows, cols] * 0.85
        rgb = behind + (metal - behind) * cover
        c.paint(rows, cols, mask, np.broadcast_to(z, mask.shape), rgb, FENCE)

    def render(self) -> None:
        """Geometry first, then objects (depth-tested), then the colour of whatever ground and sky stay visible;
        railings last because they are see-through and blend over what is behind them."""
        s = self.s
        self.ground()
        self.end_wall()
        self.facades()
        self.shadows()
        for car in s.cars:
            self.car(car)
        for person in s.people:
            self.person(person)
        for pole in s.poles:
            self.pole(pole)
        for tree in s.trees:
            self.tree(tree)
        self.shade_ground()
        self.shade_sky()
        for rail in sorted(s.railings, key=lambda r: -r["z0"]):
            self.railing(rail)


def generate_scene(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One street scene: image uint8 (H,W,3), label int64 (H,W) with CamVid ids 0–10, instance int64 (H,W).

    The same seed gives the same layout at any resolution (geometry lives in normalised screen coordinates).
    """
    if height < 1 or width < 1:
        raise ValueError(f"scene size must be positive, got {height}×{width}")
    renderer = _Renderer(_Scene(seed), height, width)
    renderer.render()
    canvas = renderer.canvas
    grain = np.random.default_rng([seed, height, width]).standard_normal((height, width), np.float32)
    rgb = canvas.rgb * _vignette(height, width) * 255.0 + 2.5 * grain[..., None]
    image = _clamp(rgb + 0.5, 0, 255).astype(np.uint8)
    return image, canvas.label.astype(np.int64), canvas.instance.astype(np.int64)


class SyntheticStreets(torch.utils.data.Dataset):
    """Procedural street scenes as a dataset of samples (see ``inverseg.data.base``); CamVid classes.

    Scene ``index`` of a split uses seed ``seed * 10**6 + offset + index`` with offsets train 0, val 500000,
    test 900000, so validation and test layouts are never training layouts.  Default lengths: train 2000,
    val 50, test 50.  Scenes are rendered at ``size`` (H, W) directly; ``transform`` is usually only a flip and
    draws its randomness from (seed, epoch, index) like ``PairDataset``.
    """

    spec = CAMVID
    has_instances = True

    def __init__(self, split: str = "train", size: tuple[int, int] = (96, 128), length: int | None = None,
                 seed: int = 0, transform: JointTransform | None = None) -> None:
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"split must be one of {', '.join(SPLIT_OFFSETS)}, got {split!r}")
        length = DEFAULT_LENGTHS[split] if length is None else int(length)
        if not 0 < length <= SPLIT_CAPACITY[split]:
            raise ValueError(f"synthetic {split} length must be 1…{SPLIT_CAPACITY[split]}, got {length}")
        if seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {seed}")
        self.split, self.size, self.length, self.seed = split, (int(size[0]), int(size[1])), length, int(seed)
        self.transform = transform or JointTransform()
        self.epoch = 0
        self.problems: list[str] = []

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Only the (random) transform changes per epoch; the scenes themselves are fixed."""
        self.epoch = epoch

    def scene_seed(self, index: int) -> int:
        return self.seed * 10 ** 6 + SPLIT_OFFSETS[self.split] + index

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic scenes")
        index %= self.length
        image, label, instance = generate_scene(self.scene_seed(index), *self.size)
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.transform.is_random else None
        image, label, instance = self.transform(image, label, instance, rng)
        return make_sample(image, label, instance, f"synthetic_{self.split}_{index:06d}")
