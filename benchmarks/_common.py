"""What the benchmarks share: train-step timing and the command line (``gan_step.py``, ``oasis_step.py``), peak
RSS, and the FLOP count and matmul roofline of ``inference_report.py``.

Each configuration runs in its own subprocess so that the peak RSS it reports belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn


def load_preset(entry: tuple, overrides=()) -> tuple:
    """A ``CONFIGS`` entry (preset, size or None, batch size or None, timed steps) → (preset, run config, size,
    batch size, timed steps); the Nones take the preset's values; ``overrides`` are ``key=value`` strings.
    Seeds torch so every run builds the same nets."""
    from inverseg.config import load_run_config

    preset, size, batch_size, steps = entry
    torch.manual_seed(0)
    config = load_run_config(preset, list(overrides))
    return preset, config, tuple(size or config.data.size), batch_size or config.train.batch_size, steps


def time_train_steps(method, batch_at, first_step: int, steps: int) -> tuple[dict[str, float], float, float]:
    """``steps`` calls of ``method.train_step(batch_at(step), step)`` → (last losses, wall s/step, CPU s/step)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for step in range(first_step, first_step + steps):
        losses = method.train_step(batch_at(step), step)
    return losses, (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# The layers whose multiply-adds are the work of a generator; norms, activations and resizes are a few FLOPs per
# value and left out, as are functional matmuls (LGGAN's class pooling einsum, SIMS's 3×3 transforms: negligible).
COUNTED_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def layer_macs(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-adds of one call of a ``COUNTED_LAYERS`` layer (bias additions not counted)."""
    if isinstance(layer, nn.ConvTranspose2d):  # every input value meets out/groups × kernel weights
        return inputs[0].numel() * (layer.out_channels // layer.groups) * math.prod(layer.kernel_size)
    if isinstance(layer, nn.Conv2d):  # every output value sums in/groups × kernel products
        return output.numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
    return output.numel() * layer.in_features


@contextmanager
def count_flops(module: nn.Module) -> Iterator[dict[str, int]]:
    """``{"flops": n}``, where n grows by 2 × the multiply-adds of every ``COUNTED_LAYERS`` call inside ``module``
    while the block runs (forward hooks, removed on exit).  Counted from the shapes actually seen, so it holds for
    whatever the forward does (skipped branches, k outputs, the sampling path of ``Method.sample``)."""
    tally = {"flops": 0}

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        tally["flops"] += 2 * layer_macs(layer, inputs, output)

    handles = [layer.register_forward_hook(hook) for layer in module.modules() if isinstance(layer, COUNTED_LAYERS)]
    try:
        yield tally
    finally:
        for handle in handles:
            handle.remove()


def matmul_gflops(size: int = 2048, reps: int = 3) -> tuple[float, float]:
    """The roofline a network's GFLOP/s is compared with: fp32 GFLOP/s of a ``size``² matmul at torch's current
    thread count, median of ``reps`` after a warm-up, by wall and by process CPU time (wall counts the neighbours'
    share of the cores; CPU time does not)."""
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator) for _ in range(2))
    out = torch.empty(size, size)
    torch.mm(left, right, out=out)  # warm-up: the BLAS kernel and its packing buffers
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        torch.mm(left, right, out=out)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    flops = 2 * size ** 3
    return flops / statistics.median(wall) / 1e9, flops / max(statistics.median(cpu), 1e-9) / 1e9


def main(script: str, doc: str, configs: dict, run_one) -> int:
    """``--one NAME``: ``run_one(NAME)`` here, JSON on stdout; otherwise every configuration in a subprocess of
    ``script``, each result on stderr as it comes, then the JSON list on stdout."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", choices=sorted(configs), help="run one configuration in this process")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    results = run_each(script, list(configs), ["--threads", str(args.threads)] if args.threads else [])
    print(json.dumps(results, indent=1))
    return 0


def run_each(script: str, names: list[str], arguments: Sequence[str] = (), env: dict | None = None) -> list[dict]:
    """``script --one NAME *arguments`` in a fresh process per name → the JSON each prints last (or its last error
    line), each also on stderr as it comes."""
    results = []
    for name in names:
        done = subprocess.run([sys.executable, script, "--one", name, *arguments], capture_output=True, text=True,
                              env=env)
        if done.returncode:
            results.append({"config": name, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results
