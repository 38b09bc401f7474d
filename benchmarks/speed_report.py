"""Issue 13: training-step CPU seconds and peak RSS of the current code against a baseline snapshot, interleaved.

For every configuration of ``_speed_configs.CONFIGS`` (SPADE, pix2pixHD global G and OASIS at ngf/ndf 32 and 64,
96×128, 12 CamVid classes, batch 1, random VGG19) it alternates fresh subprocesses of the baseline and the
current source tree (the PYTHONPATH is the only difference; the order flips every round), each building the same
seeded networks, running one warm-up step and timing ``--steps`` steps.  CPU seconds of one thread, because the
machine is shared (wall time measures the other jobs); peak RSS from ``resource.getrusage`` of that process.
``speedup`` = baseline CPU s/step ÷ current (median over the rounds); ``rss_ratio`` = current peak ÷ baseline.

Make the baseline once from the commit to compare against:

    mkdir -p /work/runs/speed/base && git archive main src | tar -x -C /work/runs/speed/base
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed_report.py --baseline /work/runs/speed/base/src \\
        --steps 2 --rounds 2 [--only spade-ngf32 …] [--set train.malloc=retain]

Inference (eager / torch.compile / ONNX against a matmul roofline, and the 1024×2048 CRN headline) is measured by
``inference_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURRENT_SRC = HERE.parent / "src"


def run_one(name: str, steps: int, threads: int, overrides: list[str]) -> dict:
    import torch

    from _common import peak_rss_mb, time_train_steps
    from _speed_configs import build

    torch.set_num_threads(threads)
    method, batch, config = build(name, overrides)
    if getattr(config.train, "malloc", "default") != "default":  # a Trainer option: applied as the Trainer does
        from inverseg.utils.malloc import set_malloc

        set_malloc(config.train.malloc)
    method.train_step(batch, 0)  # warm-up: allocations, oneDNN primitives
    losses, _, cpu = time_train_steps(method, lambda step: batch, 1, steps)
    return {"config": name, "step_cpu_seconds": round(cpu, 3), "peak_rss_mb": peak_rss_mb(),
            "losses": {key: round(value, 4) for key, value in losses.items()},
            "load_average_1min": round(os.getloadavg()[0], 2)}


def child(name: str, src: Path, steps: int, threads: int, overrides: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{HERE}", OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(steps), "--threads", str(threads),
                           *(["--set", *overrides] if overrides else [])],
                          env=env, capture_output=True, text=True, cwd=HERE)
    if done.returncode:
        raise RuntimeError(f"{name} with {src} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    from _speed_configs import CONFIGS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="the baseline's src folder (holding inverseg/)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/current process pairs per configuration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="configurations (default: all)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for the current side only (e.g. train.malloc=retain optim.adam=loop)")
    parser.add_argument("--one", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.threads, args.set)))
        return 0
    if args.baseline is None or not (args.baseline / "inverseg").is_dir():
        parser.error("--baseline must be a src folder holding inverseg/ (see the usage above)")
    report = []
    for name in args.only or CONFIGS:
        runs = {"baseline": [], "current": []}
        for round_ in range(args.rounds):
            order = ("baseline", "current") if round_ % 2 == 0 else ("current", "baseline")
            for side in order:
                current = side == "current"
                runs[side].append(child(name, CURRENT_SRC if current else args.baseline, args.steps, args.threads,
                                        args.set if current else []))
        cpu = {side: statistics.median(r["step_cpu_seconds"] for r in runs[side]) for side in runs}
        rss = {side: max(r["peak_rss_mb"] for r in runs[side]) for side in runs}
        entry = {"config": name, "current_overrides": args.set, "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
                 "step_cpu_seconds": cpu, "speedup": round(cpu["baseline"] / cpu["current"], 3),
                 "peak_rss_mb": rss, "rss_ratio": round(rss["current"] / rss["baseline"], 3),
                 "losses": {side: runs[side][0]["losses"] for side in runs},
                 "load_average_1min": [r["load_average_1min"] for side in runs for r in runs[side]]}
        print(json.dumps(entry), file=sys.stderr, flush=True)
        report.append(entry)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
