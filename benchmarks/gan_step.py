"""Train-step seconds and peak RSS of pix2pixHD, SPADE, SAFM, CC-FPSE and LGGAN at their CPU presets and at one paper preset each.

Each configuration runs in its own subprocess (so peak RSS belongs to it): build the method with the preset's
settings (VGG weights as ``inverseg.perception.load_vgg`` finds them), make one procedural batch (street-like
bands, cars with instance ids), run ``warmup`` steps, then time ``steps`` steps of ``method.train_step``.
Paper presets run at a reduced resolution (stated in the output) because full resolution does not fit the time.

``step_seconds`` is wall time, ``step_cpu_seconds`` the process CPU time per step.  On a shared machine the wall
time is inflated by other processes (``load_average_1min`` is recorded; OpenMP threads spin while waiting for
a core), whereas the CPU time of a one-thread run (``--threads 1``) stays a faithful measure of the work.

    .venv/bin/python benchmarks/gan_step.py              # all configurations, JSON list on stdout
    .venv/bin/python benchmarks/gan_step.py --threads 1  # robust on a busy machine
    .venv/bin/python benchmarks/gan_step.py --one spade-cpu
"""

from __future__ import annotations

import os
import sys

import torch

from _common import load_preset, main, peak_rss_mb, time_train_steps

# name: (preset, size override or None, batch override or None, timed steps)
CONFIGS = {
    "pix2pixhd-cpu": ("pix2pixhd-cpu", None, None, 5),
    "pix2pixhd-camvid-cpu": ("pix2pixhd-camvid-cpu", None, None, 5),
    "pix2pixhd-512p@128x256": ("pix2pixhd-512p", (128, 256), None, 1),
    "spade-cpu": ("spade-cpu", None, None, 5),
    "spade-camvid-cpu": ("spade-camvid-cpu", None, None, 5),
    "spade-camvid-cpu-vae": ("spade-camvid-cpu-vae", None, None, 5),
    "spade-cityscapes@128x256,batch1": ("spade-cityscapes", (128, 256), 1, 1),
    "safm-cpu": ("safm-cpu", None, None, 3),
    "safm-camvid-cpu": ("safm-camvid-cpu", None, None, 3),
    "safm-camvid-cpu,placement=blocks": ("safm-camvid-cpu", None, None, 3),
    "safm-cityscapes@128x256,batch2": ("safm-cityscapes", (128, 256), 2, 1),  # batch norm needs 2 samples
    "ccfpse-cpu": ("ccfpse-cpu", None, None, 3),
    "ccfpse-camvid-cpu": ("ccfpse-camvid-cpu", None, None, 3),
    "ccfpse-camvid-cpu,hidden=128": ("ccfpse-camvid-cpu", None, None, 3),
    "ccfpse-cityscapes@128x256,batch2": ("ccfpse-cityscapes", (128, 256), 2, 1),
    "lggan-cpu": ("lggan-cpu", None, None, 3),
    "lggan-camvid-cpu": ("lggan-camvid-cpu", None, None, 3),
}
# SAFM: the fake-image alignment term on from the first step, so the timed steps include the whole objective
OVERRIDES = {name: ["loss.fake_seg_start=0"] for name in CONFIGS if name.startswith("safm")}
OVERRIDES["safm-camvid-cpu,placement=blocks"].append("model.placement=blocks")
OVERRIDES["ccfpse-camvid-cpu,hidden=128"] = ["model.hidden=128"]  # the official head width


def procedural_batch(spec, size: tuple[int, int], batch: int, seed: int = 0) -> dict:
    """Sky / buildings / road bands and a few 'cars' with pix2pixHD-style instance ids (class·1000 + k)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    names = list(spec.class_names)

    def class_id(*candidates: str) -> int:
        for candidate in candidates:
            if candidate in names:
                return names.index(candidate)
        return 0

    sky, building, road, car = class_id("sky"), class_id("building"), class_id("road"), class_id("car")
    labels, instances = [], []
    for _ in range(batch):
        label = torch.full((height, width), building, dtype=torch.long)
        horizon = int(height * (0.3 + 0.2 * float(torch.rand(1, generator=generator))))
        label[: horizon // 2] = sky
        label[horizon:] = road
        instance = label.clone()
        for k in range(3):
            top = horizon + int(torch.randint(0, max(1, height - horizon - height // 8), (1,), generator=generator))
            left = int(torch.randint(0, width - width // 5, (1,), generator=generator))
            label[top:top + height // 8, left:left + width // 5] = car
            instance[top:top + height // 8, left:left + width // 5] = car * 1000 + k
        labels.append(label)
        instances.append(instance)
    label = torch.stack(labels)
    image = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    return {"image": image, "label": label, "instance": torch.stack(instances), "name": ["bench"] * batch}


def run_one(name: str) -> dict:
    from inverseg.labels import get_scheme
    from inverseg.methods import get_method
    from inverseg.nn import count_parameters

    preset, config, size, batch_size, steps = load_preset(CONFIGS[name], OVERRIDES.get(name, ()))
    scheme = config.data.scheme or {"synthetic": "synthetic", "camvid": "camvid", "cityscapes": "cityscapes",
                                    "ade20k": "ade20k", "cocostuff": "cocostuff"}[config.data.dataset]
    spec = get_scheme(scheme)
    method = get_method(config.method)(config.settings, spec, size, training=True)
    batch = procedural_batch(spec, size, batch_size)
    if not config.settings.model.instance_edges:
        batch.pop("instance")
    method.train()
    warmup = 1
    for step in range(warmup):
        method.train_step(batch, step)
    losses, seconds, cpu_seconds = time_train_steps(method, lambda step: batch, warmup, steps)
    vgg = getattr(method, "vgg_loss", None)
    return {
        "config": name, "preset": preset, "size": list(size), "batch_size": batch_size,
        "threads": torch.get_num_threads(), "timed_steps": steps,
        "step_seconds": round(seconds, 3), "step_cpu_seconds": round(cpu_seconds, 3),
        "images_per_second": round(batch_size / seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
        "params_m": {part: round(count_parameters(getattr(method, part, None)) / 1e6, 3)
                     for part in ("generator", "encoder", "discriminator", "segmenter")},
        "vgg": f"{vgg.extractor.arch}, {vgg.extractor.input_convention} inputs" if vgg is not None else "off",
        "losses": {k: round(v, 4) for k, v in losses.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),  # other processes on the machine inflate the times
    }


if __name__ == "__main__":
    sys.exit(main(__file__, __doc__, CONFIGS, run_one))
