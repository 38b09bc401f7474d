"""Images per second of eager PyTorch vs the ONNX export on onnxruntime, CRN and SPADE at 96×128 and 256×512.

For each configuration (one process for all, so both backends see the same machine state): build the method at
its preset with random weights (speed does not depend on the values), export it with ``inverseg.export``, then
time ``sample`` — label ids → images, including the label encoding and the random draws — alternately on the
eager method and on the ONNX sampler, ``--reps`` times each after one warm-up call each.  One intra-op thread on
both sides (``--threads``, default 1): on this shared 2-core machine more threads measure the neighbours.

Reported per configuration: median wall seconds per image and images/s of each backend, their ratio
(onnx images/s ÷ eager images/s), the same from process CPU time (robust when other processes compete for the
cores), and the largest |onnx − eager| pixel difference of the timed outputs.

    .venv/bin/python benchmarks/onnx_speed.py                  # all four, JSON on stdout
    .venv/bin/python benchmarks/onnx_speed.py --only crn-96x128 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# name: (preset, overrides) — the CPU presets at 96×128, the paper presets at 256×512
CONFIGS = {
    "crn-96x128": ("crn-camvid-cpu", []),
    "spade-96x128": ("spade-camvid-cpu", []),
    "crn-256x512": ("crn-256p", []),
    "spade-256x512": ("spade-cityscapes", []),
}


def build_pipeline(preset: str, overrides: list[str]):
    from inverseg.config import load_run_config
    from inverseg.labels import get_scheme
    from inverseg.methods import get_method
    from inverseg.pipeline import Pipeline

    torch.manual_seed(0)
    config = load_run_config(preset, overrides)
    spec = get_scheme("camvid" if "camvid" in preset else "cityscapes")  # 11 / 19 classes, as in those runs
    size = tuple(config.data.size)
    method = get_method(config.method)(config.settings, spec, size, training=False)
    return Pipeline(method, spec, size, config, source=f"random {preset}")


def label_map(spec, size: tuple[int, int]) -> torch.Tensor:
    """A street-like layout: horizontal bands of a few classes and a block of another."""
    height, width = size
    label = torch.zeros(1, height, width, dtype=torch.long)
    for band, class_id in enumerate((0, 1, 2, 3)):
        label[:, band * height // 4:(band + 1) * height // 4] = class_id % spec.num_classes
    label[:, height // 2:3 * height // 4, width // 4:width // 2] = 5 % spec.num_classes
    return label


def time_call(function) -> tuple[float, float, torch.Tensor]:
    start, start_cpu = time.perf_counter(), time.process_time()
    output = function()
    return time.perf_counter() - start, time.process_time() - start_cpu, output


def run_one(name: str, reps: int, threads: int, folder: Path) -> dict:
    from inverseg.export import export_onnx, load_onnx_pipeline

    preset, overrides = CONFIGS[name]
    pipe = build_pipeline(preset, overrides)
    start = time.perf_counter()
    with torch.no_grad():
        export_onnx(pipe, folder / f"{name}.onnx")
    export_seconds = time.perf_counter() - start
    onnx_pipe = load_onnx_pipeline(folder / f"{name}.onnx", threads=threads)
    label = label_map(pipe.spec, pipe.image_size)
    backends = {"eager": pipe.method, "onnx": onnx_pipe.method}
    wall = {key: [] for key in backends}
    cpu = {key: [] for key in backends}
    outputs = {}
    with torch.no_grad():
        for rep in range(reps + 1):  # rep 0 warms up (allocations, oneDNN / ORT kernel selection)
            for key, sampler in backends.items():  # interleaved: both see the same machine state
                seconds, cpu_seconds, output = time_call(
                    lambda: sampler.sample(label, generator=torch.Generator().manual_seed(rep)))
                if rep:
                    wall[key].append(seconds)
                    cpu[key].append(cpu_seconds)
                outputs[key] = output
    result = {"config": name, "preset": preset, "size": list(pipe.image_size),
              "params_M": round(pipe.method.inference_parameter_count() / 1e6, 2), "threads": threads,
              "reps": reps, "export_seconds": round(export_seconds, 1),
              "max_abs_difference": float((outputs["onnx"] - outputs["eager"]).abs().max())}
    for key in backends:
        median = statistics.median(wall[key])
        result[f"{key}_seconds_per_image"] = round(median, 4)
        result[f"{key}_images_per_second"] = round(1.0 / median, 3)
        result[f"{key}_cpu_seconds_per_image"] = round(statistics.median(cpu[key]), 4)
    result["speedup_wall"] = round(result["eager_seconds_per_image"] / result["onnx_seconds_per_image"], 2)
    result["speedup_cpu"] = round(result["eager_cpu_seconds_per_image"] / result["onnx_cpu_seconds_per_image"], 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS), help="configuration(s) to run")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per backend (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and onnxruntime")
    parser.add_argument("--keep", help="folder for the exported files (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="onnx-speed-") as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.only or CONFIGS:
            results.append(run_one(name, args.reps, args.threads, folder))
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                      "load_average_1min_at_start": round(load, 2), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
