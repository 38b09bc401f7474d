"""Where each dataset keeps its files. A layout turns (root, split) into image/label pairs and names its labels.

Layouts (implementations.md §9):
  camvid      SegNet layout: train/ trainannot/, val/ valannot/, test/ testannot/           (CamVid, 11 + void)
  cmp         base/cmp_bNNNN.jpg + .png; no official split (see ``CMP_VAL_EVERY``)         (12 classes)
  cityscapes  leftImg8bit/SPLIT/CITY/*_leftImg8bit.png + gtFine/SPLIT/CITY/*_gtFine_labelIds.png
              (+ *_instanceIds.png), or pix2pixHD's flat SPLIT_img/ SPLIT_label/ SPLIT_inst/   (19 trainIds)
  ade20k      ADEChallengeData2016/images|annotations/training|validation                  (150 classes)
  cocostuff   SPLIT_img/ SPLIT_label/ [SPLIT_inst/]                                         (182 classes)
  folder      images/ + labels/ [+ instances/], matching stems, optionally under SPLIT/; index PNGs, or
              colour-coded PNGs with a palette (--palette FILE, or classes.tsv in the folder)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InversegError
from ..labels import LabelSpec, Palette, guess_ignore_id
from ..labels.spec import spread_colors
from .base import PairFiles, ScanResult, list_files, pair_by_stem, read_label_values

# CMP Facade has no official split: every 10th pair (sorted by name) is validation (38 of 378).
CMP_VAL_EVERY = 10


@dataclass(frozen=True)
class Layout:
    name: str
    scheme: str
    splits: tuple[str, ...]
    default_split: str
    find: Callable[[Path, str], ScanResult]
    has_instances: bool = False
    help: str = ""


def _missing(root: Path, expected: str) -> ScanResult:
    return ScanResult([], [f"{root}: expected {expected}, found nothing there"])


def find_camvid(root: Path, split: str) -> ScanResult:
    images, labels = root / split, root / f"{split}annot"
    if not images.is_dir() or not labels.is_dir():
        return _missing(root, f"folders {split}/ and {split}annot/ (SegNet CamVid layout)")
    return pair_by_stem(list_files(images), list_files(labels, (".png",)), str(root))


def find_cmp(root: Path, split: str) -> ScanResult:
    base = root / "base" if (root / "base").is_dir() else root
    images = list_files(base, (".jpg", ".jpeg"))
    labels = list_files(base, (".png",))
    if not images and not labels:
        return _missing(root, "base/cmp_bNNNN.jpg + base/cmp_bNNNN.png (CMP Facade layout)")
    scan = pair_by_stem(images, labels, str(root))
    if split != "all":
        keep = (lambda i: i % CMP_VAL_EVERY == 0) if split == "val" else (lambda i: i % CMP_VAL_EVERY != 0)
        scan.pairs = [p for i, p in enumerate(scan.pairs) if keep(i)]
    return scan


def find_cityscapes(root: Path, split: str) -> ScanResult:
    if (root / "gtFine").is_dir() or (root / "leftImg8bit").is_dir():
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        images = list_files(image_dir, (".png",), recursive=True)
        labels = [p for p in list_files(label_dir, (".png",), recursive=True) if p.stem.endswith("_gtFine_labelIds")]
        instances = {p.stem[: -len("_gtFine_instanceIds")]: p for p in
                     list_files(label_dir, (".png",), recursive=True) if p.stem.endswith("_gtFine_instanceIds")}
        if not images:
            return _missing(root, f"leftImg8bit/{split}/CITY/*_leftImg8bit.png")
    elif (root / f"{split}_label").is_dir():
        images = list_files(root / f"{split}_img")
        labels = list_files(root / f"{split}_label", (".png",))
        instances = {_cityscapes_key(p.stem): p for p in list_files(root / f"{split}_inst", (".png",))}
    else:
        return _missing(root, f"the Cityscapes tree (leftImg8bit/, gtFine/) or pix2pixHD's {split}_img/ "
                              f"{split}_label/ {split}_inst/")
    scan = pair_by_stem(
        [p.with_name(_cityscapes_key(p.stem) + p.suffix) for p in images],
        [p.with_name(_cityscapes_key(p.stem) + p.suffix) for p in labels], str(root),
    )
    # pair_by_stem matched on the shared key; put the real file names back and attach instance maps
    real_images = {_cityscapes_key(p.stem): p for p in images}
    real_labels = {_cityscapes_key(p.stem): p for p in labels}
    scan.pairs = [
        PairFiles(real_images[p.name], real_labels[p.name], instances.get(p.name), p.name) for p in scan.pairs
    ]
    scan.problems = [_restore_name(problem, real_images, real_labels) for problem in scan.problems]
    return scan


def _cityscapes_key(stem: str) -> str:
    for suffix in ("_leftImg8bit", "_gtFine_labelIds", "_gtFine_instanceIds", "_gtFine_color"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _restore_name(problem: str, images: dict, labels: dict) -> str:
    for mapping in (images, labels):
        for key, path in mapping.items():
            placeholder = str(path.with_name(key + path.suffix))
            if problem.startswith(placeholder + ":"):
                return str(path) + problem[len(placeholder):]
    return problem


def find_ade20k(root: Path, split: str) -> ScanResult:
    """ADEChallengeData2016 images + annotations, and the Places Challenge 2017 instance masks when present
    (``annotations_instance/<folder>/``, beside ``annotations/`` or in the root; R = category, G = instance id)."""
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    folder = {"train": "training", "val": "validation"}.get(split, split)
    images = list_files(base / "images" / folder, (".jpg", ".jpeg", ".png"))
    labels = list_files(base / "annotations" / folder, (".png",))
    if not images and not labels:
        return _missing(root, f"ADEChallengeData2016/images/{folder}/ and annotations/{folder}/")
    scan = pair_by_stem(images, labels, str(root))
    for instance_root in (base / "annotations_instance", root / "annotations_instance"):
        instances = {p.stem: p for p in list_files(instance_root / folder, (".png",))}
        if instances:
            scan.pairs = [PairFiles(p.image, p.label, instances.get(p.name), p.name, instance_channel=1)
                          for p in scan.pairs]
            break
    return scan


def find_cocostuff(root: Path, split: str) -> ScanResult:
    if not (root / f"{split}_label").is_dir():
        return _missing(root, f"{split}_img/ {split}_label/ [{split}_inst/] (COCO-Stuff layout of SPADE)")
    scan = pair_by_stem(list_files(root / f"{split}_img"), list_files(root / f"{split}_label", (".png",)),
                        str(root))
    instances = {p.stem: p for p in list_files(root / f"{split}_inst", (".png",))}
    if instances:
        scan.pairs = [PairFiles(p.image, p.label, instances.get(p.name), p.name) for p in scan.pairs]
    return scan


def folder_base(root: Path, split: str) -> Path:
    return root / split if (root / split / "labels").is_dir() else root


def find_folder(root: Path, split: str) -> ScanResult:
    base = folder_base(root, split)
    if not (base / "labels").is_dir():
        return _missing(root, "labels/ (and images/) folders with matching file names")
    labels = list_files(base / "labels", (".png", ".bmp", ".tif", ".tiff"))
    if (base / "images").is_dir():
        scan = pair_by_stem(list_files(base / "images"), labels, str(root))
    else:  # label-only folder: synthesis inputs
        scan = ScanResult([PairFiles(None, p, None, p.stem) for p in labels])
    instances = {p.stem: p for p in list_files(base / "instances", (".png",))}
    if instances:
        scan.pairs = [PairFiles(p.image, p.label, instances.get(p.name), p.name) for p in scan.pairs]
    return scan


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("camvid", "camvid", ("train", "val", "test"), "train", find_camvid, help="SegNet CamVid"),
        Layout("cmp", "cmp", ("all", "train", "val"), "all", find_cmp, help="CMP Facade base"),
        Layout("cityscapes", "cityscapes", ("train", "val", "test"), "train", find_cityscapes, True, "Cityscapes"),
        Layout("ade20k", "ade20k", ("train", "val"), "train", find_ade20k, help="ADE20K SceneParsing"),
        Layout("cocostuff", "cocostuff", ("train", "val"), "train", find_cocostuff, True, "COCO-Stuff"),
        Layout("folder", "", ("train", "val", "test"), "train", find_folder, help="images/ + labels/"),
    )
}
DATASET_KINDS = ("synthetic", *LAYOUTS)


def get_layout(kind: str) -> Layout:
    try:
        return LAYOUTS[kind]
    except KeyError:
        raise KeyError(f"unknown dataset kind {kind!r}; known: {', '.join(DATASET_KINDS)}") from None


# Without a palette the class count is inferred from the values; a stray huge value (a broken 32-bit file) must
# not create millions of classes.  Datasets with more classes than this list them in a palette.
MAX_INFERRED_CLASSES = 4096


def folder_spec(root: Path, split: str, palette: Palette | None, pairs: list[PairFiles],
                ignore_id: int | None = None) -> tuple[LabelSpec, Palette | None]:
    """The labels of a ``folder`` dataset: from --palette, else classes.tsv in the folder, else the values.

    Without a palette the label PNGs are index maps; the classes are 0…max value found (255 = ignore), named
    class_0… — a warning-free fallback that keeps checkpoints usable, recorded in the run config.
    """
    if palette is None:
        for candidate in (folder_base(root, split) / "classes.tsv", root / "classes.tsv"):
            if candidate.is_file():
                palette = Palette.from_tsv(candidate)
                break
    if palette is not None:
        chosen_ignore = ignore_id if ignore_id is not None else guess_ignore_id(palette)
        return palette.to_spec(name=f"folder:{root.name}", ignore_id=chosen_ignore), palette
    largest = 0
    for pair in pairs[:200]:
        try:
            values = np.unique(read_label_values(pair.label))
        except InversegError:  # undecodable: reported with the file name when the sample is read
            continue
        values = values[(values != (255 if ignore_id is None else ignore_id)) & (values < MAX_INFERRED_CLASSES)]
        if len(values):  # larger values (a broken or instance-encoded file) are reported when the sample is read
            largest = max(largest, int(values.max()))
    ignore = 255 if ignore_id is None else ignore_id
    ids = tuple(i for i in range(max(largest, ignore if ignore < 255 else 0) + 1) if i != ignore)
    generated = Palette(ids=ids + (ignore,), names=tuple(f"class_{i}" for i in ids) + ("void",),
                        colors=spread_colors(len(ids), seed=len(ids)) + ((0, 0, 0),), source=str(root))
    spec = generated.to_spec(name=f"folder:{root.name}", ignore_id=ignore)
    return spec, None
