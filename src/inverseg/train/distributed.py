"""Data-parallel training under ``torchrun``: one process per device, the same model on every rank.

``torchrun`` (or ``inverseg train --nproc N``, which starts it) sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the
rendezvous address; the Trainer reads them through ``Distributed.from_environment`` and joins the process group
(gloo on CPU, NCCL on CUDA with one device per local rank).  What makes N processes train one model:

- the same start: rank 0's parameters and buffers are broadcast after construction, ``--init-from`` and resume;
- a disjoint shard of every epoch per rank (``shard_batches``), with per-sample augmentation seeds as before;
- gradients averaged across ranks before *every* optimiser step (``average_gradients``, called from
  ``Method.optimizer_step``), so every rank applies the identical update and the weights never drift apart;
- module buffers (batch-norm statistics, spectral-norm vectors, CRN's λ balancer, EMA statistics) broadcast from
  rank 0 after each step, as DistributedDataParallel does with ``broadcast_buffers=True``;
- decisions agreed by all ranks: a NaN/Inf step is skipped everywhere, a stop signal or an exhausted budget on one
  rank stops all of them at the same step boundary;
- side work whose result lives in buffers (pix2pixHD's feature clusters, the EMA generator's batch-norm
  recalibration) done by rank 0 alone and broadcast (``on_main``, called through ``Method.on_main_rank``).

Why not wrap the networks in ``DistributedDataParallel``: the methods alternate several optimisers over
sub-networks (GAN G/D steps, pix2pixHD's frozen global generator, SIMS's stages, ``--freeze-loaded``), and DDP's
reducer expects every wrapped parameter to receive a gradient in every backward pass, or it needs
``find_unused_parameters`` and still hangs when ranks differ.  ``GradientBuckets`` does DDP's useful part for any
of them: while one optimiser's backward pass runs, the gradients that are complete are all-reduced in buckets
(``train.gradient_bucket_mb``, asynchronously, on a process group of their own), so communication overlaps the
rest of the backward pass.  Buckets always start in the same order on every rank and every bucket is reduced once
per step, with a zero for a parameter that got no gradient on that rank, so a rank that skips a module cannot make
the collectives disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, TypeVar

import torch
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    # set by ``start``: the process group of the gradient buckets and the buckets of each optimiser
    _state: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_environment(cls) -> "Distributed":
        """The ranks torchrun announced (a plain ``inverseg train`` is rank 0 of 1)."""
        return cls(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                   local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ process group
    def start(self, device: torch.device, timeout_minutes: float, bucket_mb: float = 25.0) -> torch.device:
        """Join the process group; returns this rank's device (``cuda:LOCAL_RANK`` on GPUs).  ``bucket_mb``: size
        of the gradient buckets all-reduced during the backward pass (0: one all-reduce after it)."""
        if not self.enabled:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
        # the buckets' collectives run while the backward pass may issue others (SyncBatchNorm): a group of their
        # own keeps each stream in the same order on every rank
        self._state.update(bucket_group=dist.new_group(), bucket_bytes=int(bucket_mb * 2 ** 20))
        return device

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    # ------------------------------------------------------------------ collectives
    def backward(self, key: str, loss: torch.Tensor, parameters: list[nn.Parameter]) -> None:
        """``loss.backward()``, after which each of ``parameters`` holds its gradient averaged over the ranks.

        With buckets (``train.gradient_bucket_mb`` > 0) the all-reduces start during the backward pass as the
        gradients complete; ``key`` names the optimiser whose buckets are reused while its parameters stay the same.
        """
        bucket_bytes = self._state.get("bucket_bytes", 0)
        if not self.enabled or not parameters or bucket_bytes <= 0:
            loss.backward()
            self.average_gradients(parameters)
            return
        buckets = self._state.get(key)
        if buckets is None or not buckets.holds(parameters):  # e.g. pix2pixHD unfreezing its global generator
            if buckets is not None:
                buckets.remove()
            buckets = self._state[key] = GradientBuckets(parameters, self.world_size, self._state["bucket_group"],
                                                         bucket_bytes)
        with buckets:
            loss.backward()

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks, in one flat all-reduce.

        A parameter without a gradient on some ranks counts as a zero gradient there; one without a gradient on
        every rank keeps ``grad = None`` so that Adam leaves it (and its moments) untouched, as in one process.
        """
        if not self.enabled or not parameters:
            return
        import torch.distributed as dist

        flat = flatten_gradients(parameters)
        dist.all_reduce(flat)
        unflatten_mean(parameters, flat, self.world_size)

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (one rank's NaN makes every rank skip the step)."""
        return not self.any_true(not flag)

    def any_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on some rank (one rank's stop signal or spent budget stops every rank)."""
        if not self.enabled:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each logged loss over the ranks (every rank passes the same keys)."""
        if not self.enabled or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor)
        return {k: v / self.world_size for k, v in zip(keys, tensor.tolist())}

    def broadcast_state(self, module: nn.Module, parameters: bool = True) -> None:
        """Copy rank 0's buffers (and parameters) into every rank's ``module``."""
        if not self.enabled:
            return
        import torch.distributed as dist

        tensors = list(module.buffers())
        if parameters:
            tensors += [p.data for p in module.parameters()]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            if tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32):
                by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():  # one broadcast per dtype, not one per tensor (this runs every step)
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            torch._foreach_copy_(group, [part.view_as(t) for part, t in
                                         zip(flat.split([t.numel() for t in group]), group)])

    def on_main(self, module: nn.Module, work: Callable[[], T]) -> T | None:
        """Run ``work`` on rank 0 only, then copy ``module``'s buffers (what ``work`` changed) to every rank.

        The other ranks skip the work and wait in the broadcast, so ``work`` must finish within
        ``train.distributed_timeout_minutes``.  Returns ``work()``'s result on rank 0 and None elsewhere.
        """
        result = work() if self.is_main else None
        self.broadcast_state(module, parameters=False)
        return result

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def _device(self) -> torch.device:
        import torch.distributed as dist

        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")


def flatten_gradients(parameters: list[nn.Parameter]) -> torch.Tensor:
    """One fp32 vector: a has-gradient flag per parameter, then every gradient (zeros where there is none)."""
    has_gradient = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32,
                                device=parameters[0].device)
    return torch.cat([has_gradient, *[(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                                      for p in parameters]])


def unflatten_mean(parameters: list[nn.Parameter], flat: torch.Tensor, world_size: int) -> None:
    """Write the summed ``flatten_gradients`` vector back as mean gradients; a parameter that had a gradient on no
    rank keeps ``grad = None``."""
    counts, values = flat[:len(parameters)], flat[len(parameters):]
    offset = 0
    for parameter, count in zip(parameters, counts.tolist()):
        size = parameter.numel()
        if count > 0:
            parameter.grad = (values[offset:offset + size] / world_size).view_as(parameter).to(parameter.dtype)
        offset += size


class GradientBuckets:
    """One optimiser's parameters in buckets of about ``bucket_bytes``, all-reduced asynchronously during the
    backward pass as soon as every gradient of a bucket is complete (``register_post_accumulate_grad_hook``).

    Why it cannot deadlock: bucket i starts only after buckets 0…i-1 (so every rank issues them in one order), and
    leaving the ``with`` block starts every bucket not started yet, filling in zeros for parameters that received no
    gradient on this rank (with the has-gradient flags of ``average_gradients``).  Every rank therefore issues the
    same collectives in the same order, whichever modules its backward pass reached.  Only the hooks of the
    ``with`` block act, so gradients computed elsewhere (another optimiser's backward) start nothing.
    """

    def __init__(self, parameters: list[nn.Parameter], world_size: int, group, bucket_bytes: int):
        self.world_size, self.group = world_size, group
        self.parameter_ids = [id(p) for p in parameters]
        self.buckets: list[list[nn.Parameter]] = []
        size = bucket_bytes
        for parameter in reversed(parameters):  # gradients complete in roughly the reverse order of registration
            if size + 4 * parameter.numel() > bucket_bytes and (not self.buckets or self.buckets[-1]):
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(parameter)
            size += 4 * parameter.numel()
        self.bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self.hooks = [p.register_post_accumulate_grad_hook(self._on_gradient) for p in parameters]
        self.active = False

    def holds(self, parameters: list[nn.Parameter]) -> bool:
        return self.parameter_ids == [id(p) for p in parameters]

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()

    def __enter__(self) -> "GradientBuckets":
        self.complete = [0] * len(self.buckets)
        self.started: list[tuple[int, torch.Tensor, object]] = []
        self.active = True
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        self.active = False
        if error_type is not None:  # the backward pass failed: the job ends, nothing to average
            return
        while len(self.started) < len(self.buckets):
            self._start_next()
        for index, flat, work in self.started:
            work.wait()
            unflatten_mean(self.buckets[index], flat, self.world_size)

    def _on_gradient(self, parameter: nn.Parameter) -> None:
        index = self.bucket_of.get(id(parameter)) if self.active else None
        if index is None:
            return
        self.complete[index] += 1
        while len(self.started) < len(self.buckets) and \
                self.complete[len(self.started)] == len(self.buckets[len(self.started)]):
            self._start_next()

    def _start_next(self) -> None:
        import torch.distributed as dist

        index = len(self.started)
        flat = flatten_gradients(self.buckets[index])
        self.started.append((index, flat, dist.all_reduce(flat, group=self.group, async_op=True)))


def shard_batches(order: list[int], batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """This rank's batches of one epoch: global batch i holds ``world_size × batch_size`` consecutive samples of
    the epoch's order, and rank r takes the r-th slice of each, so the ranks' shards are disjoint and a world of
    one reproduces the single-process order.  The incomplete last global batch is dropped (``drop_last``)."""
    global_batch = batch_size * world_size
    start = rank * batch_size
    return [order[i + start:i + start + batch_size] for i in range(0, len(order) - global_batch + 1, global_batch)]


def sync_batchnorm_note(device: torch.device, world_size: int, wanted: bool) -> str | None:
    """Why batch norm stays per-process, or None when it is synchronised (torch's SyncBatchNorm needs CUDA)."""
    if world_size <= 1 or not wanted:
        return None
    if device.type != "cuda":
        return (f"train.sync_batchnorm: SyncBatchNorm needs CUDA devices; on {device.type} each of the {world_size} "
                f"processes normalises with its own batch statistics")
    return None
