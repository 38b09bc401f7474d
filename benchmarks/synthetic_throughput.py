"""Throughput of the procedural street scenes on one thread (a benchmark script, not a test).

    .venv/bin/python benchmarks/synthetic_throughput.py
prints JSON: pairs/s at 96×128 and 192×256, and the per-class colour standard deviation (0–255 scale).
"""

import json
import time

import numpy as np
import torch

from inverseg.data.synthetic import generate_scene
from inverseg.labels.schemes import CAMVID


def throughput(height: int, width: int, count: int) -> float:
    for seed in range(5):
        generate_scene(seed, height, width)
    start = time.perf_counter()
    for seed in range(count):
        generate_scene(seed, height, width)
    return count / (time.perf_counter() - start)


def class_std(count: int = 50) -> dict:
    stds: dict[str, list[float]] = {}
    for seed in range(count):
        image, label, _ = generate_scene(seed, 96, 128)
        for class_id, name in enumerate(CAMVID.class_names):
            pixels = image[label == class_id].astype(float)
            if len(pixels) > 50:
                stds.setdefault(name, []).append(float(pixels.std(0).mean()))
    return {name: round(float(np.mean(values)), 1) for name, values in stds.items()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({
        "threads": 1,
        "pairs_per_second_96x128": round(throughput(96, 128, 200), 1),
        "pairs_per_second_192x256": round(throughput(192, 256, 100), 1),
        "mean_per_scene_class_std_96x128": class_std(),
    }, indent=1))
