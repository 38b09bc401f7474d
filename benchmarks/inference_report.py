"""Issue 13, inference: ms per image of eager PyTorch, torch.compile and the ONNX export, and the GFLOP/s they
reach against a matmul roofline measured in the same process.

Every configuration runs in its own subprocess (so its peak RSS is its own) and builds the method at its preset
with random weights, as ``onnx_speed.py`` does.  The timed call is ``sample`` — label ids → one image, including
the label encoding — of each backend:

* ``eager``: the method under ``torch.inference_mode``;
* ``compile``: the same method with its inference modules replaced by ``torch.compile(module, mode=--mode)``;
  the first call (compilation plus one forward) is reported as ``compile_seconds`` and not timed;
* ``onnx``: ``inverseg.export.export_onnx`` to a temporary file, run by ``load_onnx_pipeline`` (onnxruntime).

A backend that fails to build reports its error string instead of numbers.  After one warm-up call each, every
rep times each backend once (the order rotates by one per rep, because timings drift on this shared machine) and
one ``_common.matmul_gflops`` roofline (fp32 2048² matmul, same thread count).  GFLOP per image is 2 × the
multiply-adds of the Conv2d / ConvTranspose2d / Linear layers seen during the eager warm-up
(``_common.count_flops``).  Reported per backend, medians over the reps: wall and CPU ms per image, GFLOP/s and
fraction of the roofline (both by CPU time, which leaves out the neighbours' share of the cores), and the
process's peak RSS after the eager warm-up alone and at the end.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference_report.py      # the four onnx_speed configs
    ... benchmarks/inference_report.py --only crn-96x128 --reps 1 --backends eager onnx
    ... benchmarks/inference_report.py --headline --reps 2   # one 1024×2048 map through two CRNs (slow)

The headline's goal: ``crn-1024p`` within 1.2× of the roofline (``roofline_fraction`` ≥ 0.83).
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
from torch import nn

from _common import count_flops, matmul_gflops, peak_rss_mb, run_each
from onnx_speed import CONFIGS, build_pipeline, label_map, time_call

# one 1024×2048 map (19 Cityscapes classes + void): crn-cpu's widths from a 32×64 grid, and the paper network
HEADLINE = {
    "crn-cpu-1024x2048": ("crn-cpu", ["data.size=[1024,2048]", "model.base_grid=[32,64]"]),
    "crn-1024p": ("crn-1024p", []),
}
ALL = {**CONFIGS, **HEADLINE}
BACKENDS = ("eager", "compile", "onnx")


class CompiledSampler:
    """``method.sample`` with the method's inference modules swapped for their compiled versions during the call,
    so that the label encoding and the sampling around them are the eager method's own."""

    def __init__(self, method, mode: str):
        self.method = method
        modules = {name: getattr(method, name, None) for name in method.inference_modules}
        self.compiled = {name: torch.compile(module, mode=mode) for name, module in modules.items()
                         if isinstance(module, nn.Module)}

    def sample(self, label: torch.Tensor, **options) -> torch.Tensor:
        originals = {name: getattr(self.method, name) for name in self.compiled}
        try:
            for name, module in self.compiled.items():
                setattr(self.method, name, module)
            return self.method.sample(label, **options)
        finally:
            for name, module in originals.items():
                setattr(self.method, name, module)


def error_text(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def run_one(name: str, reps: int, threads: int, backends: list[str], mode: str, folder: Path) -> dict:
    from inverseg.export import export_onnx, load_onnx_pipeline

    torch.set_num_threads(threads)
    preset, overrides = ALL[name]
    pipe = build_pipeline(preset, overrides)
    method = pipe.method
    label = label_map(pipe.spec, pipe.image_size)

    def timed(sampler) -> tuple[float, float]:
        with torch.inference_mode():
            wall, cpu, _ = time_call(lambda: sampler.sample(label, generator=torch.Generator().manual_seed(0)))
        return wall, cpu

    with count_flops(method) as tally:
        timed(method)  # the eager warm-up, counted
    result = {"config": name, "preset": preset, "overrides": overrides, "size": list(pipe.image_size),
              "params_M": round(method.inference_parameter_count() / 1e6, 2), "threads": threads, "reps": reps,
              "gflop_per_image": round(tally["flops"] / 1e9, 3), "peak_rss_mb_eager": peak_rss_mb(), "errors": {}}
    samplers = {"eager": method}
    if "compile" in backends:
        try:
            sampler = CompiledSampler(method, mode)
            result["compile_seconds"] = round(timed(sampler)[0], 1)
            samplers["compile"] = sampler
        except Exception as error:  # noqa: BLE001 — reported, not fatal: the other backends still run
            result["errors"]["compile"] = error_text(error)
    if "onnx" in backends:
        try:
            start = time.perf_counter()
            with torch.no_grad():
                export_onnx(pipe, folder / f"{name}.onnx")
            result["export_seconds"] = round(time.perf_counter() - start, 1)
            sampler = load_onnx_pipeline(folder / f"{name}.onnx", threads=threads).method
            timed(sampler)  # warm-up: onnxruntime's kernel selection and arena
            samplers["onnx"] = sampler
        except Exception as error:  # noqa: BLE001
            result["errors"]["onnx"] = error_text(error)
    order = [key for key in BACKENDS if key in samplers and key in backends]
    wall = {key: [] for key in order}
    cpu = {key: [] for key in order}
    roofline = []
    for rep in range(reps):
        for key in order[rep % len(order):] + order[:rep % len(order)]:
            seconds, cpu_seconds = timed(samplers[key])
            wall[key].append(seconds)
            cpu[key].append(cpu_seconds)
        roofline.append(matmul_gflops()[1])
    peak = statistics.median(roofline)
    result["roofline_gflop_per_s"] = round(peak, 1)
    result["roofline_range"] = [round(min(roofline), 1), round(max(roofline), 1)]
    for key in order:
        seconds = statistics.median(cpu[key])
        achieved = tally["flops"] / 1e9 / seconds
        result[key] = {"ms_per_image": round(1e3 * statistics.median(wall[key]), 2),
                       "cpu_ms_per_image": round(1e3 * seconds, 2), "gflop_per_s": round(achieved, 1),
                       "roofline_fraction": round(achieved / peak, 3)}
    result["peak_rss_mb"] = peak_rss_mb()
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(ALL), help="configurations (default: onnx_speed's four)")
    parser.add_argument("--headline", action="store_true", help=f"run {', '.join(HEADLINE)} (slow) instead")
    parser.add_argument("--backends", nargs="*", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--mode", default="default", help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per backend after one warm-up each")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and onnxruntime")
    parser.add_argument("--one", choices=sorted(ALL), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory(prefix="inference-report-") as folder:
            print(json.dumps(run_one(args.one, args.reps, args.threads, args.backends, args.mode, Path(folder))))
        return 0
    names = list(HEADLINE) if args.headline else args.only or list(CONFIGS)
    results = run_each(__file__, names, ["--reps", str(args.reps), "--threads", str(args.threads), "--mode",
                                         args.mode, "--backends", *args.backends],
                       env={**os.environ, "OMP_NUM_THREADS": str(args.threads),
                            "TORCHINDUCTOR_COMPILE_THREADS": str(args.threads)})  # compile workers, too
    print(json.dumps({"torch": torch.__version__, "compile_mode": args.mode, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
