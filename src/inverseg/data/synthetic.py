"""Procedural street scenes: the embedded default data (CamVid's 11 classes), generated on the fly.

Every scene is a pure function of (seed, height, width).  The geometry lives in normalised coordinates, so the
same seed depicts the same street at any resolution.  Content that a model has to learn, not flat fills:
a perspective road with lane markings and car shadows, pavements with kerbs, buildings of varied height with
window grids and doors, noise-textured trees, poles with signs, fences, shaded cars with windows and wheels,
pedestrians and bicyclists, a sky gradient with clouds — all lit by a per-scene sun (brightness, colour
temperature, which side of the street is in shade).

Instance ids follow pix2pixHD: things (pole, sign, car, pedestrian, bicyclist) get class·1000 + k, stuff gets
its class id, so instance-boundary edge maps separate adjacent cars.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..labels.schemes import CAMVID
from .base import make_sample
from .transforms import JointTransform

SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
THINGS = (POLE, SIGN, CAR, PEDESTRIAN, BICYCLIST)

# Split seeds never overlap: scene i of a split uses base + i.
SPLIT_OFFSETS = {"train": 0, "val": 500_000, "test": 900_000}
DEFAULT_LENGTHS = {"train": 2000, "val": 50, "test": 50}


def _noise(rng: np.random.Generator, height: int, width: int, octaves: int = 4, base: int = 4) -> np.ndarray:
    """fBm value noise in about [-1, 1]: random grids at doubling resolutions, bilinearly enlarged and summed."""
    total = np.zeros((height, width), np.float32)
    amplitude, weight = 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2 ** octave
        grid = rng.uniform(-1, 1, size=(max(2, cells * height // max(height, width) + 1), cells + 1))
        layer = Image.fromarray(grid.astype(np.float32)).resize((width, height), Image.BILINEAR)
        total += amplitude * np.asarray(layer)
        weight += amplitude
        amplitude *= 0.5
    return total / weight


class _Canvas:
    """Image, label and instance arrays plus normalised pixel-centre coordinates."""

    def __init__(self, height: int, width: int):
        self.h, self.w = height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.label = np.zeros((height, width), np.int64)
        self.instance = np.zeros((height, width), np.int64)
        self.y = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
        self.x = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]

    def box(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices covering a normalised box (None when it is off-canvas or empty)."""
        c0, c1 = max(0, int(np.floor(x0 * self.w))), min(self.w, int(np.ceil(x1 * self.w)))
        r0, r1 = max(0, int(np.floor(y0 * self.h))), min(self.h, int(np.ceil(y1 * self.h)))
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def paint(self, window, mask: np.ndarray, colour: np.ndarray, class_id: int, instance: int | None = None):
        """Write ``colour`` ((h,w,3) or (3,)) where ``mask`` is set inside ``window``."""
        rows, cols = window
        image = self.image[rows, cols]
        if colour.ndim == 1:
            image[mask] = colour
        else:
            image[mask] = colour[mask]
        self.label[rows, cols][mask] = class_id
        self.instance[rows, cols][mask] = class_id if instance is None else instance


def generate_scene(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (H,W,3), label int64 (H,W) CamVid ids 0–10, instance int64 (H,W)) for one seed."""
    rng = np.random.default_rng(seed)
    canvas = _Canvas(height, width)
    y, x = canvas.y, canvas.x
    # ---- scene parameters: camera, light, palette
    horizon = rng.uniform(0.36, 0.5)
    vanish = rng.uniform(0.38, 0.62)
    sun = rng.uniform(0.75, 1.2)
    warmth = rng.uniform(-0.12, 0.12)
    tint = np.array([1 + warmth, 1.0, 1 - warmth], np.float32)
    shaded_side = rng.integers(0, 2)  # which side of the street is in shadow
    depth = np.clip((y - horizon) / (1 - horizon), 0, 1)  # 0 at the horizon, 1 at the bottom

    # ---- sky: vertical gradient + clouds
    top = np.array([rng.uniform(40, 110), rng.uniform(90, 160), rng.uniform(170, 240)], np.float32)
    low = np.array([rng.uniform(170, 230), rng.uniform(190, 235), rng.uniform(215, 250)], np.float32)
    t = np.clip(y / max(horizon, 1e-3), 0, 1)[..., None]
    sky = top * (1 - t) + low * t
    clouds = np.clip((_noise(rng, height, width, 4, 3) - rng.uniform(-0.1, 0.3)) * 2.5, 0, 1)[..., None]
    canvas.image[:] = sky * (1 - 0.8 * clouds) + 245 * 0.8 * clouds
    canvas.label[:] = SKY
    canvas.instance[:] = SKY

    # ---- ground geometry: road edges and pavement outer edges converge at the vanishing point
    road_left = vanish + (rng.uniform(-0.25, 0.15) - vanish) * depth
    road_right = vanish + (rng.uniform(0.85, 1.25) - vanish) * depth
    walk = rng.uniform(0.25, 0.45)
    outer_left, outer_right = road_left - walk * depth, road_right + walk * depth
    below = y > horizon

    # ---- buildings: façades on both sides, tops falling towards the vanishing point
    facade_noise = _noise(rng, height, width, 3, 6)
    for side in (0, 1):
        edge = 0.0 if side == 0 else 1.0
        position = edge
        while (position < vanish - 0.02) if side == 0 else (position > vanish + 0.02):
            span = rng.uniform(0.08, 0.3)
            x0, x1 = (position, min(position + span, vanish)) if side == 0 else (max(position - span, vanish), position)
            centre = 0.5 * (x0 + x1)
            rise = rng.uniform(0.5, 1.6) * abs(centre - vanish) + rng.uniform(0.02, 0.08)
            roof = max(0.0, horizon - rise)
            window = canvas.box(x0, x1, roof, 1.0)
            position = x1 if side == 0 else x0
            if window is None:
                continue
            rows, cols = window
            base_colour = rng.uniform([90, 60, 50], [220, 200, 180]).astype(np.float32)
            light = sun * (0.65 if side == shaded_side else 1.0)
            u = (x[:, cols] - x0) / max(x1 - x0, 1e-3)
            v = (y[rows] - roof) / max(horizon + 0.2 - roof, 1e-3)
            colour = (base_colour * light * (1 + 0.18 * facade_noise[rows, cols])[..., None]) * tint
            columns, floors = rng.integers(2, 6), rng.integers(3, 9)
            wu, wv = (u * columns) % 1.0, (v * floors) % 1.0
            windows = (wu > 0.22) & (wu < 0.72) & (wv > 0.3) & (wv < 0.75) & (v < 0.9)
            glass = np.array([rng.uniform(30, 70), rng.uniform(40, 80), rng.uniform(60, 110)], np.float32)
            colour = np.where(windows[..., None], glass * (0.8 + 0.5 * (1 - wv))[..., None] * light, colour)
            door = (np.abs(u - 0.5) < 0.08) & (v > 0.82)
            colour = np.where(door[..., None], base_colour * 0.35, colour)
            mask = np.broadcast_to(y[rows] >= roof, (rows.stop - rows.start, cols.stop - cols.start))
            canvas.paint(window, mask, colour.astype(np.float32), BUILDING)

    # ---- road (asphalt noise, lane markings) and pavements (slabs, kerb)
    grain = _noise(rng, height, width, 4, 16)
    asphalt = rng.uniform(60, 110) * sun
    road_mask = below & (x >= road_left) & (x <= road_right)
    road = (asphalt * (1 + 0.25 * grain))[..., None] * tint * (0.85 + 0.25 * depth[..., None])
    lane = np.abs(x - (vanish + (rng.uniform(0.4, 0.6) - vanish) * depth)) < 0.012 * depth + 0.002
    dashes = ((depth ** 0.5 * 9 + rng.uniform(0, 1)) % 1.0) < 0.55
    paint_colour = np.array([235, 225, 180], np.float32) if rng.random() < 0.3 else np.full(3, 235, np.float32)
    road = np.where((lane & dashes)[..., None], paint_colour * sun, road)
    canvas.paint((slice(None), slice(None)), road_mask, road.astype(np.float32), ROAD)
    slab = rng.uniform(110, 180)
    pavement_mask = below & ~road_mask & (x >= outer_left) & (x <= outer_right)
    seams = (((depth ** 0.5) * 14) % 1.0 < 0.08)
    kerb = (np.abs(x - road_left) < 0.015 * depth) | (np.abs(x - road_right) < 0.015 * depth)
    walk_colour = (slab * sun * (1 + 0.12 * grain) * np.where(seams | kerb, 0.75, 1.0))[..., None] * tint
    walk_colour = walk_colour * np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.8, 1.0)], np.float32)
    canvas.paint((slice(None), slice(None)), pavement_mask, walk_colour.astype(np.float32), PAVEMENT)

    # ground beyond the pavements (yards): more pavement-like ground so no pixel stays sky below the horizon
    yard = below & (canvas.label == SKY)
    canvas.paint((slice(None), slice(None)), yard, walk_colour.astype(np.float32) * 0.9, PAVEMENT)

    def edge_at(line_bottom: float, d: float) -> float:
        return vanish + (line_bottom - vanish) * d

    left_bottom = (road_left[-1, 0] - vanish) / max(depth[-1, 0], 1e-3) + vanish
    right_bottom = (road_right[-1, 0] - vanish) / max(depth[-1, 0], 1e-3) + vanish

    # ---- fence along one pavement's outer edge
    if rng.random() < 0.6:
        side = rng.integers(0, 2)
        d0, d1 = rng.uniform(0.15, 0.4), rng.uniform(0.6, 1.0)
        bottom = left_bottom - walk if side == 0 else right_bottom + walk
        fence_x = edge_at(bottom, depth)
        fence_h = 0.12 * depth
        yb = horizon + depth * (1 - horizon)
        near_edge = np.abs(x - fence_x) < 0.02 + 0.25 * depth
        fence_mask = (depth > d0) & (depth < d1) & near_edge & (canvas.label == BUILDING) & \
                     ((yb - y) < fence_h + 0.02)
        slats = (((x - fence_x) * 60) % 1.0 < 0.5)
        fence_colour = rng.uniform([80, 60, 40], [160, 130, 100]).astype(np.float32)
        colour = (fence_colour * sun * np.where(slats, 1.0, 0.7)[..., None]) * tint
        colour = np.broadcast_to(colour, (height, width, 3))
        canvas.paint((slice(None), slice(None)), fence_mask, colour.astype(np.float32), FENCE)

    # ---- trees: noisy foliage blobs on trunks, standing on the pavements
    foliage_noise = _noise(rng, height, width, 4, 8)
    for _ in range(rng.integers(1, 5)):
        side = rng.integers(0, 2)
        d = rng.uniform(0.15, 0.8)
        base_y = horizon + d * (1 - horizon)
        bottom = (left_bottom - 0.6 * walk) if side == 0 else (right_bottom + 0.6 * walk)
        tx = edge_at(bottom, d)
        size = rng.uniform(0.25, 0.45) * d + 0.04
        crown_y = base_y - size * 1.6
        window = canvas.box(tx - size, tx + size, crown_y - size, base_y)
        if window is None:
            continue
        rows, cols = window
        dx, dy = (x[:, cols] - tx) / size, (y[rows] - crown_y) / size
        crown = dx ** 2 + (dy * 1.1) ** 2 < 0.8 + 0.35 * foliage_noise[rows, cols]
        trunk = (np.abs(dx) < 0.12) & (dy > 0) & (y[rows] <= base_y)
        leaf = rng.uniform([30, 70, 20], [90, 150, 70]).astype(np.float32)
        shade = (1 + 0.45 * foliage_noise[rows, cols] - 0.25 * dy.clip(-1, 1))[..., None]
        colour = np.where(crown[..., None], leaf * shade * sun * tint,
                          np.array([70, 50, 35], np.float32) * sun)
        canvas.paint(window, crown | trunk, colour.astype(np.float32), TREE)

    counter = {POLE: 0, SIGN: 0, CAR: 0, PEDESTRIAN: 0, BICYCLIST: 0}

    def next_instance(class_id: int) -> int:
        counter[class_id] += 1
        return class_id * 1000 + counter[class_id] - 1

    # ---- poles with signs at the kerbs
    for _ in range(rng.integers(1, 4)):
        side = rng.integers(0, 2)
        d = rng.uniform(0.2, 0.9)
        base_y = horizon + d * (1 - horizon)
        px = edge_at((left_bottom - 0.1 * walk) if side == 0 else (right_bottom + 0.1 * walk), d)
        tall, thick = 0.55 * d + 0.05, 0.006 + 0.01 * d
        window = canvas.box(px - thick, px + thick, base_y - tall, base_y)
        if window is not None:
            rows, cols = window
            mask = np.ones((rows.stop - rows.start, cols.stop - cols.start), bool)
            shade = (1 - 0.4 * np.abs(x[:, cols] - px) / thick).clip(0.5, 1)[..., None]
            colour = np.broadcast_to(np.array([110, 110, 115], np.float32) * sun * shade, mask.shape + (3,))
            canvas.paint(window, mask, colour, POLE, next_instance(POLE))
        if rng.random() < 0.7:
            sign_size = 0.04 * d + 0.012
            sy = base_y - tall + sign_size
            window = canvas.box(px - sign_size, px + sign_size, sy - sign_size, sy + sign_size)
            if window is not None:
                rows, cols = window
                dx, dy = (x[:, cols] - px) / sign_size, (y[rows] - sy) / sign_size
                round_sign = rng.random() < 0.5
                mask = (dx ** 2 + dy ** 2 < 1) if round_sign else ((np.abs(dx) < 0.9) & (np.abs(dy) < 0.9))
                face = np.array([200, 30, 30] if round_sign else [30, 70, 180], np.float32)
                ring = (dx ** 2 + dy ** 2 > 0.55) if round_sign else ((np.abs(dx) > 0.7) | (np.abs(dy) > 0.7))
                colour = np.where(ring[..., None], np.array([240, 240, 240], np.float32), face) * sun
                canvas.paint(window, mask, colour.astype(np.float32), SIGN, next_instance(SIGN))

    # ---- cars on the road, far to near, with shadows and windows
    road_width_bottom = right_bottom - left_bottom
    depths = np.sort(rng.uniform(0.12, 0.95, size=rng.integers(1, 5)))
    for d in depths:
        base_y = horizon + d * (1 - horizon)
        lane_pos = rng.uniform(0.15, 0.85)
        cx = edge_at(left_bottom + lane_pos * road_width_bottom, d)
        car_w = (0.28 + rng.uniform(-0.05, 0.08)) * d * 1.1 + 0.01
        car_h = car_w * rng.uniform(0.55, 0.75)
        # shadow on the road under the car
        shadow = canvas.box(cx - car_w * 0.6, cx + car_w * 0.6, base_y - car_h * 0.08, base_y + car_h * 0.12)
        if shadow is not None:
            rows, cols = shadow
            on_road = canvas.label[rows, cols] == ROAD
            canvas.image[rows, cols][on_road] *= 0.45
        window = canvas.box(cx - car_w / 2, cx + car_w / 2, base_y - car_h, base_y)
        if window is None:
            continue
        rows, cols = window
        dx, dy = (x[:, cols] - cx) / (car_w / 2), (base_y - y[rows]) / car_h  # dy: 0 bottom → 1 roof
        body = (np.abs(dx) < 1) & (dy < 0.62) & (dy > 0.08)
        cabin = (np.abs(dx) < 0.75 - 0.35 * (dy - 0.6).clip(0)) & (dy >= 0.55) & (dy < 1.0)
        wheel = ((np.abs(np.abs(dx) - 0.62) / 0.2) ** 2 + ((dy - 0.12) / 0.14) ** 2) < 1
        mask = body | cabin | wheel
        paint_colour = rng.uniform([20, 20, 20], [235, 235, 235]).astype(np.float32)
        if rng.random() < 0.5:
            paint_colour[rng.integers(0, 3)] = rng.uniform(150, 240)
        shade = (1.15 - 0.5 * dy.clip(0, 1) + 0.15 * (dx * (1 if shaded_side else -1)))[..., None]
        colour = paint_colour * sun * shade * tint
        glass = (np.abs(dx) < 0.65 - 0.3 * (dy - 0.6).clip(0)) & (dy > 0.62) & (dy < 0.93)
        colour = np.where(glass[..., None], np.array([40, 55, 70], np.float32) * sun * (1 + 0.6 * (dy - 0.6))[..., None], colour)
        lights = (np.abs(np.abs(dx) - 0.8) < 0.1) & (np.abs(dy - 0.45) < 0.05)
        colour = np.where(lights[..., None], np.array([250, 230, 160], np.float32), colour)
        colour = np.where((wheel & ~body)[..., None], np.array([20, 20, 22], np.float32), colour)
        canvas.paint(window, mask, colour.astype(np.float32), CAR, next_instance(CAR))

    # ---- pedestrians on the pavements, bicyclists at the road edge
    for _ in range(rng.integers(0, 4)):
        cyclist = rng.random() < 0.3
        side = rng.integers(0, 2)
        d = rng.uniform(0.2, 0.95)
        base_y = horizon + d * (1 - horizon)
        where = rng.uniform(0.05, 0.2) if cyclist else rng.uniform(-0.6, -0.1)
        bottom = left_bottom + where * (walk if not cyclist else road_width_bottom) if side == 0 else \
            right_bottom - where * (walk if not cyclist else road_width_bottom)
        px = edge_at(bottom, d)
        tall = 0.32 * d + 0.02
        width_ = tall * (0.55 if cyclist else 0.32)
        window = canvas.box(px - width_, px + width_, base_y - tall, base_y)
        if window is None:
            continue
        rows, cols = window
        dx, dy = (x[:, cols] - px) / width_, (base_y - y[rows]) / tall
        head = (dx / 0.25) ** 2 + ((dy - 0.9) / 0.09) ** 2 < 1
        torso = (np.abs(dx) < 0.32 - 0.1 * (dy - 0.6)) & (dy > 0.45) & (dy < 0.82)
        legs = (np.abs(np.abs(dx) - 0.12) < 0.09) & (dy <= 0.45) & (dy > (0.1 if cyclist else 0.0))
        mask = head | torso | legs
        clothes = rng.uniform([20, 20, 20], [220, 200, 200]).astype(np.float32)
        skin = np.array([rng.uniform(120, 230), rng.uniform(90, 180), rng.uniform(70, 150)], np.float32)
        colour = np.where(head[..., None], skin, clothes * (1.1 - 0.4 * np.abs(dx))[..., None]) * sun * tint
        class_id = PEDESTRIAN
        if cyclist:
            wheels = (np.abs(np.sqrt((np.abs(dx) - 0.55) ** 2 / 0.16 + (dy - 0.18) ** 2 / 0.03) - 1) < 0.25)
            frame = (np.abs(dy - 0.3) < 0.04) & (np.abs(dx) < 0.55)
            mask = mask | wheels | frame
            colour = np.where((wheels | frame)[..., None] & ~(head | torso)[..., None],
                              np.array([30, 30, 35], np.float32), colour)
            class_id = BICYCLIST
        canvas.paint(window, mask, colour.astype(np.float32), class_id, next_instance(class_id))

    # ---- sensor: a little grain, clipped to 8 bits
    image = canvas.image * (1 + 0.04 * rng.standard_normal((height, width, 1)).astype(np.float32))
    return np.clip(image, 0, 255).astype(np.uint8), canvas.label, canvas.instance


class SyntheticStreets(torch.utils.data.Dataset):
    """Procedural scenes as a dataset. Scene i of ``split`` uses seed ``seed·10⁶ + split offset + i``.

    Default lengths: train 2000, val 50, test 50 (the scenes are generated on demand, so any length works).
    """

    spec = CAMVID
    has_instances = True

    def __init__(self, split: str = "train", size: tuple[int, int] = (96, 128), length: int | None = None,
                 seed: int = 0, transform: JointTransform | None = None):
        if split not in SPLIT_OFFSETS:
            raise ValueError(f"synthetic split must be one of {', '.join(SPLIT_OFFSETS)}, got {split!r}")
        self.split, self.size, self.seed = split, tuple(size), seed
        self.length = length or DEFAULT_LENGTHS[split]
        self.transform = transform or JointTransform()
        self.epoch = 0
        self.problems: list[str] = []

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def scene_seed(self, index: int) -> int:
        return self.seed * 1_000_000 + SPLIT_OFFSETS[self.split] + index

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image, label, instance = generate_scene(self.scene_seed(index), *self.size)
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.transform.is_random else None
        image, label, instance = self.transform(image, label, instance, rng)
        return make_sample(image, label, instance, f"synthetic_{self.split}_{index:06d}")
