"""Images per second with 1 and with N processes (torchrun, gloo, one thread each) for CPU presets, and the
scaling efficiency = rate(N) / (N · rate(1)).  Prints JSON.

Each measurement is a real ``inverseg train`` run on the procedural scenes; the rate comes from the loss log's
wall-clock ``seconds`` between the first logged step after warm-up and the last one, so start-up (imports,
rendezvous, the first slow steps) is excluded.  1- and N-process runs alternate, ``--repeats`` times, so that a
change in machine load hits both alike.  Run it on a quiet machine: N processes need N free cores.

    python benchmarks/ddp_scaling.py --presets crn-cpu spade-cpu --nproc 2 --steps 40
    python benchmarks/ddp_scaling.py --presets spade-cpu --set train.gradient_bucket_mb=0   # without the overlap
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def images_per_second(preset: str, nproc: int, steps: int, warmup: int, batch_size: int,
                      overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train = ["-m", "inverseg", "train", "--quiet", "--config", preset, "--out", str(run),
                 "data.dataset=synthetic", f"train.steps={steps}", "train.minutes=null", "train.threads=1",
                 f"train.batch_size={batch_size}", "train.log_every=1", "train.checkpoint_every=0",
                 "train.num_samples=0", "train.tensorboard=false", *overrides]
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, *launcher, *train], check=True, env=env, capture_output=True)
        records = [json.loads(line) for line in (run / "logs" / "losses.jsonl").read_text().splitlines()]
    first, last = records[warmup - 1], records[-1]
    return (last["step"] - first["step"]) * batch_size * nproc / (last["seconds"] - first["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["crn-cpu", "spade-cpu"])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1, help="per process")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every run, e.g. train.gradient_bucket_mb=0 (no overlap)")
    args = parser.parse_args()
    results = {}
    for preset in args.presets:
        rates = {1: [], args.nproc: []}
        for _ in range(args.repeats):
            for nproc in (1, args.nproc):
                rates[nproc].append(images_per_second(preset, nproc, args.steps, args.warmup, args.batch_size,
                                                        args.set))
        one, many = max(rates[1]), max(rates[args.nproc])
        results[preset] = {"images_per_s": {str(n): [round(r, 3) for r in v] for n, v in rates.items()},
                           "efficiency": round(many / (args.nproc * one), 3)}
        print(json.dumps({preset: results[preset]}), file=sys.stderr)
    print(json.dumps({"nproc": args.nproc, "threads_per_process": 1, "batch_per_process": args.batch_size,
                      "overrides": args.set,
                      "load_average": os.getloadavg()[0], "results": results}, indent=1))


if __name__ == "__main__":
    main()
