"""Datasets: one sample format for every layout, plus the procedural street scenes (the default data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..labels import Palette, get_scheme
from .base import DatasetError, PairDataset, PairFiles, ScanResult, make_sample
from .layouts import DATASET_KINDS, LAYOUTS, folder_spec, get_layout
from .transforms import JointTransform


@dataclass
class DataConfig:
    """Which data a run reads and how samples are shaped. ``size`` is (height, width)."""

    dataset: str = "synthetic"
    path: str | None = None
    split: str | None = None  # None: the layout's default split (CMP: all, others: train)
    size: tuple[int, int] | None = (96, 128)
    resize: str = "exact"  # exact | short | none  (see JointTransform)
    crop: str = "center"  # center | random
    flip: bool = False
    scale_jitter: float = 0.0
    palette: str | None = None  # TSV palette for colour-coded label PNGs (folder datasets)
    ignore_id: int | None = None  # the palette id that means void (folder datasets)
    scheme: str | None = None  # override the layout's label scheme, e.g. cityscapes-labelids
    on_problem: str = "strict"  # strict | skip
    length: int | None = None  # synthetic only: number of scenes in the split
    seed: int = 0


def open_dataset(config: DataConfig, split: str | None = None, augment: bool = True, setting: str = "data.path"):
    """Build the dataset a ``DataConfig`` describes; ``split`` overrides ``config.split``.

    ``augment=False`` keeps the resize but removes random crops/flips (validation, caching, evaluation).
    ``setting`` names the config key that holds the path, so a missing folder's error says what to override.
    """
    split = split or config.split
    transform = JointTransform(
        size=tuple(config.size) if config.size else None,
        resize=config.resize,
        crop=config.crop if augment else "center",
        flip=config.flip and augment,
        scale_jitter=config.scale_jitter if augment else 0.0,
    )
    if config.dataset == "synthetic":
        from .synthetic import SyntheticStreets

        if config.size is None:
            raise DatasetError("synthetic data needs data.size=(H,W)")
        kwargs = {"length": config.length} if config.length else {}
        return SyntheticStreets(split=split or "train", size=tuple(config.size), seed=config.seed,
                                transform=JointTransform(flip=transform.flip), **kwargs)
    layout = get_layout(config.dataset)
    if config.path is None:
        raise DatasetError(f"dataset '{config.dataset}' needs a path (data.path=… or --data PATH)")
    root = Path(config.path).expanduser()
    if not root.exists():
        where = f" (relative to {Path.cwd()})" if not root.is_absolute() else ""
        raise DatasetError(f"{root}: dataset folder does not exist{where}; set {setting}=FOLDER")
    split = split or layout.default_split
    if split not in layout.splits:
        raise DatasetError(f"{root}: split {split!r} is not one of {', '.join(layout.splits)} for '{layout.name}'")
    scan = layout.find(root, split)
    palette = Palette.from_tsv(config.palette) if config.palette else None
    if layout.name == "folder":
        spec, palette = folder_spec(root, split, palette, scan.pairs, config.ignore_id)
    else:
        spec = get_scheme(config.scheme or layout.scheme)
    return PairDataset(scan, spec, transform, palette=palette, seed=config.seed, on_problem=config.on_problem,
                       source=f"{root} ({layout.name}, {split})")


__all__ = [
    "DATASET_KINDS", "LAYOUTS", "DataConfig", "DatasetError", "JointTransform", "PairDataset", "PairFiles",
    "ScanResult", "make_sample", "open_dataset",
]
