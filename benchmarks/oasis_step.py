"""OASIS train-step seconds, peak RSS, EMA batch-norm recalibration and sampling time, per preset.

Each configuration runs in its own subprocess (so peak RSS belongs to it): build the method from the preset, take
real batches from the preset's dataset (procedural scenes, or CamVid when ../shared/data/camvid exists; paper
presets use random label maps at a reduced resolution, stated in the output), run ``warmup`` steps, time ``steps``
steps of ``method.train_step`` (the warm-up step counts the floating-point operations: a number the machine's load
does not change), then time one ``before_checkpoint`` (EMA BN recalibration over the preset's
``ema.recalibrate_batches``) and one ``sample`` of a single layout.  The machine's 1-minute load average is reported
because other processes inflate the wall-clock times.

    .venv/bin/python benchmarks/oasis_step.py                 # all configurations, JSON list on stdout
    .venv/bin/python benchmarks/oasis_step.py --one oasis-cpu
"""

from __future__ import annotations

import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import load_preset, main, peak_rss_mb, time_train_steps

# name: (preset, size override or None, batch override or None, timed steps)
CONFIGS = {
    "oasis-cpu": ("oasis-cpu", None, None, 3),
    "oasis-camvid-cpu": ("oasis-camvid-cpu", None, None, 3),
    "oasis-cityscapes@64x128,batch1": ("oasis-cityscapes", (64, 128), 1, 1),
    "oasis-ade20k@64x64,batch1": ("oasis-ade20k", (64, 64), 1, 1),
}


def dataset_batches(config, size, batch_size: int, count: int):
    """``count`` batches from the preset's dataset (no augmentation), or random layouts for paper datasets."""
    from inverseg.data import open_dataset
    from inverseg.labels import get_scheme
    from inverseg.train.trainer import collate

    config.data.size = tuple(size)
    if config.data.dataset in ("synthetic", "camvid"):
        dataset = open_dataset(config.data, augment=False)
        batches = [collate([dataset[i * batch_size + j] for j in range(batch_size)]) for i in range(count)]
        return dataset.spec, batches
    spec = get_scheme(config.data.scheme or {"ade20k": "ade20k", "cityscapes": "cityscapes-labelids",
                                             "cocostuff": "cocostuff"}[config.data.dataset])
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        label = torch.randint(0, spec.num_classes, (batch_size, size[0] // 8, size[1] // 8), generator=generator)
        label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)  # 8×8 blocks of one class
        batches.append({"image": torch.rand(batch_size, 3, *size, generator=generator) * 2 - 1, "label": label})
    return spec, batches


def run_one(name: str) -> dict:
    from inverseg.methods import get_method
    from inverseg.nn import count_parameters

    preset, config, size, batch_size, steps = load_preset(CONFIGS[name])
    warmup = 1
    spec, batches = dataset_batches(config, size, batch_size, warmup + steps)
    method = get_method(config.method)(config.settings, spec, size, training=True)
    method.train()
    with FlopCounterMode(display=False) as counter:  # the warm-up step also counts the work (load-independent)
        method.train_step(batches[0], 0)
    losses, seconds, cpu_seconds = time_train_steps(method, batches.__getitem__, warmup, steps)

    recalibrate = config.settings.ema.recalibrate_batches
    start = time.perf_counter()
    method.before_checkpoint(lambda count: (batches[i % len(batches)] for i in range(count)))
    recalibration_seconds = time.perf_counter() - start
    method.eval()
    start = time.perf_counter()
    method.sample(batches[0]["label"][:1], k=1, generator=torch.Generator().manual_seed(0))
    sample_seconds = time.perf_counter() - start
    return {
        "config": name, "preset": preset, "size": list(size), "batch_size": batch_size,
        "threads": torch.get_num_threads(), "timed_steps": steps,
        "step_gflop": round(counter.get_total_flops() / 1e9, 1),
        "step_seconds": round(seconds, 3), "step_cpu_seconds": round(cpu_seconds, 3),
        "images_per_second": round(batch_size / seconds, 3),
        "recalibration_batches": recalibrate, "recalibration_seconds": round(recalibration_seconds, 2),
        "sample_seconds_per_image": round(sample_seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
        "params_m": {part: round(count_parameters(getattr(method, part, None)) / 1e6, 3)
                     for part in ("generator", "discriminator")},
        "losses": {k: round(v, 4) for k, v in losses.items()},
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    sys.exit(main(__file__, __doc__, CONFIGS, run_one))
