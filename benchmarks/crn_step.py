"""CRN training/inference speed on this machine (a benchmark script, not a test).

    .venv/bin/python benchmarks/crn_step.py [--steps 8] [--threads 2]

Prints JSON.  For the CPU-sized CRN (widths 256,256,256,256,128,64; 6 modules) at 64×128 and 128×256, batch 1,
it times side by side in one run:

* ``plain``   — a plain eager reference: the perceptual loss runs VGG once on concat(output, reference) with
                autograd on, the way many re-implementations write it;
* ``inverseg`` — the CRN method's own ``train_step`` (reference branch without autograd);
* ``inverseg_cache`` — the same with ``loss.cache_reference=true`` (reference VGG features reused across
                epochs; valid without random augmentation), measured once the cache is warm.

For each: seconds per training step (wall and process CPU time — with one thread the CPU time is the figure to
compare on a shared machine), inference milliseconds per image (generator only), achieved GFLOP/s
(FLOPs of one training step from ``torch.utils.flop_counter`` divided by the step time) and the peak RSS of a
fresh process.  Every configuration runs in its own subprocess so peak RSS is per configuration.  Timings vary
±30 % between runs on a shared machine: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

SIZES = {"64x128": ((2, 4), (64, 128)), "128x256": ((4, 8), (128, 256))}
WIDTHS = [256, 256, 256, 256, 128, 64]


def build(size_key: str, cache: bool):
    import torch

    from inverseg.config import apply_overrides, build_run_config, read_preset
    from inverseg.labels.schemes import CAMVID
    from inverseg.methods.crn import CRN

    grid, size = SIZES[size_key]
    data = apply_overrides(read_preset("crn-cpu"), [
        f"data.size=[{size[0]},{size[1]}]", f"model.base_grid=[{grid[0]},{grid[1]}]",
        f"model.widths={WIDTHS}", f"loss.cache_reference={str(cache).lower()}",
    ])
    config = build_run_config(data)
    method = CRN(config.settings, CAMVID, size, training=True)
    generator = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(1, 3, *size, generator=generator) * 2 - 1,
                "label": torch.randint(0, 11, (1, *size), generator=generator), "name": [f"img{i}"]}
               for i in range(2)]
    return method, batches


def plain_step(method, batch):
    """Reference implementation: one VGG pass over [output; reference] with autograd, L1 per term."""
    import torch

    optimizer = method.optimizers["generator"]
    output = method.generator(method.encode(batch["label"]))[:, 0]
    features = method.perceptual.extractor(torch.cat([output, batch["image"]]))
    weights = method.balancer.weights
    loss = weights[0] * (output - batch["image"]).abs().mean() * 127.5
    for weight, name in zip(weights[1:], method.perceptual.layers):
        fake, real = features[name].chunk(2)
        loss = loss + weight * (fake - real).abs().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure(variant: str, size_key: str, steps: int, threads: int, queue) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    method, batches = build(size_key, cache=variant == "inverseg_cache")
    step = (lambda b: plain_step(method, b)) if variant == "plain" else (lambda b: method.train_step(b, 0))
    for index in range(3):  # warm-up (and cache fill)
        step(batches[index % 2])
    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops()
    start, start_cpu = time.perf_counter(), time.process_time()
    for index in range(steps):
        step(batches[index % 2])
    seconds = (time.perf_counter() - start) / steps
    cpu_seconds = (time.process_time() - start_cpu) / steps  # robust to other jobs when threads=1
    layout = method.encode(batches[0]["label"])
    with torch.no_grad():
        method.generator(layout)
        start = time.perf_counter()
        for _ in range(steps):
            method.generator(layout)
        inference_ms = (time.perf_counter() - start) / steps * 1000
    queue.put({
        "variant": variant, "size": size_key, "threads": threads, "train_step_s": round(seconds, 3),
        "train_step_cpu_s": round(cpu_seconds, 3),
        "inference_ms_per_image": round(inference_ms, 1), "train_step_gflop": round(flops / 1e9, 2),
        "achieved_gflop_per_s": round(flops / 1e9 / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "generator_parameters": sum(p.numel() for p in method.generator.parameters()),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    results = []
    for size_key in SIZES:
        for variant in ("plain", "inverseg", "inverseg_cache"):
            queue = context.Queue()
            process = context.Process(target=measure, args=(variant, size_key, args.steps, args.threads, queue))
            process.start()
            results.append(queue.get())
            process.join()
    summary = {}
    for size_key in SIZES:
        by = {r["variant"]: r for r in results if r["size"] == size_key}
        summary[size_key] = {
            f"speedup_{name}_vs_plain{suffix}": round(by["plain"][key] / by[variant][key], 2)
            for name, variant in (("inverseg", "inverseg"), ("cache", "inverseg_cache"))
            for suffix, key in (("", "train_step_s"), ("_cpu_time", "train_step_cpu_s"))
        }
    load = open("/proc/loadavg").read().split()[0]
    print(json.dumps({"load_average_1min_at_end": float(load), "results": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
