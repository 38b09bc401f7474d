"""The SIMS memory bank M (§3.1): every training layout cut into segments, stored so that it loads lazily.

A bank is a directory::

    bank.json            format, version, label spec, image size, build settings, source names, counts,
                         where the ordering labels came from, build time
    segments.npy         (N,) structured records: class, source image, box, context box, area, byte offsets of
                         the crops, Lab and RGB colour statistics of the segment
    pixels.bin           packed variable-size crops: per segment (h, w, 4) uint8 = RGB + mask·255 inside its box
                         (the colour image with the other pixels zeroed, and the binary mask)
    contexts.bin         packed (h', w') uint8 label crops inside the box enlarged by 25 % (clipped; 255 = void)
    grid_mask.npy        (N, G²/64) uint64  mask bits, box geometry      ┐ fixed-size, used by retrieval
    grid_context.npy     (N, C, G²/64)      context bits per class, box  │ (inverseg.sims.retrieval)
    grid_image_mask.npy  (N, G²/64)         mask bits, image geometry    │
    grid_image_context.npy (N, C, G²/64)    context bits, image geometry │
    grid_counts.npy      (N, 4) int32       set cells of the four grids  ┘
    layouts.npy          (M, H, W) uint8    the training layouts (255 = void), for the ordering network
    pairs.npy            (P,) adjacent segment pairs with the index of the front one and the label's source

Every ``.npy`` is opened with ``mmap_mode="r"`` and the ``.bin`` blobs with ``np.memmap``: opening a bank of
any size costs only the JSON; crops are read on demand.  Building streams each array to disk (no per-segment
state is kept in RAM), shows a progress bar and writes into a temporary directory renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from ..errors import InversegError
from ..labels import LabelSpec
from .colour import rgb_to_lab_numpy, segment_stats
from .segments import (VOID, adjacent_pairs, class_ranks, clip_box, decompose, depth_front, enlarge_box,
                       heuristic_front, min_area_pixels, segment_grids)

FORMAT = "inverseg-sims-bank"
VERSION = 1

SEGMENT_DTYPE = np.dtype([
    ("class_id", "<i2"), ("source", "<i4"), ("box", "<i4", (4,)), ("context_box", "<i4", (4,)), ("area", "<i4"),
    ("pixels", "<i8"), ("context", "<i8"),
    ("lab_mean", "<f4", (3,)), ("lab_std", "<f4", (3,)), ("rgb_mean", "<f4", (3,)), ("rgb_std", "<f4", (3,)),
])
PAIR_DTYPE = np.dtype([("image", "<i4"), ("a", "<i4"), ("b", "<i4"), ("front", "i1"), ("from_depth", "i1")])
GRID_ARRAYS = ("grid_mask", "grid_context", "grid_image_mask", "grid_image_context")


class BankError(InversegError, RuntimeError):
    """A bank is missing, corrupt or does not fit the model; the message says which and how to fix it."""


@dataclass
class BankSettings:
    """How layouts are cut into segments and represented (shared by the bank and the queries)."""

    grid: int = 32  # G: masks/contexts are compared on G×G cells (must be divisible by 8)
    supersample: int = 4  # each cell is the majority of s×s nearest samples
    context_enlarge: float = 0.25  # paper: the context is the bounding box enlarged by 25 %
    min_area: float = 0.0005  # fraction of the image; smaller components are not stored (official: all kept)
    connectivity: int = 8  # MATLAB bwlabel default, as in *_connect_component_mask.m
    merge_thin: tuple[str, ...] = ()  # official Cityscapes: ["pole", "traffic light", "traffic sign"]
    order_labels: str = "auto"  # auto (depth if the data has it, else heuristic) | depth | heuristic
    class_ranks: dict[str, int] = field(default_factory=dict)  # overrides of the heuristic's class layers

    def validate(self) -> None:
        if self.grid % 8 or self.grid < 8:
            raise ValueError(f"bank grid must be a positive multiple of 8 (bits pack into 64-bit words), got "
                             f"{self.grid}")
        if self.order_labels not in ("auto", "depth", "heuristic"):
            raise ValueError(f"order_labels must be auto, depth or heuristic, got {self.order_labels!r}")
        if self.context_enlarge < 0:
            raise ValueError(f"context_enlarge must be ≥ 0, got {self.context_enlarge}")

    def to_dict(self) -> dict:
        """The segment settings only (a subclass may add fields such as a path), JSON-friendly."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(BankSettings)}

    def thin_ids(self, spec: LabelSpec) -> tuple[int, ...]:
        names = [name.lower() for name in spec.class_names]
        missing = [name for name in self.merge_thin if name.lower() not in names]
        if missing:
            raise ValueError(f"merge_thin names {missing} are not classes of '{spec.name}' "
                             f"({', '.join(spec.class_names)})")
        return tuple(names.index(name.lower()) for name in self.merge_thin)

    def decompose(self, label: np.ndarray, spec: LabelSpec):
        """The segments of a layout with these settings (bank and query use this one function)."""
        return decompose(label, spec.num_classes, min_area=min_area_pixels(self.min_area, label.shape),
                         connectivity=self.connectivity, thin_classes=self.thin_ids(spec))

    def grids(self, decomposition, spec: LabelSpec):
        return segment_grids(decomposition, spec.num_classes, grid=self.grid,
                             context_enlarge=1.0 + self.context_enlarge, supersample=self.supersample)


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------
class MemoryBank:
    """A built bank, opened lazily: arrays are memory maps, crops are read when asked for."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_file = self.root / "bank.json"
        if not meta_file.is_file():
            raise BankError(f"{self.root}: not a SIMS memory bank (no bank.json); build one with "
                            f"'inverseg bank build --dataset KIND --data PATH --out {self.root}'")
        self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise BankError(f"{self.root}: bank format {self.meta.get('format')} v{self.meta.get('version')} is not "
                            f"{FORMAT} v{VERSION}; rebuild it")
        self.spec = LabelSpec.from_dict(self.meta["spec"])
        self.image_size = tuple(self.meta["image_size"])
        self.settings = BankSettings(**{**self.meta["settings"],
                                        "merge_thin": tuple(self.meta["settings"]["merge_thin"])})
        self._arrays: dict[str, np.ndarray] = {}
        self._by_class: dict[int, np.ndarray] | None = None

    @classmethod
    def open(cls, root: str | Path) -> "MemoryBank":
        return cls(root)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            if name in ("pixels", "contexts"):
                path = self.root / f"{name}.bin"
                self._arrays[name] = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size \
                    else np.zeros(0, np.uint8)
            else:
                self._arrays[name] = np.load(self.root / f"{name}.npy", mmap_mode="r")
        return self._arrays[name]

    # ------------------------------------------------------------------ sizes and tables
    def __len__(self) -> int:
        return int(self.meta["num_segments"])

    @property
    def num_images(self) -> int:
        return int(self.meta["num_images"])

    @property
    def grid(self) -> int:
        return self.settings.grid

    @property
    def segments(self) -> np.ndarray:
        return self._array("segments")

    @property
    def classes(self) -> np.ndarray:
        return np.asarray(self.segments["class_id"], dtype=np.int64)

    @property
    def pairs(self) -> np.ndarray:
        return self._array("pairs")

    @property
    def layouts(self) -> np.ndarray:
        return self._array("layouts")

    def grids(self, name: str) -> np.ndarray:
        if name not in (*GRID_ARRAYS, "grid_counts"):
            raise KeyError(name)
        return self._array(name)

    def indices_of_class(self, class_id: int) -> np.ndarray:
        """Bank indices of the segments of one class (cached)."""
        if self._by_class is None:
            classes = self.classes
            order = np.argsort(classes, kind="stable")
            bounds = np.searchsorted(classes[order], np.arange(self.spec.num_classes + 1))
            self._by_class = {c: order[bounds[c]:bounds[c + 1]] for c in range(self.spec.num_classes)}
        return self._by_class.get(int(class_id), np.zeros(0, np.int64))

    # ------------------------------------------------------------------ crops
    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(h, w, 3) uint8 colour with the other pixels zeroed, and the (h, w) bool mask, inside the box."""
        record = self.segments[index]
        top, left, bottom, right = (int(v) for v in record["box"])
        size = (bottom - top) * (right - left) * 4
        start = int(record["pixels"])
        block = np.asarray(self._array("pixels")[start:start + size]).reshape(bottom - top, right - left, 4)
        return block[..., :3], block[..., 3] > 127

    def context_crop(self, index: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """(h', w') uint8 labels (255 = void) inside the enlarged, clipped box, and that box."""
        record = self.segments[index]
        box = tuple(int(v) for v in record["context_box"])
        size = (box[2] - box[0]) * (box[3] - box[1])
        start = int(record["context"])
        labels = np.asarray(self._array("contexts")[start:start + size]).reshape(box[2] - box[0], box[3] - box[1])
        return labels, box  # type: ignore[return-value]

    def box(self, index: int) -> tuple[int, int, int, int]:
        return tuple(int(v) for v in self.segments[index]["box"])  # type: ignore[return-value]

    def source_name(self, index: int) -> str:
        return self.meta["sources"][int(self.segments[index]["source"])]

    # ------------------------------------------------------------------ checks
    def check_compatible(self, spec: LabelSpec, image_size: tuple[int, int], settings: BankSettings | None = None
                         ) -> None:
        """Raise BankError when the bank was built for other classes, another size or other segment settings."""
        if tuple(spec.class_names) != tuple(self.spec.class_names):
            raise BankError(f"{self.root}: bank classes ({', '.join(self.spec.class_names)}) differ from the model's "
                            f"({', '.join(spec.class_names)}); build a bank from the same dataset kind")
        if tuple(image_size) != self.image_size:
            raise BankError(f"{self.root}: bank was built at {self.image_size[0]}×{self.image_size[1]} but the model "
                            f"works at {image_size[0]}×{image_size[1]}; rebuild with --size "
                            f"{image_size[0]}x{image_size[1]}")
        if settings is not None:
            mine, theirs = settings.to_dict(), self.settings.to_dict()
            different = sorted(k for k in mine if mine[k] != theirs.get(k))
            if different:
                raise BankError(f"{self.root}: bank built with different settings ({', '.join(different)}: "
                                f"{[theirs.get(k) for k in different]} vs {[mine[k] for k in different]}); rebuild "
                                f"it or point bank.path elsewhere")

    def describe(self) -> dict:
        counts = np.bincount(self.classes, minlength=self.spec.num_classes) if len(self) else \
            np.zeros(self.spec.num_classes, np.int64)
        return {
            "path": str(self.root),
            "segments": len(self),
            "images": self.num_images,
            "pairs": int(self.meta["num_pairs"]),
            "image_size": list(self.image_size),
            "grid": self.grid,
            "order_labels": self.meta["order_labels"],
            "per_class": {name: int(n) for name, n in zip(self.spec.class_names, counts)},
            "bytes_on_disk": sum(p.stat().st_size for p in self.root.iterdir() if p.is_file()),
            "source": self.meta.get("source", ""),
        }


# ---------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------
class _RowWriter:
    """Append fixed-shape rows to a raw file, then turn it into a memory-mappable .npy."""

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...] = ()):
        self.path, self.dtype, self.row_shape = path, np.dtype(dtype), tuple(row_shape)
        self.raw = path.with_suffix(".raw")
        self.stream = open(self.raw, "wb")
        self.rows = 0

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: row shape {rows.shape[1:]} != {self.row_shape}")
        self.stream.write(rows.tobytes())
        self.rows += len(rows)

    def finish(self, chunk: int = 65536) -> None:
        self.stream.close()
        out = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=(self.rows, *self.row_shape))
        if self.rows:
            raw = np.memmap(self.raw, dtype=self.dtype, mode="r", shape=(self.rows, *self.row_shape))
            for start in range(0, self.rows, chunk):
                out[start:start + chunk] = raw[start:start + chunk]
            del raw
        out.flush()
        del out
        self.raw.unlink()


def _image_uint8(image) -> np.ndarray:
    """(3, H, W) [-1, 1] tensor → (H, W, 3) uint8, in numpy (cheap even when the CPU is busy)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return np.round((np.clip(array, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(1, 2, 0)


def _depth_of(sample: dict) -> tuple[np.ndarray | None, bool]:
    """(map, is_disparity) when a sample carries depth ("depth": larger = farther) or "disparity"."""
    for key, disparity in (("depth", False), ("disparity", True)):
        if key in sample:
            value = sample[key]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            return np.asarray(array, dtype=np.float64).reshape(array.shape[-2:]), disparity
    return None, False


def build_bank(dataset, out: str | Path, settings: BankSettings, spec: LabelSpec | None = None,
               source: str = "", overwrite: bool = False, progress: bool = True,
               limit: int | None = None) -> MemoryBank:
    """Cut every sample of ``dataset`` (dicts with image, label, name[, depth | disparity]) into a bank at ``out``.

    Samples must all have one size (the model's).  ``limit`` keeps the first N samples (tests, quick looks).
    """
    settings.validate()
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise BankError(f"{out} already exists; pass overwrite=True (--overwrite) to rebuild it")
        shutil.rmtree(out)
    spec = spec or dataset.spec
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise BankError("cannot build a memory bank from an empty dataset")
    first = dataset[0]
    height, width = first["label"].shape[-2:]
    num_classes, words = spec.num_classes, settings.grid * settings.grid // 64
    thin = settings.thin_ids(spec)  # validates the names before any work
    ranks = class_ranks(spec.class_names, settings.class_ranks)
    temporary = out.parent / f".{out.name}.building-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    started = time.monotonic()
    try:
        records = _RowWriter(temporary / "segments.npy", SEGMENT_DTYPE)
        grid_writers = {
            "grid_mask": _RowWriter(temporary / "grid_mask.npy", np.uint64, (words,)),
            "grid_context": _RowWriter(temporary / "grid_context.npy", np.uint64, (num_classes, words)),
            "grid_image_mask": _RowWriter(temporary / "grid_image_mask.npy", np.uint64, (words,)),
            "grid_image_context": _RowWriter(temporary / "grid_image_context.npy", np.uint64, (num_classes, words)),
            "grid_counts": _RowWriter(temporary / "grid_counts.npy", np.int32, (4,)),
        }
        pair_writer = _RowWriter(temporary / "pairs.npy", PAIR_DTYPE)
        layouts = np.lib.format.open_memmap(temporary / "layouts.npy", mode="w+", dtype=np.uint8,
                                            shape=(count, height, width))
        pixel_stream = open(temporary / "pixels.bin", "wb")
        context_stream = open(temporary / "contexts.bin", "wb")
        pixel_offset = context_offset = 0
        total = 0
        sources: list[str] = []
        depth_pairs = heuristic_pairs = 0
        use_depth = settings.order_labels in ("auto", "depth")
        indices: Iterable[int] = range(count)
        if progress:
            indices = tqdm(indices, desc="bank build", unit="image", dynamic_ncols=True)
        for image_index in indices:
            sample = first if image_index == 0 else dataset[image_index]
            label = sample["label"].cpu().numpy() if isinstance(sample["label"], torch.Tensor) \
                else np.asarray(sample["label"])
            if label.shape != (height, width):
                raise BankError(f"sample {sample.get('name', image_index)} is {label.shape[1]}×{label.shape[0]}, "
                                f"the first was {width}×{height}; build the bank at one size (--size HxW)")
            sources.append(str(sample.get("name", image_index)))
            valid = (label >= 0) & (label < num_classes)
            layouts[image_index] = np.where(valid, label, VOID).astype(np.uint8)
            pixels = _image_uint8(sample["image"])
            decomposition = decompose(label, num_classes, min_area=min_area_pixels(settings.min_area, label.shape),
                                      connectivity=settings.connectivity, thin_classes=thin)
            grids = segment_grids(decomposition, num_classes, grid=settings.grid,
                                  context_enlarge=1.0 + settings.context_enlarge, supersample=settings.supersample)
            rows = np.zeros(len(decomposition.segments), SEGMENT_DTYPE)
            count_here = len(decomposition.segments)
            rows["lab_mean"], rows["lab_std"] = segment_stats(rgb_to_lab_numpy(pixels), decomposition.component_map,
                                                              count_here)
            rows["rgb_mean"], rows["rgb_std"] = segment_stats(pixels / 127.5 - 1, decomposition.component_map,
                                                              count_here)
            for row, segment in zip(rows, decomposition.segments):
                top, left, bottom, right = segment.box
                mask = decomposition.crop_mask(segment.index)
                crop = np.concatenate([pixels[top:bottom, left:right] * mask[..., None],
                                       (mask * 255).astype(np.uint8)[..., None]], axis=2).astype(np.uint8)
                context_box = clip_box(enlarge_box(segment.box, 1.0 + settings.context_enlarge), label.shape)
                context = layouts[image_index][context_box[0]:context_box[2], context_box[1]:context_box[3]]
                pixel_stream.write(crop.tobytes())
                context_stream.write(np.ascontiguousarray(context).tobytes())
                row["class_id"], row["source"], row["area"] = segment.class_id, image_index, segment.area
                row["box"], row["context_box"] = segment.box, context_box
                row["pixels"], row["context"] = pixel_offset, context_offset
                pixel_offset += crop.size
                context_offset += context.size
            records.write(rows)
            for name, values in (("grid_mask", grids.mask), ("grid_context", grids.context),
                                 ("grid_image_mask", grids.image_mask), ("grid_image_context", grids.image_context),
                                 ("grid_counts", grids.counts)):
                grid_writers[name].write(values)
            # adjacent pairs and which one is in front (depth when the data has it, else the layout heuristic)
            depth, disparity = _depth_of(sample) if use_depth else (None, False)
            if settings.order_labels == "depth" and depth is None:
                raise BankError(f"order_labels=depth but sample {sources[-1]} has no 'depth' or 'disparity'; use "
                                f"order_labels=auto or heuristic")
            pair_rows = []
            for a, b in adjacent_pairs(decomposition.component_map):
                front = depth_front(decomposition.component_map, a, b, depth, disparity=disparity) \
                    if depth is not None else None
                from_depth = front is not None
                if front is None:
                    front = heuristic_front(decomposition.segments[a], decomposition.segments[b], ranks)
                depth_pairs += from_depth
                heuristic_pairs += not from_depth
                pair_rows.append((image_index, total + a, total + b, front, from_depth))
            if pair_rows:
                pair_writer.write(np.array(pair_rows, dtype=PAIR_DTYPE))
            total += len(decomposition.segments)
        pixel_stream.close()
        context_stream.close()
        layouts.flush()
        del layouts
        for writer in (records, *grid_writers.values(), pair_writer):
            writer.finish()
        if depth_pairs and heuristic_pairs:
            order_labels = f"depth ({depth_pairs} pairs) + heuristic fallback ({heuristic_pairs} pairs)"
        elif depth_pairs:
            order_labels = "depth"
        else:
            order_labels = "heuristic: class layers, then lower boundary lower in the image = nearer, then area"
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "spec": spec.to_dict(),
            "image_size": [int(height), int(width)],
            "settings": settings.to_dict(),
            "num_segments": total,
            "num_images": count,
            "num_pairs": depth_pairs + heuristic_pairs,
            "order_labels": order_labels,
            "class_ranks": {name: int(r) for name, r in zip(spec.class_names, ranks)},
            "sources": sources,
            "source": source,
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (temporary / "bank.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return MemoryBank(out)


__all__ = ["BankError", "BankSettings", "GRID_ARRAYS", "MemoryBank", "PAIR_DTYPE", "SEGMENT_DTYPE", "build_bank"]
