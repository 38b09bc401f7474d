"""What the train-step benchmarks (``gan_step.py``, ``oasis_step.py``) share: timing and the command line.

Each configuration runs in its own subprocess so that the peak RSS it reports belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


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
    results = []
    for name in configs:
        command = [sys.executable, script, "--one", name] + (["--threads", str(args.threads)] if args.threads else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            results.append({"config": name, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=1))
    return 0
