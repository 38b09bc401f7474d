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
    """Rank r holds gradient r+1 for ``a``, a gradient only on rank 0 for ``b`` and none for ``c``.  Then the same
    through ``Distributed.backward`` with buckets of one parameter each, where the backward pass of rank 1 does not
    reach ``b``: the bucketed gradients must equal the flat all-reduce's."""
    sync = Distributed.from_environment()
    sync.start(torch.device("cpu"), timeout_minutes=1, bucket_mb=16 / 2 ** 20)  # 16 bytes: one bucket per parameter
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    a.grad = torch.full((3,), float(sync.rank + 1))
    b.grad = torch.ones(3) * 4 if sync.rank == 0 else None
    sync.average_gradients([a, b, c])
    result = {"a": a.grad.tolist(), "b": b.grad.tolist(), "c": c.grad is None,
              "any": sync.any_true(sync.rank == 1), "all": sync.all_true(sync.rank == 1),
              "mean": sync.mean({"loss": float(sync.rank)})}

    torch.manual_seed(sync.rank)
    layers = [torch.nn.Linear(4, 4) for _ in range(4)]
    parameters = [p for layer in layers[3:] + layers[:3] for p in layer.parameters()]  # unused layer's bucket last
    x = torch.randn(2, 4)

    def loss() -> torch.Tensor:  # rank 1 skips layer 2; nobody uses layer 3
        for i, layer in enumerate(layers[:3]):
            x_ = layer(x if i == 0 else y) if not (i == 2 and sync.rank == 1) else y
            y = torch.tanh(x_)
        return y.square().sum()

    loss().backward()
    sync.average_gradients(parameters)
    flat = [None if p.grad is None else p.grad.clone() for p in parameters]
    for p in parameters:
        p.grad = None
    sync.backward("test", loss(), parameters)
    result["buckets"] = len(sync._state["test"].buckets)
    result["bucketed_equals_flat"] = all(
        (g is None and p.grad is None) or (g is not None and p.grad is not None and torch.equal(g, p.grad))
        for g, p in zip(flat, parameters))
    result["unused_stay_none"] = [p.grad is None for p in layers[3].parameters()]
    for p in parameters:  # a second step reuses the buckets, and gradients from outside the block start nothing
        p.grad = None
    with sync._state["test"] as buckets:
        loss().backward()
        # rank 0 started the buckets of layers 2, 1, 0 during the pass; rank 1, whose pass skips layer 2 (the
        # first bucket), could start none of them before the end
        result["started_during_backward"] = len(buckets.started)
    result["second_step_equal"] = all(g is None or torch.equal(g, p.grad) for g, p in zip(flat, parameters))
    loss().backward()  # no bucket is active: nothing is sent (a collective here would hang the next one)
    result["after"] = sync.mean({"x": 1.0})
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
