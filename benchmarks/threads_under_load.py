"""Training beside a CPU hog: fixed thread counts vs ``train.threads: auto``.

OpenMP threads spin while they wait for a core, so a 2-thread step on a 2-core machine that also runs other
busy processes can take many times longer than a 1-thread step.  This script measures a CRN training step
(``crn-cpu`` widths, batch 1, 64×128 by default) in fresh processes:

  * ``quiet-1``: 1 thread, nothing else started by this script (the reference speed);
  * with ``--hogs`` busy-looping processes running: ``hog-fixed-N`` (N = all cores) and ``hog-auto``
    (the count ``auto_threads`` picks once the load average has risen).

Printed as JSON: wall and CPU seconds per step of each variant, the threads ``auto`` chose, and the share of
the quiet single-thread speed each loaded variant keeps.  Other jobs on the machine distort the numbers: the
load average before each variant is recorded.

    python benchmarks/threads_under_load.py --hogs 2 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HOG = "while True:\n    pass\n"


def run_one(threads: str, steps: int, size: tuple[int, int]) -> dict:
    import torch

    from inverseg.config import load_run_config
    from inverseg.labels.schemes import CAMVID
    from inverseg.methods import get_method
    from inverseg.utils.threads import auto_threads

    chosen = auto_threads() if threads == "auto" else int(threads)
    torch.set_num_threads(chosen)
    torch.manual_seed(0)
    grid = [size[0] // 32, size[1] // 32]  # crn-cpu's 6 modules double the base grid 5 times
    config = load_run_config("crn-cpu", [f"data.size=[{size[0]},{size[1]}]", f"model.base_grid={grid}"])
    method = get_method("crn")(config.settings, CAMVID, size, training=True)
    label = torch.randint(0, CAMVID.num_classes, (1, *size))
    batch = {"image": torch.rand(1, 3, *size) * 2 - 1, "label": label, "name": ["x"]}
    method.train_step(batch, 0)  # warm-up
    start, start_cpu = time.perf_counter(), time.process_time()
    for step in range(1, steps + 1):
        method.train_step(batch, step)
    return {"threads": chosen, "wall_s_per_step": round((time.perf_counter() - start) / steps, 4),
            "cpu_s_per_step": round((time.process_time() - start_cpu) / steps, 4)}


def measure(variant: str, threads: str, args) -> dict:
    load = os.getloadavg()[0]
    command = [sys.executable, __file__, "--one", threads, "--steps", str(args.steps), "--size", args.size]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return {"variant": variant, "load_before": round(load, 2), **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hogs", type=int, default=2, help="busy-looping processes to start (default 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="64x128")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, size)))
        return 0
    from inverseg.utils.threads import available_cores

    cores = available_cores()
    results = [measure("quiet-1", "1", args)]
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    try:
        deadline = time.monotonic() + 120  # the 1-minute load average needs time to see the hogs
        while os.getloadavg()[0] < args.hogs - 0.3 and time.monotonic() < deadline:
            time.sleep(2)
        for _ in range(2):  # interleaved, twice
            results.append(measure(f"hog-fixed-{cores}", str(cores), args))
            results.append(measure("hog-auto", "auto", args))
    finally:
        for hog in hogs:
            hog.kill()
    quiet = results[0]["wall_s_per_step"]
    for result in results:
        result["share_of_quiet_1_thread_speed"] = round(quiet / result["wall_s_per_step"], 3)
    print(json.dumps({"cores": cores, "hogs": args.hogs, "size": args.size, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
