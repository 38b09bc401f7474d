"""Shared test helpers: the ../shared/data and one-thread fixtures, and tiny on-disk datasets of every layout.

The builders write small PIL images (24×32 by default) into a folder and return what a test needs to know
about them (names, the raw label arrays).  Images encode their label: pixel colour = ``COLOR_OF[raw value]``
so alignment can be checked after loading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

H, W = 24, 32
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data next to the repository; tests using it skip cleanly when it is absent."""
    if not (SHARED_DATA / "camvid").is_dir() or not (SHARED_DATA / "cmp_facade").is_dir():
        pytest.skip(f"{SHARED_DATA} (camvid, cmp_facade) is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def studio_runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny trained runs (SESAME, SPADE with VAE, OASIS) and a colour segmenter, shared by the studio tests."""
    from _studio_runs import make_studio_runs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_studio_runs(tmp_path_factory.mktemp("studio-runs"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture()
def one_thread():
    """Tiny networks and tensors: one intra-op thread is as fast on an idle CPU and 10–15× faster on a busy one
    (OpenMP synchronisation).  Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ writers
def color_of(value: int) -> tuple[int, int, int]:
    """A distinct, exactly recoverable colour for a raw label value (0–255)."""
    value = int(value) & 255
    return (value, (value * 37) % 256, 255 - value)


def image_for(raw: np.ndarray) -> np.ndarray:
    table = np.array([color_of(v) for v in range(256)], dtype=np.uint8)
    return table[np.asarray(raw).astype(np.int64) & 255]


def save_rgb(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), "RGB").save(path)
    return path


def save_index(path: Path, raw: np.ndarray, mode: str = "L") -> Path:
    """An 8-bit index PNG (mode L, or mode P with an arbitrary palette: the indices are the values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(raw, dtype=np.uint8), "L")
    if mode == "P":
        image = Image.fromarray(np.asarray(raw, dtype=np.uint8), "P")
        image.putpalette([c for v in range(256) for c in color_of(v)])
    image.save(path)
    return path


def save_uint16(path: Path, raw: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(raw, dtype=np.uint16)).save(path)
    return path


def blocks(values: list[int], height: int = H, width: int = W) -> np.ndarray:
    """A label map of vertical stripes, one per value (every value is present)."""
    raw = np.zeros((height, width), dtype=np.int64)
    edges = np.linspace(0, width, len(values) + 1).round().astype(int)
    for value, left, right in zip(values, edges[:-1], edges[1:]):
        raw[:, left:right] = value
    return raw


def write_pair(image_path: Path | None, label_path: Path, raw: np.ndarray, mode: str = "L") -> None:
    if image_path is not None:
        save_rgb(image_path, image_for(raw))
    save_index(label_path, raw, mode)


# ------------------------------------------------------------------------------------------------ layouts
def build_camvid(root: Path, split_sizes: dict[str, int] | None = None) -> dict[str, list[np.ndarray]]:
    """SegNet CamVid: SPLIT/*.png + SPLITannot/*.png, values 0–11 (11 = void)."""
    raws: dict[str, list[np.ndarray]] = {}
    for split, count in (split_sizes or {"train": 3, "val": 2}).items():
        raws[split] = []
        for index in range(count):
            raw = blocks([(4 * index + k) % 12 for k in range(4)])
            write_pair(root / split / f"{split}{index:03d}.png", root / f"{split}annot" / f"{split}{index:03d}.png",
                       raw)
            raws[split].append(raw)
    return raws


def build_cmp(root: Path, count: int = 3) -> list[np.ndarray]:
    """CMP Facade base/: cmp_bNNNN.jpg + mode-P png with values 1–12."""
    raws = []
    for index in range(count):
        raw = blocks([1 + (index + k) % 12 for k in range(4)])
        base = root / "base"
        base.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_for(raw)).save(base / f"cmp_b{index + 1:04d}.jpg", quality=95, subsampling=0)
        save_index(base / f"cmp_b{index + 1:04d}.png", raw, mode="P")
        raws.append(raw)
    return raws


def cityscapes_instance(raw: np.ndarray) -> np.ndarray:
    """Cityscapes-style instance ids: labelId*1000 + k for 'car' (26), the labelId elsewhere."""
    instance = raw.astype(np.int64).copy()
    cars = raw == 26
    columns = np.broadcast_to(np.arange(raw.shape[1])[None, :], raw.shape)
    instance[cars] = 26000 + (columns[cars] % 8 >= 4)  # two cars side by side
    return instance


def build_cityscapes(root: Path, names: tuple[str, ...] = ("aachen_000000_000019", "bochum_000000_000313"),
                     split: str = "train") -> dict[str, np.ndarray]:
    """Official tree: leftImg8bit/SPLIT/CITY/X_leftImg8bit.png + gtFine/SPLIT/CITY/X_gtFine_*.png."""
    raws = {}
    for index, name in enumerate(names):
        city = name.split("_")[0]
        raw = blocks([7, 26, 0, 33] if index % 2 == 0 else [26, 8, 23, 1])
        write_pair(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
                   root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", raw)
        save_uint16(root / "gtFine" / split / city / f"{name}_gtFine_instanceIds.png", cityscapes_instance(raw))
        save_rgb(root / "gtFine" / split / city / f"{name}_gtFine_color.png", image_for(raw))  # must be ignored
        raws[name] = raw
    return raws


def flat_instance(raw: np.ndarray, index: int) -> np.ndarray:
    """Instance ids above 255 (16-bit PNG): raw value * 100 + sample index + 1."""
    return raw.astype(np.int64) * 100 + index + 1


def build_flat(root: Path, names: tuple[str, ...], raw_for, split: str = "train", instances: bool = True,
               image_suffix: str = "", label_suffix: str = "", inst_suffix: str = "") -> dict[str, np.ndarray]:
    """pix2pixHD / SPADE flat layout: SPLIT_img/ SPLIT_label/ [SPLIT_inst/]."""
    raws = {}
    for index, name in enumerate(names):
        raw = raw_for(index)
        write_pair(root / f"{split}_img" / f"{name}{image_suffix}.png", root / f"{split}_label" /
                   f"{name}{label_suffix}.png", raw)
        if instances:
            save_uint16(root / f"{split}_inst" / f"{name}{inst_suffix}.png", flat_instance(raw, index))
        raws[name] = raw
    return raws


def build_ade20k(root: Path, count: int = 2, split: str = "training") -> list[np.ndarray]:
    base = root / "ADEChallengeData2016"
    raws = []
    for index in range(count):
        raw = blocks([0, 1, 150, 75 + index])
        name = f"ADE_{split[:5]}_{index + 1:08d}"
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_for(raw)).save(base / "images" / split / f"{name}.jpg", quality=95, subsampling=0)
        save_index(base / "annotations" / split / f"{name}.png", raw)
        raws.append(raw)
    return raws


# three classes in distinct flat colours: a segmenter (or a generator) can tell them apart after a few steps
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.uint8)


def colour_dataset(root: Path, count: int = 8, seed: int = 0, square: int = 10, top_range: int | None = None,
                   left: int | None = None, noise: int = 15) -> Path:
    """Folder layout train/ + val/ of H×W scenes coloured by class (+ uniform noise in [-noise, noise)): class 0,
    a stripe of class 1 from a random column on, and a ``square`` of class 2 at a random row below ``top_range``
    (default: anywhere) and at column ``left`` (None: a random one)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for index in range(count):
            label = np.zeros((H, W), np.uint8)
            label[:, int(rng.integers(8, 24)):] = 1
            top = int(rng.integers(0, H - square if top_range is None else top_range))
            column = int(rng.integers(0, W - square)) if left is None else left
            label[top:top + square, column:column + square] = 2
            jitter = rng.integers(-noise, noise, (H, W, 3))
            image = np.clip(COLOURS[label].astype(int) + jitter, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{split}_{index}.png")
            Image.fromarray(label).save(root / split / "labels" / f"{split}_{index}.png")
    return root


def build_folder(root: Path, count: int = 2, values=(0, 1, 2, 255), with_images: bool = True) -> list[np.ndarray]:
    raws = []
    for index in range(count):
        raw = blocks(list(values))
        write_pair(root / "images" / f"scene{index}.png" if with_images else None,
                   root / "labels" / f"scene{index}.png", raw)
        raws.append(raw)
    return raws
