"""Shared bits of the studio tests: tiny trained runs (seconds on a CPU), a colour segmenter that reads flat-coloured
photos exactly, and small image helpers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _gan_scenes import SPEC, H, W, synthetic_overrides
from inverseg.cli.main import main
from test_eval_segmenter import ColourSegmenter  # logits = −distance to each class colour

# tiny widths, no VGG weights: a 2-step run trains in seconds
SESAME_TINY = ("model.ngf=4", "model.spade_hidden=8", "masking.min_box_size=4", "masking.max_box_size=16")
SPADE_TINY = ("model.ngf=4", "model.spade_hidden=8", "vae.nf=4", f"vae.input_size=[{H},{W}]", "vae.num_layers=5",
              "vae.z_dim=8", "model.instance_edges=false")
OASIS_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.z_dim=8", "discriminator.channels=[8,8,16,16,16]",
              "discriminator.last_channels=8", "model.init_gain=1.0")  # official gain 0.02: ≈ flat grey untrained


def train_tiny(run: Path, preset: str, *overrides: str, steps: int = 2) -> Path:
    base = synthetic_overrides(steps)
    if preset.startswith("oasis"):
        base = [o for o in base if not o.startswith("discriminator.")]  # (PatchGAN keys)
    assert main(["train", "--config", preset, "--out", str(run), "--quiet", *base, *overrides]) == 0
    return run


def make_studio_runs(root: Path) -> dict[str, Path]:
    """Tiny SESAME, SPADE (with VAE) and OASIS runs on the procedural scenes, and a colour segmenter."""
    return {"sesame": train_tiny(root / "sesame", "sesame-cpu", *SESAME_TINY),
            "spade": train_tiny(root / "spade", "spade-cpu", *SPADE_TINY, "train.sample_k=1"),
            "oasis": train_tiny(root / "oasis", "oasis-cpu", *OASIS_TINY, "train.sample_k=1"),
            "segmenter": write_colour_segmenter(root / "segmenter")}


def write_colour_segmenter(folder: Path, spec=SPEC) -> Path:
    """A TorchScript segmenter + JSON description that maps each class colour of ``spec`` to its class."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = torch.tensor(spec.colors, dtype=torch.float32) / 255.0
    torch.jit.script(ColourSegmenter(colours)).save(str(folder / "colour.pt"))
    path = folder / "colour.json"
    path.write_text(json.dumps({"model": "colour.pt", "num_outputs": spec.num_classes, "label_set": spec.name,
                                "input": {"range": [0, 1]}}))
    return path


def png(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def index_png(ids: np.ndarray) -> bytes:
    return png(Image.fromarray(np.asarray(ids, dtype=np.uint8), "L"))


def colour_png(ids: np.ndarray, spec=SPEC) -> bytes:
    return png(spec.colorize(ids))


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(np.int64)
