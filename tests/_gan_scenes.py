"""Shared bits of the pix2pixHD / SPADE / OASIS tests: a tiny size, toy label maps, and overrides that turn a *-cpu
preset into a seconds-long run on the procedural street scenes (``data.dataset=synthetic``, instance maps included)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from inverseg.config import load_run_config
from inverseg.labels import LabelSpec, get_scheme
from inverseg.methods import get_method

H, W = 32, 64
SKY, ROAD, CAR = 0, 3, 8  # CamVid ids, as in the synthetic scenes
SPEC = get_scheme("synthetic")  # CamVid's 11 classes + void (11)


def build(preset: str, size, *overrides: str, spec: LabelSpec = SPEC, training: bool = False):
    config = load_run_config(preset, list(overrides))
    return get_method(config.method)(config.settings, spec, size, training=training), config


def toy_label(batch: int = 1) -> torch.Tensor:
    label = torch.full((batch, H, W), ROAD, dtype=torch.long)
    label[:, :12] = SKY
    label[:, 18:26, 8:24] = CAR
    label[:, :, :3] = SPEC.ignore_index  # void → the don't-care channel
    return label


def synthetic_overrides(steps: int = 2) -> list[str]:
    return [
        "data.dataset=synthetic", f"data.size=[{H},{W}]", "data.length=4", "data.scheme=null",
        f"train.steps={steps}", "train.minutes=null", "train.batch_size=2", "train.log_every=1",
        f"train.checkpoint_every={steps}", f"train.sample_every={steps}", "train.num_samples=2",
        "train.tensorboard=false", "loss.vgg_weights=null", "discriminator.ndf=8", "discriminator.num_layers=3",
    ]


def synthetic_pair(index: int = 0, split: str = "val") -> tuple[np.ndarray, Image.Image]:
    """(label ids (H,W), photo) of one procedural scene at the test size."""
    from inverseg.data.synthetic import SyntheticStreets

    sample = SyntheticStreets(split=split, size=(H, W), length=index + 1)[index]
    photo = ((sample["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    return sample["label"].numpy(), Image.fromarray(photo)
