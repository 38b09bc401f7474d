"""Soak test: kill a CRN training run with SIGKILL at random moments, resume it each time, and compare.

A deterministic tiny CRN run (procedural scenes at 24×32, ``train.deterministic=true``) is trained once without
interruption, then again with ``--kills`` SIGKILLs: some at random moments, some while a checkpoint is being
written (the ``.step_N.partial`` directory exists).  After each kill the run is resumed with
``inverseg train --resume``.  Printed as JSON: whether the final loss curve equals the uninterrupted one step for
step, whether the final weights are bit-identical, and how many steps each kill lost (at most one checkpoint
interval is the promise).

    python benchmarks/soak_kill.py --kills 20 --steps 200 --checkpoint-every 10
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ["data.dataset=synthetic", "data.size=[24,32]", "data.length=40", "model.base_grid=[3,4]",
            "model.widths=[16,16,16,16]", "loss.layers=[relu1_2,relu2_2]", "loss.rebalance_at=20", "loss.window=10",
            "train.minutes=null", "train.deterministic=true", "train.threads=1", "train.log_every=1",
            "train.sample_every=0", "train.num_samples=0", "train.tensorboard=false"]


def train_command(run: Path, steps: int, checkpoint_every: int, resume: bool) -> list[str]:
    base = [sys.executable, "-m", "inverseg.cli.main", "train", "--quiet"]
    if resume:
        return base + ["--resume", str(run)]
    return base + ["--config", "crn-cpu", "--out", str(run), *SETTINGS, f"train.steps={steps}",
                   f"train.checkpoint_every={checkpoint_every}"]


def logged_steps(run: Path) -> list[dict]:
    log = run / "logs" / "losses.jsonl"
    records = []
    for line in (log.read_text().splitlines() if log.is_file() else []):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by the kill
            pass
    return records


def checkpoint_step(run: Path) -> int:
    from inverseg.train import checkpoint as ckpt

    try:
        return int(ckpt.read_state(ckpt.resolve_checkpoint(run))["step"])
    except ckpt.CheckpointError:
        return 0


def soak(run: Path, kills: int, steps: int, checkpoint_every: int, rng: random.Random) -> dict:
    events = []
    started = False
    while True:
        command = train_command(run, steps, checkpoint_every, resume=started)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = True
        if len(events) >= kills:
            _, err = process.communicate()
            if process.returncode:
                raise RuntimeError(f"final resume failed: {err.strip()[-500:]}")
            return {"events": events}
        during_write = len(events) % 3 == 2  # every third kill aims at a checkpoint being written
        before = max((r["step"] for r in logged_steps(run)), default=0)
        while process.poll() is None and max((r["step"] for r in logged_steps(run)), default=0) <= before:
            time.sleep(0.02)  # wait until this process trains (imports and weights take a few seconds)
        hit_write = False
        if during_write:
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                if list((run / "checkpoints").glob(".step_*.partial")):
                    hit_write = True
                    break
                time.sleep(0.002)
        else:
            time.sleep(rng.uniform(0.0, 3.0))
        if process.poll() is not None:  # finished before we could kill it: the run is complete
            return {"events": events, "finished_early": True}
        logged_at_kill = max((r["step"] for r in logged_steps(run)), default=0)
        process.send_signal(signal.SIGKILL)
        process.wait()
        resumed_from = checkpoint_step(run)
        events.append({"logged_step": logged_at_kill, "resumed_from": resumed_from,
                       "lost_steps": logged_at_kill - resumed_from, "during_checkpoint_write": hit_write})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the two run directories in this folder")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="inverseg-soak-"))
    straight, killed = root / "straight", root / "killed"
    for run in (straight, killed):
        shutil.rmtree(run, ignore_errors=True)
    start = time.monotonic()
    subprocess.run(train_command(straight, args.steps, args.checkpoint_every, resume=False), check=True,
                   stdout=subprocess.DEVNULL)
    result = soak(killed, args.kills, args.steps, args.checkpoint_every, random.Random(args.seed))
    from inverseg.train import checkpoint as ckpt

    a, b = logged_steps(straight), logged_steps(killed)
    weights_a = ckpt.load_weights(ckpt.resolve_checkpoint(straight))
    weights_b = ckpt.load_weights(ckpt.resolve_checkpoint(killed))
    events = result["events"]
    report = {
        "kills": len(events),
        "kills_during_checkpoint_write": sum(e["during_checkpoint_write"] for e in events),
        "steps": args.steps, "checkpoint_every": args.checkpoint_every,
        "max_lost_steps": max((e["lost_steps"] for e in events), default=0),
        "lost_steps_total": sum(e["lost_steps"] for e in events),
        "loss_curve_identical": [r["loss"] for r in a] == [r["loss"] for r in b],
        "logged_steps": [len(a), len(b)],
        "weights_identical": all(bool((weights_a[k] == weights_b[k]).all()) for k in weights_a),
        "seconds": round(time.monotonic() - start, 1),
        "events": events,
    }
    print(json.dumps(report))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if report["loss_curve_identical"] and report["max_lost_steps"] <= args.checkpoint_every else 1


if __name__ == "__main__":
    sys.exit(main())
