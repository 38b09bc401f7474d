"""What the two sides of a study show: a folder of images, or a run directory synthesized from label maps.

Images are matched across the two methods by file stem (``a/berlin_01.png`` ↔ ``b/berlin_01.jpg``), so a
method's outputs can be compared with another method's, or with the real photos of the same layouts.  A run
directory is synthesized once per label map into a cache folder; a manifest (checkpoint, label folder, seed)
decides whether the cache is still valid, so a run that trained further is synthesized again.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ...utils.io import atomic_write_bytes, atomic_write_json
from .store import StudyError

# formats every browser displays
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


@dataclass
class Source:
    name: str
    images: dict[str, Path]  # file stem → image file
    origin: str  # "folder DIR" or "run DIR (checkpoint NAME)"
    synthesized: int = field(default=0)


def files_by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes):
        if path.stem in files:
            raise StudyError(f"{folder}: two {what} named {path.stem!r} ({files[path.stem].name}, {path.name}); "
                             f"fix: keep one per name")
        files[path.stem] = path.resolve()
    return files


def find_checkpoint(path: Path) -> Path | None:
    """The checkpoint a run (or checkpoint) directory points to, or None for any other folder."""
    from ...train.checkpoint import CheckpointError, resolve_checkpoint

    try:
        return resolve_checkpoint(path)
    except CheckpointError:
        return None


def default_name(path: Path, checkpoint: Path | None) -> str:
    if checkpoint is not None and path.resolve() == checkpoint.resolve():
        return checkpoint.parent.parent.name  # RUN/checkpoints/step_N → RUN
    return path.resolve().name


def open_source(path: str | Path, name: str | None = None, labels: str | Path | None = None,
                cache_root: Path | None = None, seed: int = 0, device: str = "cpu") -> Source:
    """A folder of images or a run directory (synthesized from ``labels`` into ``cache_root/NAME``)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise StudyError(f"{path}: not a folder (expected a folder of images or a run directory)")
    checkpoint = find_checkpoint(path)
    name = name or default_name(path, checkpoint)
    if checkpoint is None:
        images = files_by_stem(path, IMAGE_SUFFIXES, "images")
        if not images:
            raise StudyError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) and no checkpoints; "
                             f"expected a folder of images or a run directory written by 'inverseg train'")
        return Source(name, images, f"folder {path}")
    if labels is None:
        raise StudyError(f"{path} is a run directory: pass --labels DIR with the label maps to synthesize from")
    if cache_root is None:
        raise ValueError("cache_root is needed to synthesize from a run directory")
    images, synthesized = synthesize(checkpoint, Path(labels), cache_root / name, seed, device)
    return Source(name, images, f"run {path} (checkpoint {checkpoint.name})", synthesized)


def synthesize(checkpoint: Path, labels: Path, cache: Path, seed: int, device: str) -> tuple[dict[str, Path], int]:
    """One image per label map, written once; returns (stem → image, how many were synthesized now)."""
    if labels.is_dir():
        label_files = files_by_stem(labels, LABEL_SUFFIXES, "label maps")
    elif labels.is_file():
        label_files = {labels.stem: labels.resolve()}
    else:
        raise StudyError(f"{labels}: no such label file or folder")
    if not label_files:
        raise StudyError(f"{labels}: no label maps ({', '.join(LABEL_SUFFIXES)}) in this folder")
    manifest = {"checkpoint": str(checkpoint.resolve()), "labels": str(labels.resolve()), "seed": seed}
    manifest_path = cache / "study-cache.json"
    if cache.is_dir() and (not manifest_path.is_file() or json.loads(manifest_path.read_text()) != manifest):
        shutil.rmtree(cache)  # made for another checkpoint, label folder or seed
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest_path, manifest)
    missing = {stem: label for stem, label in label_files.items() if not (cache / f"{stem}.png").is_file()}
    if missing:
        from ...pipeline import Pipeline

        pipe = Pipeline.from_pretrained(checkpoint, device=device)
        print(f"synthesizing {len(missing)} image(s) with {checkpoint} into {cache}", file=sys.stderr)
        for stem, label in missing.items():
            buffer = io.BytesIO()
            pipe(label, k=1, seed=seed)[0].save(buffer, format="PNG")
            atomic_write_bytes(cache / f"{stem}.png", buffer.getvalue())
    return {stem: (cache / f"{stem}.png").resolve() for stem in label_files}, len(missing)


def match(a: Source, b: Source) -> list[tuple[str, Path, Path]]:
    """(stem, image of A, image of B) for every stem both sides have."""
    common = sorted(set(a.images) & set(b.images))
    if not common:
        raise StudyError(f"no image names in common between {a.name} ({a.origin}) and {b.name} ({b.origin}); "
                         f"images are matched by file name without extension")
    return [(stem, a.images[stem], b.images[stem]) for stem in common]
