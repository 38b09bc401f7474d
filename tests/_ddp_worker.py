"""Run under torchrun by test_distributed.py: train presets with the shared Trainer, then report from rank 0
whether every rank ended with identical weights, how often each rank did the side work that rank 0 alone should do
(k-means of pix2pixHD's features, EMA batch-norm recalibration) and each rank's feature cluster centres (and, in
``gradients`` mode, how gradients were averaged).

usage: torchrun --nproc_per_node 2 _ddp_worker.py OUT.json RUN_ROOT PRESET[:override;override…] …
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import inverseg.methods.gan
import inverseg.methods.oasis
from inverseg.config import load_run_config
from inverseg.models.pix2pixhd import FeatureClusters
from inverseg.train import Trainer
from inverseg.train.distributed import Distributed


def weights_digest(module: torch.nn.Module) -> list[float]:
    return [float(t.double().sum()) + float((t.double() ** 2).sum()) for t in module.state_dict().values()
            if t.is_floating_point()]


SIDE_WORK = {"kmeans": 0, "recalibrate": 0}


def count_side_work() -> None:
    """Wrap the functions that do the side work so that each call on this rank is counted."""
    def counted(key, function):
        def wrapper(*args, **kwargs):
            SIDE_WORK[key] += 1
            return function(*args, **kwargs)
        return wrapper

    FeatureClusters.fit = counted("kmeans", FeatureClusters.fit)
    for module in (inverseg.methods.gan, inverseg.methods.oasis):
        module.recalibrate_batch_norm = counted("recalibrate", module.recalibrate_batch_norm)


def balancer_state(method) -> dict | None:
    """CRN's λ balancer: the weights, the running statistics and whether λ was rebalanced (a bool buffer)."""
    balancer = getattr(method, "balancer", None)
    if balancer is None:
        return None
    return {"weights": balancer.weights.tolist(), "running_sum": balancer.running_sum.tolist(),
            "running_count": int(balancer.running_count), "rebalanced": bool(balancer.rebalanced)}


def gather(value) -> list:
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def gradient_check() -> dict:
    """Rank r holds gradient r+1 for ``a``, a gradient only on rank 0 for ``b`` and none for ``c``."""
    sync = Distributed.from_environment()
    dist.init_process_group("gloo")
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    a.grad = torch.full((3,), float(sync.rank + 1))
    b.grad = torch.ones(3) * 4 if sync.rank == 0 else None
    sync.average_gradients([a, b, c])
    result = {"a": a.grad.tolist(), "b": b.grad.tolist(), "c": c.grad is None,
              "any": sync.any_true(sync.rank == 1), "all": sync.all_true(sync.rank == 1),
              "mean": sync.mean({"loss": float(sync.rank)})}
    dist.destroy_process_group()
    return result


def main() -> None:
    out, root, *jobs = sys.argv[1:]
    if jobs == ["gradients"]:
        result = gradient_check()
        rank = Distributed.from_environment().rank
        Path(f"{out}.{rank}").write_text(json.dumps(result))
        return
    count_side_work()
    results = {}
    for job in jobs:
        preset, _, overrides = job.partition(":")
        config = load_run_config(preset, [o for o in overrides.split(";") if o])
        trainer = Trainer(config, Path(root) / preset, show_progress=False)
        before = dict(SIDE_WORK)
        summary = trainer.fit()
        digests = gather(weights_digest(trainer.method))
        clusters = getattr(trainer.method, "clusters", None)
        results[preset] = {"step": summary["step"], "identical": all(d == digests[0] for d in digests),
                           "world_size": trainer.dist.world_size,
                           "side_work": gather({key: SIDE_WORK[key] - before[key] for key in SIDE_WORK}),
                           "centres": gather(clusters.centers.tolist() if clusters is not None else None),
                           "cluster_counts": gather(clusters.counts.tolist() if clusters is not None else None),
                           "balancer": gather(balancer_state(trainer.method))}
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
