"""Why k CRN outputs collapse: the per-class best-of-k loss from the official vs a centred output start (JSON).

    PYTHONPATH=src .venv/bin/python benchmarks/crn_diversity_start.py [--steps 800] [--seeds 0 1 2]

A small CRN generator (widths 128, 128, 64, 32 from 3×4 → 24×32, k = 3) on the CamVid train split
(layouts and photos area-downsampled to 24×32) trained with the diversity loss of §3.4 restricted to the pixel term
(no VGG, so it runs in seconds), the official 0.999·min + 0.001·mean mix and the official Adam 1e-4, batch 1.
For each output initialisation (``xavier`` = official slim init, ``centred`` = ``model.output_init: centred``) and
seed it reports, at eight points of the run: each output's pixel L1 (0–255) on 16 train layouts and the share of
(sample, class) pairs each output won since the previous point.  docs/methods/crn.md "Diversity collapse".
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from inverseg.config import load_run_config
from inverseg.data import open_dataset
from inverseg.losses import DiversityLoss, LambdaBalancer, PerceptualLoss
from inverseg.models.crn import CRNGenerator

SIZE = (24, 32)


def load_samples(split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    config = load_run_config("crn-camvid-cpu", [])
    dataset = open_dataset(config.data, split=split, augment=False)
    samples = []
    for index in range(len(dataset)):
        sample = dataset[index]
        layout = dataset.spec.one_hot(sample["label"][None], mode="area", void_channel=True)
        samples.append((F.interpolate(layout, size=SIZE, mode="area"),
                        F.interpolate(sample["image"][None], size=SIZE, mode="area")))
    return samples


def run(samples, init: str, seed: int, steps: int, lr: float, k: int, mean_mix: float) -> dict:
    torch.manual_seed(seed)
    generator = CRNGenerator(samples[0][0].shape[1], (128, 128, 64, 32), base_grid=(3, 4), num_outputs=k)
    if init == "centred":  # what CRN.centre_outputs does on the first batch, here on 10 layouts
        with torch.no_grad():
            images = torch.cat([generator(samples[i][0]) for i in range(0, 40, 4)])
            generator.to_rgb.bias -= images.mean((0, 3, 4)).flatten()
    loss = DiversityLoss(PerceptualLoss(lambda x: {}, layers=(), balancer=LambdaBalancer(("pixel",), mode="fixed")),
                         mean_mix=mean_mix)
    optimiser = torch.optim.Adam(generator.parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)
    won = torch.zeros(k)
    rows = []
    for step in range(1, steps + 1):
        layout, photo = samples[int(torch.randint(len(samples), (1,), generator=order))]
        total, logs = loss(generator(layout), photo, layout)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        won += torch.tensor([float(logs[f"selected_fraction/{u}"]) for u in range(k)])
        if step % max(steps // 8, 1) == 0:
            with torch.no_grad():
                errors = torch.stack([(generator(samples[j][0])[0] - samples[j][1]).abs().mean((1, 2, 3)) * 127.5
                                      for j in range(0, len(samples), max(len(samples) // 16, 1))]).mean(0)
            rows.append({"step": step, "pixel_l1": [round(v, 1) for v in errors.tolist()],
                         "won_share": [round(v, 2) for v in (won / won.sum()).tolist()]})
            won.zero_()
    return {"init": init, "seed": seed, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--inits", nargs="+", default=["xavier", "centred"])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--mean-mix", type=float, default=0.001)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    samples = load_samples("train")
    results = [run(samples, init, seed, args.steps, args.lr, args.k, args.mean_mix)
               for init in args.inits for seed in args.seeds]
    print(json.dumps({"steps": args.steps, "lr": args.lr, "k": args.k, "mean_mix": args.mean_mix,
                      "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
