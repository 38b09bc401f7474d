"""Saturated pixels of an OASIS run's generators on a validation split: raw G, the EMA before and after the
spectral-norm fix (issue 11 §2).

A pixel is saturated when all three channels are ≤ 8 or all are ≥ 247 (flat black or white blobs).  From one
checkpoint (which holds G and the EMA) it samples every layout of the split once (layout i with seed SEED+i, as
``inverseg evaluate`` does) with:

    g               the live generator in eval mode (its own batch-norm statistics)
    ema_checkpoint  the EMA exactly as saved
    ema_before      the saved EMA, batch-norm statistics re-estimated, spectral-norm vectors left as averaged
                    (``ema.renormalize_spectral: false``, inverseg before issue 11)
    ema_after       the saved EMA, spectral-norm vectors power-iterated to convergence, then the statistics
                    re-estimated (the default now)

Both re-estimations use the same batches: ``--recalibrate-batches`` (default: the run's ``ema.recalibrate_batches``)
from a shuffle of the training split seeded by the run's ``train.seed``, as the Trainer draws them.  It also reports
each EMA's effective spectral norms (σ_max of W/σ_est; 1 when the vectors are right) and the real images' fraction.
``--images DIR`` writes each variant's images to DIR/VARIANT/NAME.png for ``inverseg evaluate --images``.

    PYTHONPATH=src .venv/bin/python benchmarks/oasis_saturation.py --run /work/runs/oasis/run-batch \\
        --images /work/runs/oasis/run-batch/saturation        # JSON on stdout
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch


def saturated_fraction(images: np.ndarray) -> float:
    """(N,H,W,3) uint8 → share of pixels whose three channels are all ≤ 8 or all ≥ 247."""
    dark = (images <= 8).all(axis=-1)
    bright = (images >= 247).all(axis=-1)
    return float((dark | bright).mean())


def shuffled_batches(config, count: int, device: torch.device):
    """The Trainer's recalibration batches: a shuffle of the training split seeded by ``train.seed``."""
    from inverseg.data import open_dataset
    from inverseg.train.trainer import collate, move

    dataset = open_dataset(config.data, split=config.data.split, augment=False)
    size = config.train.batch_size
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.train.seed)).tolist()
    batches = [collate([dataset[i] for i in order[b * size:(b + 1) * size]])
               for b in range(min(count, len(dataset) // size))]
    return lambda wanted: (move(batch, device) for batch in batches[:wanted])


def run(args) -> dict:
    from inverseg.config import build_run_config
    from inverseg.data import open_dataset
    from inverseg.labels import LabelSpec
    from inverseg.methods import get_method
    from inverseg.nn import effective_spectral_norms, recalibrate_batch_norm, renormalize_spectral_norm
    from inverseg.train import checkpoint as ckpt
    from inverseg.utils.images import to_uint8

    torch.set_num_threads(args.threads)
    checkpoint = ckpt.resolve_checkpoint(args.run)
    state = ckpt.read_state(checkpoint)
    if state["method"] != "oasis":
        raise SystemExit(f"{checkpoint}: an {state['method']} run, not OASIS")
    config = build_run_config(state["config"], preset=state["config"].get("preset", ""))
    if args.data:
        config.data.path = args.data
    spec = LabelSpec.from_dict(state["spec"])
    size = tuple(state["image_size"])
    method = get_method("oasis")(config.settings, spec, size, training=True)
    ckpt.load_method_weights(method, checkpoint)
    method.eval()
    ema = config.settings.ema
    count = args.recalibrate_batches or ema.recalibrate_batches
    batches = shuffled_batches(config, count, torch.device("cpu"))

    saved = method.generator_ema
    variants = {"g": method.generator, "ema_checkpoint": saved}
    for name, renormalise in (("ema_before", False), ("ema_after", True)):
        net = copy.deepcopy(saved)
        if renormalise:
            renormalize_spectral_norm(net)
        method._recalibration_rng = torch.Generator().manual_seed(0)  # the noise the method's own pass uses
        recalibrate_batch_norm(net, method.recalibration_forward, batches(count), cumulative=ema.recalibrate_cumulative)
        variants[name] = net

    split = open_dataset(config.data, split=args.split, augment=False)
    indices = list(range(len(split)))[:args.limit]
    samples = [split[i] for i in indices]
    real = np.stack([to_uint8(sample["image"]) for sample in samples])
    result = {"run": str(checkpoint), "step": state.get("step"), "train_cpu_seconds": state.get("cpu_seconds"),
              "split": args.split, "images": len(samples), "recalibration": {
                  "batches": min(count, len(open_dataset(config.data, augment=False)) // config.train.batch_size),
                  "batch_size": config.train.batch_size, "order": f"shuffled (seed {config.train.seed})",
                  "estimate": "exact mean" if ema.recalibrate_cumulative else "momentum, no reset"},
              "class_balance": config.settings.loss.class_balance,
              "saturated_real": saturated_fraction(real), "variants": {}}
    for name, net in variants.items():
        method.generator_ema = net  # sample() uses the EMA slot
        images = []
        for index, sample in zip(indices, samples):
            generator = torch.Generator().manual_seed(args.seed + index)
            output = method.sample(sample["label"][None], k=1, generator=generator)[0, 0]
            images.append(to_uint8(output))
        images = np.stack(images)
        norms = effective_spectral_norms(net)
        result["variants"][name] = {
            "saturated": saturated_fraction(images),
            "saturated_dark": float((images <= 8).all(axis=-1).mean()),
            "saturated_bright": float((images >= 247).all(axis=-1).mean()),
            "mean_rgb": [round(float(v), 2) for v in images.reshape(-1, 3).mean(0)],
            "effective_spectral_norm": {"min": min(norms), "median": statistics.median(norms), "max": max(norms)},
        }
        if args.images:
            from PIL import Image

            folder = Path(args.images) / name
            folder.mkdir(parents=True, exist_ok=True)
            for sample, image in zip(samples, images):
                Image.fromarray(image).save(folder / f"{sample['name']}.png")
    method.generator_ema = saved
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="OASIS run directory or checkpoint")
    parser.add_argument("--data", help="dataset path (default: the run's data.path)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, help="only the first N layouts")
    parser.add_argument("--seed", type=int, default=0, help="layout i uses seed SEED+i (as inverseg evaluate)")
    parser.add_argument("--recalibrate-batches", type=int, help="default: the run's ema.recalibrate_batches")
    parser.add_argument("--images", help="write DIR/VARIANT/NAME.png for inverseg evaluate --images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    json.dump(run(args), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
