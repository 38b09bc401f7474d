"""Where evaluation keeps its evaluators and cached feature statistics, and the ``HxW`` size syntax."""

from __future__ import annotations

import re
from pathlib import Path

from .. import paths


def parse_size(text: str) -> tuple[int, int]:
    """``"96x128"`` → (96, 128): height × width, as everywhere in inverseg."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not match or int(match.group(1)) < 8 or int(match.group(2)) < 8:
        raise ValueError(f"size {text!r} is not HxW (height x width, each ≥ 8), e.g. 96x128")
    return int(match.group(1)), int(match.group(2))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "dataset"


def evaluators_dir() -> Path:
    return paths.cache_dir() / "evaluators"


def default_evaluator_dir(label_set: str, size: tuple[int, int]) -> Path:
    """``$INVERSEG_CACHE/evaluators/<label set>-<H>x<W>``: where ``evaluate`` looks when no --evaluator is given."""
    return evaluators_dir() / f"{slug(label_set)}-{size[0]}x{size[1]}"


def stats_dir() -> Path:
    return paths.cache_dir() / "stats"
