"""Where one training step's CPU time goes: torch.profiler over one step of an issue-13 configuration.

The step is labelled by part (G forward, D forwards in the G and in the D step, the VGG loss's real and fake
branches, each optimiser's backward and Adam step, spectral-norm power iterations), then the ten costliest
operators by self CPU time.  One thread; CPU time, not wall time, because the machine is shared.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_step.py spade-ngf64
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from _speed_configs import CONFIGS, build


def labelled(label_of, function):
    """``function`` with each call inside a profiler range named ``label_of(*args)``."""
    def wrapper(*args, **kwargs):
        with record_function(label_of(*args, **kwargs)):
            return function(*args, **kwargs)
    return wrapper


def instrument(method) -> None:
    """Name the parts of a step in the profile (forwards, backward+Adam per optimiser, power iterations)."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    discriminator = method.discriminator
    method.generator.forward = labelled(lambda *a, **k: "G forward" + ("" if torch.is_grad_enabled()
                                                                       else " (no_grad)"),
                                        method.generator.forward)
    discriminator.forward = labelled(
        lambda *a, **k: "D forward, " + ("D step" if next(discriminator.parameters()).requires_grad else "G step"),
        discriminator.forward)
    if method.vgg_loss is not None:
        extractor = method.vgg_loss.extractor
        extractor.forward = labelled(lambda *a, **k: "VGG " + ("fake" if torch.is_grad_enabled() else "real"),
                                     extractor.forward)
    for name, optimizer in method.optimizers.items():
        optimizer.step = labelled(lambda *a, _n=name, **k: f"Adam step {_n}", optimizer.step)
    step = method.optimizer_step
    method.optimizer_step = lambda name, loss: labelled(lambda *a: f"optimizer_step {name} (backward+Adam)",
                                                        step)(name, loss)
    original = _SpectralNorm.forward
    _SpectralNorm.forward = labelled(lambda *a, **k: "spectral norm (power iteration + W/σ)", original)


def run(name: str) -> dict:
    torch.set_num_threads(1)
    method, batch, _ = build(name)
    method.train_step(batch, 0)  # warm-up (allocations, oneDNN primitives)
    instrument(method)
    start = time.process_time()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=False) as prof:
        with record_function("train_step"):
            method.train_step(batch, 1)
    cpu_seconds = time.process_time() - start
    events = prof.key_averages()
    parts = {e.key: round(e.cpu_time_total / 1e3, 1) for e in events
             if e.key.startswith(("train_step", "G forward", "D forward", "VGG", "Adam", "optimizer_step", "spectral"))}
    parts = {key: f"{ms} ms ×{next(e.count for e in events if e.key == key)}" for key, ms in parts.items()}
    ops = sorted((e for e in events if not e.key.startswith(tuple(p.split(" ")[0] for p in parts))),
                 key=lambda e: -e.self_cpu_time_total)[:10]
    return {"config": name, "step_cpu_seconds_profiled": round(cpu_seconds, 2), "parts_cpu_total": parts,
            "top_ops_self_cpu_ms": {e.key: round(e.self_cpu_time_total / 1e3, 1) for e in ops}}


if __name__ == "__main__":
    for config in sys.argv[1:] or CONFIGS:
        print(json.dumps(run(config), indent=1), flush=True)
