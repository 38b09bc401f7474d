"""Throughput and texture statistics of the procedural street scenes (a benchmark script, not a test).

    .venv/bin/python benchmarks/synthetic_throughput.py [--scenes 200]

Prints JSON: pairs/s on one thread at 96×128 and 192×256 (wall clock and process CPU time, best of several
rounds, so a busy machine shows in the gap between the two), and per class the within-scene colour standard
deviation (0–255, mean over channels) and how much the class's mean colour varies between scenes.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inverseg.data.synthetic import generate_scene  # noqa: E402
from inverseg.labels.schemes import CAMVID  # noqa: E402


def throughput(height: int, width: int, scenes: int, rounds: int = 3) -> dict:
    for seed in range(3):  # warm caches (pixel grids, interpolation tables)
        generate_scene(seed, height, width)
    wall, cpu = [], []
    for r in range(rounds):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for seed in range(scenes):
            generate_scene(10_000 * (r + 1) + seed, height, width)
        wall.append(scenes / (time.perf_counter() - start_wall))
        cpu.append(scenes / (time.process_time() - start_cpu))
    return {"pairs_per_s_wall": round(max(wall), 1), "pairs_per_s_cpu": round(max(cpu), 1)}


def class_statistics(scenes: int, height: int = 96, width: int = 128) -> dict:
    stds: dict[str, list[float]] = {}
    means: dict[str, list[np.ndarray]] = {}
    present: dict[str, int] = {name: 0 for name in CAMVID.class_names}
    for seed in range(scenes):
        image, label, _ = generate_scene(seed, height, width)
        for class_id, name in enumerate(CAMVID.class_names):
            pixels = image[label == class_id].astype(float)
            present[name] += bool(len(pixels))
            if len(pixels) > 50:
                stds.setdefault(name, []).append(float(pixels.std(0).mean()))
                means.setdefault(name, []).append(pixels.mean(0))
    return {
        name: {
            "scenes_present": present[name],
            "within_scene_std_mean": round(float(np.mean(stds[name])), 1) if name in stds else None,
            "within_scene_std_min": round(float(np.min(stds[name])), 1) if name in stds else None,
            "between_scene_std_of_mean": round(float(np.std(np.array(means[name]), 0).mean()), 1)
            if name in means else None,
        }
        for name in CAMVID.class_names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200, help="scenes per timing round at 96×128 (default 200)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({
        "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "96x128": throughput(96, 128, args.scenes),
        "192x256": throughput(192, 256, max(10, args.scenes // 3)),
        "per_class_96x128_50_scenes": class_statistics(50),
    }, indent=1))


if __name__ == "__main__":
    main()
