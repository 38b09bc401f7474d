"""The issue-13 comparison configurations (CamVid 96×128, 12 classes, batch 1, random VGG19) and how to build one.

Shared by ``speed_report.py`` (baseline vs current, interleaved) and ``profile_step.py`` (where the time goes).
Widths: ``ngf``/``ndf`` N for SPADE and pix2pixHD; OASIS has no ndf, so its D encoder is [N, N, 2N, 2N, 4N] with a
last decoder block of N/2 (the camvid-cpu preset's shape at N = 32) and SPADE's official 128 hidden SPADE channels.
The batch is one procedural street scene (``gan_step.procedural_batch``): no dataset files are needed.
"""

from __future__ import annotations

import torch

SIZE = (96, 128)
# name: (preset, method-specific overrides as a function of the width N)
METHODS = {
    "spade": ("spade-camvid-cpu", lambda n: [f"model.ngf={n}", f"discriminator.ndf={n}", "model.spade_hidden=128"]),
    "pix2pixhd": ("pix2pixhd-camvid-cpu", lambda n: [f"model.ngf={n}", f"discriminator.ndf={n}",
                                                     "features.enabled=false"]),
    "oasis": ("oasis-camvid-cpu", lambda n: [f"model.ngf={n}", f"discriminator.channels=[{n},{n},{2 * n},{2 * n},"
                                             f"{4 * n}]", f"discriminator.last_channels={n // 2}",
                                             "model.spade_hidden=128"]),
}
# every method: random VGG19 in the official [-1, 1] convention, one image per batch
COMMON = ["loss.vgg_backbone=vgg19", "loss.vgg_weights=null", "loss.vgg_input_convention=legacy",
          "loss.lambda_vgg=10", "train.batch_size=1"]
CONFIGS = {f"{method}-ngf{n}": (method, n) for method in METHODS for n in (32, 64)}


def build(name: str, extra: list[str] = ()):
    """(method in train mode, one batch) for a ``CONFIGS`` name; torch seeded, so both code versions build the same
    networks.  ``extra``: more ``key=value`` overrides (e.g. a train option under test)."""
    from inverseg.config import load_run_config
    from inverseg.labels import get_scheme
    from inverseg.methods import get_method

    from gan_step import procedural_batch

    method_name, width = CONFIGS[name]
    preset, overrides = METHODS[method_name]
    overrides = overrides(width) + COMMON + (["loss.add_vgg=false"] if method_name == "oasis" else []) + list(extra)
    torch.manual_seed(0)
    config = load_run_config(preset, overrides)
    spec = get_scheme("camvid")
    method = get_method(config.method)(config.settings, spec, SIZE, training=True)
    batch = procedural_batch(spec, SIZE, 1)
    batch.pop("instance")  # CamVid has no instance maps
    method.train()
    return method, batch, config
