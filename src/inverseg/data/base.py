"""One dataset interface for every layout: a sample is a dict

    image     float32 (3,H,W) in [-1, 1]
    label     int64   (H,W)   class ids 0…N-1 or the spec's ignore index
    instance  int64   (H,W)   instance ids (only for datasets that have them)
    name      str             file stem, used to name outputs

A layout module only finds the file pairs (``PairFiles``) and names the ``LabelSpec``; reading, validation,
problem reporting and the joint transforms live here once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InversegError
from ..labels import LabelError, LabelSpec, Palette
from .transforms import JointTransform

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(InversegError, RuntimeError):
    """A dataset cannot be used as asked (strict mode, or nothing usable). One line, naming the file."""


@dataclass(frozen=True)
class PairFiles:
    image: Path | None  # None for label-only collections (synthesis inputs)
    label: Path
    instance: Path | None = None
    name: str = ""
    instance_channel: int | None = None  # colour instance maps: the channel that holds the ids (ADE20K: 1 = G)


@dataclass
class ScanResult:
    pairs: list[PairFiles]
    problems: list[str] = field(default_factory=list)


# Formats and modes --------------------------------------------------------------------------------------------
INDEX_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")  # one integer value per pixel
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")  # lossy codecs change label values at class borders (WebP may be lossless)


def max_pixels() -> int:
    """Largest image accepted (width × height): PIL's decompression-bomb limit, or ``INVERSEG_MAX_PIXELS``."""
    return int(os.environ.get("INVERSEG_MAX_PIXELS", Image.MAX_IMAGE_PIXELS or 89_478_485))


def open_image(path: str | Path, what: str = "image") -> Image.Image:
    """Open and fully decode one image file, or raise a one-line ``DatasetError`` naming the file and the fix.

    Every failure a user can meet ends here: missing, empty, a folder, unreadable, a symlink loop, not an image,
    truncated or corrupt, or so large that decoding it would exhaust memory (a decompression bomb).  Decoders raise
    many exception types on hostile bytes (``SyntaxError``, ``struct.error``, ``zlib.error`` …); all of them mean
    "this file cannot be decoded", so the decoding step turns any exception into the same one-line error.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} file not found; fix: check the path") from None
    except OSError as error:  # ELOOP (symlink loop), ENAMETOOLONG, EACCES on a parent folder …
        raise DatasetError(f"{path}: cannot access the {what} file ({error.strerror or error}); "
                           f"fix: check the path and its permissions") from None
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, not an {what} file; fix: pass a PNG/JPEG file")
    if size == 0:
        raise DatasetError(f"{path}: {what} file is empty (0 bytes); fix: re-export or remove it")
    try:
        stream = open(path, "rb")
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the {what} file ({error.strerror or error}); "
                           f"fix: check its permissions") from None
    with stream:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(stream)
                width, height = image.size
                if width * height > max_pixels():
                    raise DatasetError(
                        f"{path}: {what} is {width}×{height} = {width * height:,} pixels, more than the limit of "
                        f"{max_pixels():,} (a decompression bomb?); fix: resize it, or raise INVERSEG_MAX_PIXELS")
                if width == 0 or height == 0:
                    raise DatasetError(f"{path}: {what} has no pixels ({width}×{height}); fix: re-export it")
                image.load()
        except DatasetError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise DatasetError(f"{path}: {what} is too large to decode safely (a decompression bomb?); "
                               f"fix: resize it, or raise INVERSEG_MAX_PIXELS") from None
        except UnidentifiedImageError:
            raise DatasetError(f"{path}: cannot decode {what}: not an image format PIL reads ({size} bytes); "
                               f"fix: save it as PNG (labels) or PNG/JPEG (photos)") from None
        except Exception as error:  # noqa: BLE001 — see the docstring: any decoder failure is a bad file
            detail = " ".join(str(error).split()) or type(error).__name__
            raise DatasetError(f"{path}: cannot decode {what}: truncated or corrupt ({detail}); "
                               f"fix: re-export or re-download it") from None
    return image


def read_rgb(path: Path) -> np.ndarray:
    """A photo as (H,W,3) uint8 RGB (grey, palette, 16-bit and alpha images are converted)."""
    image = open_image(path, "image")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):  # 16-bit / float photos: scale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.size else 1.0
        array = np.clip(array / (top if top > 255 else 255.0) * 255.0, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(array[..., None], 3, axis=2))
    return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays


def label_values(image: Image.Image, source: str) -> np.ndarray:
    """The raw integer values of a decoded label image: palette-mode PNGs give their indices, not their colours.

    Single-band modes (P, L, 1, I, I;16) are read as they are; a grey or palette image with an alpha band (LA, PA)
    uses its value band.  Colour images need a palette (the caller decodes them); lossy files are refused because
    JPEG compression invents values at class borders.
    """
    if image.format in LOSSY_FORMATS and not (image.format == "WEBP" and image.info.get("lossless")):
        raise LabelError(f"{source}: label is a {image.format} file; lossy compression changes class ids at "
                         f"region borders; fix: save label maps as PNG")
    if image.mode in ("LA", "PA", "La"):
        image = image.getchannel(0)
    if image.mode in INDEX_MODES:
        return np.asarray(image).astype(np.int64)
    if image.mode == "F":
        values = np.asarray(image)
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise LabelError(f"{source}: label image holds non-integer (float) values; "
                             f"fix: save it as an 8- or 16-bit index PNG")
        return values.astype(np.int64)
    if image.mode in ("RGB", "RGBA", "RGBX"):
        raise LabelError(
            f"{source}: is a colour (RGB) label image, not an index map; fix: pass --palette FILE "
            f"(lines id<TAB>name<TAB>R,G,B) so colours can be converted to ids"
        )
    raise LabelError(f"{source}: unsupported label image mode {image.mode}; fix: save it as an 8-bit index PNG")


def read_label_values(path: Path) -> np.ndarray:
    """The raw values of a label file (see ``label_values``)."""
    return label_values(open_image(path, "label"), str(path))


def read_label(path: Path, spec: LabelSpec, palette: Palette | None = None) -> np.ndarray:
    """Label file → validated ids. RGB files are decoded through the palette; index files through the spec."""
    image = open_image(path, "label")
    if image.mode in ("RGB", "RGBA") and palette is not None and image.format not in LOSSY_FORMATS:
        raw = palette.decode(np.asarray(image.convert("RGB")), source=str(path))
        return spec.ids_from_raw(raw, source=str(path))
    return spec.ids_from_raw(label_values(image, str(path)), source=str(path))


def read_instance(path: Path, channel: int | None = None) -> np.ndarray:
    """Instance ids: a single-channel map, or one ``channel`` of a colour map (ADE20K: G = instance id)."""
    image = open_image(path, "instance map")
    if image.mode in ("LA", "PA"):
        image = image.getchannel(0)
    values = np.asarray(image).astype(np.int64)
    if values.ndim == 3:
        if channel is None:
            raise DatasetError(f"{path}: instance map has {values.shape[2]} colour channels; fix: save the instance "
                               f"ids as a single-channel PNG")
        return values[..., channel]
    return values


class PairDataset(torch.utils.data.Dataset):
    """Reads ``PairFiles`` into samples; ``on_problem`` is "strict" (raise) or "skip" (drop and list).

    Per-sample problems (undecodable file, size mismatch, bad label values) are found lazily in ``skip`` mode:
    the sample is replaced by the next good one and the problem is recorded in ``problems``.  ``check()`` scans
    everything up front (used by ``inverseg data check``).
    """

    def __init__(
        self,
        scan: ScanResult,
        spec: LabelSpec,
        transform: JointTransform | None = None,
        palette: Palette | None = None,
        seed: int = 0,
        on_problem: str = "strict",
        source: str = "dataset",
    ) -> None:
        if on_problem not in ("strict", "skip"):
            raise ValueError(f"on_problem must be 'strict' or 'skip', got {on_problem!r}")
        self.pairs = list(scan.pairs)
        self.problems = list(scan.problems)
        self.spec = spec
        self.transform = transform or JointTransform()
        self.palette = palette
        self.seed = seed
        self.epoch = 0
        self.on_problem = on_problem
        self.source = source
        if self.problems and on_problem == "strict":
            raise DatasetError(f"{source}: {self.problems[0]} (and {len(self.problems) - 1} more problems; "
                               f"run 'inverseg data check' or use on_problem='skip')" if len(self.problems) > 1
                               else f"{source}: {self.problems[0]}")
        if not self.pairs:
            raise DatasetError(f"{source}: no image/label pairs found; fix: check the path and --dataset kind")

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def has_instances(self) -> bool:
        return all(p.instance is not None for p in self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Augmentations differ per epoch but stay reproducible: rng = f(seed, epoch, index)."""
        self.epoch = epoch

    def load_arrays(self, pair: PairFiles) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """Decode and cross-check one pair; every problem is a one-line DatasetError/LabelError naming the file."""
        label = read_label(pair.label, self.spec, self.palette)
        image = read_rgb(pair.image) if pair.image is not None else None
        if image is not None and image.shape[:2] != label.shape:
            raise DatasetError(
                f"{pair.image}: image is {image.shape[1]}×{image.shape[0]} but label {pair.label.name} is "
                f"{label.shape[1]}×{label.shape[0]}; fix: resize the label with nearest neighbour"
            )
        instance = read_instance(pair.instance, pair.instance_channel) if pair.instance is not None else None
        if instance is not None and instance.shape != label.shape:
            raise DatasetError(f"{pair.instance}: instance map is {instance.shape[1]}×{instance.shape[0]} but label "
                               f"{pair.label.name} is {label.shape[1]}×{label.shape[0]}; fix: resize it (nearest)")
        return image, label, instance

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.pairs)):
            pair = self.pairs[(index + attempt) % len(self.pairs)]
            try:
                image, label, instance = self.load_arrays(pair)
            except InversegError as error:
                if self.on_problem == "strict":
                    raise
                if str(error) not in self.problems:  # a bad sample is met again every epoch
                    self.problems.append(str(error))
                continue
            rng = np.random.default_rng([self.seed, self.epoch, index]) if self.transform.is_random else None
            if image is None:
                image = np.zeros((*label.shape, 3), dtype=np.uint8)
            image, label, instance = self.transform(image, label, instance, rng)
            return make_sample(image, label, instance, pair.name)
        raise DatasetError(f"{self.source}: every sample failed to load; first problem: {self.problems[0]}")

    def check(self, progress: Callable | None = None) -> list[str]:
        """Load every pair once; return all problems (scan-time ones included)."""
        problems = list(self.problems)
        iterator = progress(self.pairs) if progress else self.pairs
        for pair in iterator:
            try:
                self.load_arrays(pair)
            except InversegError as error:
                if str(error) not in problems:  # already recorded by __getitem__ in skip mode
                    problems.append(str(error))
        return problems


def make_sample(image: np.ndarray, label: np.ndarray, instance: np.ndarray | None, name: str) -> dict:
    sample = {
        "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(127.5).sub_(1.0),
        "label": torch.from_numpy(np.ascontiguousarray(label)).long(),
        "name": name,
    }
    if instance is not None:
        sample["instance"] = torch.from_numpy(np.ascontiguousarray(instance)).long()
    return sample


def pair_by_stem(
    images: list[Path], labels: list[Path], source: str, label_suffix: str = "", image_suffix: str = ""
) -> ScanResult:
    """Match images and labels by file stem (after removing the given suffixes); unmatched files are problems."""

    def key(path: Path, suffix: str) -> str:
        stem = path.stem
        return stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem

    by_key = {key(p, label_suffix): p for p in labels}
    image_keys = {key(p, image_suffix): p for p in images}
    pairs, problems = [], []
    for name in sorted(image_keys):
        if name in by_key:
            pairs.append(PairFiles(image=image_keys[name], label=by_key[name], name=name))
        else:
            problems.append(f"{image_keys[name]}: no label file for this image (missing partner)")
    for name in sorted(set(by_key) - set(image_keys)):
        problems.append(f"{by_key[name]}: no image file for this label (missing partner)")
    return ScanResult(pairs, problems)


def list_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    iterator = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in iterator if p.is_file() and p.suffix.lower() in suffixes)
