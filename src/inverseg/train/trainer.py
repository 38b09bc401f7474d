"""The one training loop every method runs through.

It knows nothing about CRN, SPADE or OASIS: it feeds batches to ``method.train_step``, applies the learning-rate
schedule to every optimiser the method owns, logs, samples fixed validation layouts into an HTML gallery,
and writes atomic checkpoints (every N steps, at the end, on SIGTERM/SIGINT/SIGUSR1 and when the time budget runs
out).  Steps whose loss or gradients are NaN/Inf are skipped, and too many in a row roll the run back to its last
checkpoint with a lower learning rate (``train.nonfinite_*``).

Exact resume: the data order is a pure function of (seed, epoch) and the position inside the epoch, the
DataLoader draws from its own generator, and checkpoints carry optimiser moments and the torch/python RNG
states — so ``inverseg train --resume RUN`` continues with the very batches and random draws the uninterrupted
run would have used (bit-identical with ``train.deterministic=true``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import RunConfig, build_run_config, config_problems
from ..data import open_dataset
from ..methods import get_method
from ..utils.images import to_uint8
from ..utils.io import atomic_write_text
from ..utils.malloc import set_malloc
from ..utils.threads import auto_threads, available_cores
from . import checkpoint as ckpt
from .control import Budget, NonFiniteTraining, StopSignals, TrainingProgress
from .distributed import Distributed, shard_batches, sync_batchnorm_note
from .precision import LossScaler, autocast
from .gallery import sample_grid, write_gallery
from .init_from import initialise_from, restore_freezing


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def collate(samples: list[dict]) -> dict:
    batch = {"name": [s["name"] for s in samples]}
    for key in ("image", "label", "instance"):
        if key in samples[0]:
            batch[key] = torch.stack([s[key] for s in samples])
    return batch


def move(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class Trainer:
    def __init__(self, config: RunConfig, run_dir: str | Path, resume: bool = False, show_progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        train = config.train
        self.dist = Distributed.from_environment()  # rank 0 of 1 unless started by torchrun
        self.show_progress = show_progress and self.dist.is_main
        if isinstance(train.threads, int):
            torch.set_num_threads(train.threads)
        elif train.threads == "auto" and (train.deterministic or self.dist.enabled):
            # results depend on the thread count (the order of float reductions): a deterministic run keeps one
            # count, the cores it may use, and does not adapt to the load; the ranks of one machine share its cores
            torch.set_num_threads(max(1, available_cores() // self.dist.local_world_size))
        self.next_thread_check = 0.0  # train.threads: auto → set before the first step, then every 30 s
        if train.malloc != "default" and not set_malloc(train.malloc):
            self._say(f"train.malloc={train.malloc}: this C library has no glibc mallopt; using its default")
        if train.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(train.seed)
        self.device = self.dist.start(pick_device(train.device), train.distributed_timeout_minutes,
                                      train.gradient_bucket_mb)

        self.dataset = open_dataset(config.data, split=config.data.split, augment=True)
        self.spec = self.dataset.spec
        if config.data.size is None:
            raise ValueError("data.size must be set for training (height, width)")
        method_class = get_method(config.method)
        self.method = method_class(config.settings, self.spec, tuple(config.data.size), training=True)
        self.method.to(self.device)
        if self.dist.enabled and train.sync_batchnorm and self.device.type == "cuda":
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.method.distributed = self.dist if self.dist.enabled else None
        if train.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if train.amp == "fp16":
            self.method.loss_scalers = {name: LossScaler() for name in self.method.optimizers}
        for optimizer in self.method.optimizers.values():
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        for problem in config_problems(config):  # e.g. an override that moves train.steps before rebalance_at
            self._say(f"note: {problem}")
        self.recalibration_record: dict | None = None  # filled by recalibration_batches (state.json)
        self.init_record = None  # --init-from: what was loaded, left new and frozen (state.json "init_from")
        if not resume and config.train.init.source:
            self.init_record, lines = initialise_from(self.method, config.train.init)
            for line in lines:
                self._say(line)
        self.method.before_training(lambda: open_dataset(config.data, split=config.data.split, augment=False))
        self.validation = self._validation_samples()
        self.step = 0
        self.cpu_seconds_before = 0.0  # CPU time of earlier sessions of this run (the budget spans resumes)
        self.bad_steps = self.consecutive_bad = self.rollbacks = 0  # NaN/Inf steps skipped (train.nonfinite_*)
        self.lr_factor = 1.0  # lowered by each NaN rollback; kept in checkpoints
        if resume:
            self._restore()
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", config.to_yaml())
        self._start_ranks(resume)
        self.loss_log = self.run_dir / "logs" / "losses.jsonl"
        if self.dist.is_main:
            self.loss_log.parent.mkdir(parents=True, exist_ok=True)
            if resume:
                self._truncate_loss_log()
        self.writer = self._tensorboard() if self.dist.is_main else None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | None = None, **kwargs) -> "Trainer":
        """Continue a run from its latest checkpoint; ``overrides`` may extend e.g. ``train.steps``."""
        import yaml

        from ..config import apply_overrides

        run_dir = Path(run_dir)
        config_file = run_dir / "config.yaml"
        if not config_file.is_file():
            raise ckpt.CheckpointError(f"{run_dir}: not a run directory (no config.yaml)")
        data = apply_overrides(yaml.safe_load(config_file.read_text()), overrides or [])
        config = build_run_config(data, preset=data.get("preset", ""))
        trainer = cls(config, run_dir, resume=True, **kwargs)
        if overrides:
            atomic_write_text(run_dir / "config.yaml", config.to_yaml())
        return trainer

    def _restore(self) -> None:
        checkpoint = ckpt.resolve_checkpoint(self.run_dir)
        state = ckpt.read_state(checkpoint)
        ckpt.load_method_weights(self.method, checkpoint)
        ckpt.restore_training(checkpoint, self.method.optimizers, state)
        ckpt.check_perception(checkpoint, state.get("perception"), self.method.perception_record())
        self.init_record = state.get("init_from")
        restore_freezing(self.method, self.init_record)
        self.step = int(state["step"])
        self.cpu_seconds_before = float(state.get("cpu_seconds", 0.0))
        self.lr_factor = float(state.get("lr_factor", 1.0))
        self.bad_steps = int(state.get("bad_steps", 0))
        self.resumed_world_size = int(state.get("world_size", 1))
        for name, scaler_state in state.get("loss_scale", {}).items():
            if name in self.method.loss_scalers:
                self.method.loss_scalers[name].load(scaler_state)
        self._say(f"resuming {self.run_dir} from {checkpoint.name} (step {self.step}, the newest complete checkpoint)")

    def _start_ranks(self, resumed: bool) -> None:
        """Under torchrun: every rank starts from rank 0's weights and draws its own random numbers."""
        world = self.dist.world_size
        self.global_batch = self.config.train.batch_size * world
        if resumed and self.resumed_world_size != world:
            self._say(f"note: the run trained with {self.resumed_world_size} process(es) and continues with {world}: "
                      f"the data position is re-derived from step {self.step} (global batch "
                      f"{self.global_batch}), so the order differs from an uninterrupted run")
        if not self.dist.enabled:
            return
        self.dist.broadcast_state(self.method)
        if not self.dist.is_main:  # rank 0 keeps the (restored) stream of a single-process run
            torch.manual_seed(self.config.train.seed + 1_000_003 * self.dist.rank + self.step)
        self._say(f"distributed: {world} processes ({torch.distributed.get_backend()}), "
                  f"batch {self.config.train.batch_size} per process, global batch {self.global_batch}")
        note = sync_batchnorm_note(self.device, world, self.config.train.sync_batchnorm)
        if note and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in self.method.modules()):
            self._say(f"note: {note}")

    def _truncate_loss_log(self) -> None:
        """Drop log lines written after the checkpoint we resume from (work lost by a kill), and a torn last line,
        so that the log of a resumed run reads exactly like an uninterrupted one."""
        if not self.loss_log.is_file():
            return
        kept = []
        for line in self.loss_log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the process died while writing this line
                continue
            if isinstance(record, dict) and record.get("step", 0) <= self.step:
                kept.append(line)
        atomic_write_text(self.loss_log, "".join(f"{line}\n" for line in kept))

    def _validation_samples(self) -> list[dict]:
        """Fixed layouts for the gallery: the validation split when there is one, else the first train items."""
        count = self.config.train.num_samples
        if count <= 0:
            return []
        try:
            dataset = open_dataset(self.config.data, split="val", augment=False)
        except Exception:  # datasets without a val split (e.g. a single folder) fall back to train items
            dataset = open_dataset(self.config.data, split=self.config.data.split, augment=False)
        step = max(1, len(dataset) // count)
        return [dataset[i] for i in range(0, min(len(dataset), step * count), step)][:count]

    def _tensorboard(self):
        if not self.config.train.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._say("tensorboard is not installed: TensorBoard logs are off (pip install tensorboard)")
            return None
        # purge_step: TensorBoard hides events after the resumed step that a killed process had written
        return SummaryWriter(str(self.run_dir / "logs"), purge_step=self.step or None)

    def _say(self, message: str) -> None:
        if self.show_progress:
            tqdm.write(message, file=sys.stderr)

    # ------------------------------------------------------------------ data order
    def batches(self, start_step: int):
        """Endless (epoch, batch) stream starting at ``start_step``; order = f(seed, epoch), drop_last."""
        batch_size, world = self.config.train.batch_size, self.dist.world_size
        per_epoch = len(self.dataset) // (batch_size * world)
        if per_epoch == 0:
            raise ValueError(f"dataset has {len(self.dataset)} samples, fewer than train.batch_size={batch_size} × "
                             f"{world} process(es)")
        step = start_step
        while True:
            epoch, offset = divmod(step, per_epoch)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            order = torch.randperm(len(self.dataset),
                                   generator=torch.Generator().manual_seed(self.config.train.seed * 100_003 + epoch))
            chunks = shard_batches(order.tolist(), batch_size, self.dist.rank, world)[offset:]
            loader = DataLoader(self.dataset, batch_sampler=chunks, num_workers=self.config.train.num_workers,
                                collate_fn=collate, generator=torch.Generator(),
                                pin_memory=self.device.type == "cuda")
            for batch in loader:
                yield epoch, batch
                step += 1

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until ``train.steps``, a time budget or a stop signal; always ends with a checkpoint.

        SIGTERM, SIGINT and SIGUSR1 (what schedulers, ``timeout``, Kubernetes and SLURM's pre-emption warning
        send) finish the current step, write a checkpoint and return normally; a second signal exits at once,
        leaving the last complete checkpoint as it is (checkpoints are written atomically).
        """
        train = self.config.train
        total = train.steps
        start_time = time.monotonic()
        self.cpu_start = time.process_time() - self.cpu_seconds_before
        budget = Budget(train, start_time, self.cpu_start)
        stop_reason = "steps"
        running: dict[str, list[float]] = {}
        last_losses: dict[str, float] = {}
        progress = TrainingProgress(self.config.method, total, self.step, budget, enabled=self.show_progress)
        stream = self.batches(self.step)
        epoch = 0
        with StopSignals() as signals:
            try:
                while self.step < total:
                    stop_reason = budget.exhausted() or signals.received or ""
                    if self.dist.any_true(bool(stop_reason)):  # every rank stops at the same step boundary
                        stop_reason = stop_reason or "another process stopped (its budget or a signal)"
                        break
                    self._adapt_threads()
                    epoch, batch = next(stream)
                    self._set_learning_rates(self.step, total)
                    self.method.train()
                    with autocast(train.amp, self.device):
                        losses = self.method.train_step(move(batch, self.device), self.step)
                    self.step += 1
                    self.dist.broadcast_state(self.method, parameters=False)  # BN, spectral-norm, λ statistics
                    bad = self.method.pop_nonfinite() or not all(math.isfinite(float(v)) for v in losses.values())
                    if self.dist.any_true(bad):
                        if self._after_bad_step():  # rolled back: the data stream restarts at the restored step
                            stream = self.batches(self.step)
                        progress.show(self.step, {"bad_steps": self.bad_steps})
                        continue
                    self.consecutive_bad = 0
                    for key, value in losses.items():
                        running.setdefault(key, []).append(float(value))
                    if self.step % train.log_every == 0 or self.step == total:
                        last_losses = self.dist.mean({k: sum(v) / len(v) for k, v in running.items()})
                        running = {}
                        self._log(last_losses, epoch, time.monotonic() - start_time)
                    progress.show(self.step, last_losses)
                    if train.sample_every and self.step % train.sample_every == 0:
                        self.write_samples()
                    if train.checkpoint_every and self.step % train.checkpoint_every == 0:
                        self.save(epoch)
                else:
                    stop_reason = "steps"
            except KeyboardInterrupt:  # raised by code we called (no handler installed, e.g. outside the main thread)
                progress.close()
                path = self.save(epoch)
                self._say(f"interrupted at step {self.step}: checkpoint {path}; "
                          f"continue with: inverseg train --resume {self.run_dir}")
                raise
            progress.close()
            if self.dist.any_true(bool(running)):
                last_losses = self.dist.mean({k: sum(v) / len(v) for k, v in running.items()})
                self._log(last_losses, epoch, time.monotonic() - start_time)
            path = self.save(epoch)
            stopped_by_signal = stop_reason.startswith("SIG") or stop_reason.startswith("another")
            gallery = None if stopped_by_signal else self.write_samples()  # a signal means: leave soon
        if self.writer:
            self.writer.close()
        self.dist.barrier()
        seconds = time.monotonic() - start_time
        summary = {"run_dir": str(self.run_dir), "step": self.step, "stop_reason": stop_reason,
                   "seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - self.cpu_start, 2),
                   "checkpoint": str(path), "losses": last_losses, "bad_steps": self.bad_steps,
                   "gallery": str(gallery) if gallery else None}
        message = f"stopped at step {self.step} ({stop_reason}) after {seconds / 60:.1f} min; checkpoint {path}"
        if stopped_by_signal:  # said even with --quiet: whoever sent the signal needs to know how to continue
            print(f"{message}; continue with: inverseg train --resume {self.run_dir}", file=sys.stderr, flush=True)
        else:
            self._say(message)
        return summary

    def _adapt_threads(self) -> None:
        """``train.threads: auto``: re-count the free cores every 30 s (the load changes during a long run)."""
        train = self.config.train
        if train.threads != "auto" or train.deterministic or time.monotonic() < self.next_thread_check:
            return
        self.next_thread_check = time.monotonic() + 30
        threads = auto_threads(own_threads=torch.get_num_threads() if self.step else 0)
        if threads != torch.get_num_threads():
            if self.step:
                self._say(f"threads: {torch.get_num_threads()} → {threads} (other processes use the remaining cores)")
            torch.set_num_threads(threads)

    def _after_bad_step(self) -> bool:
        """A step whose loss or gradients were NaN/Inf was skipped; roll back after too many in a row.

        Returns True when the run was rolled back to its last checkpoint (the caller restarts the data stream).
        """
        train = self.config.train
        self.bad_steps += 1
        self.consecutive_bad += 1
        if self.consecutive_bad < train.nonfinite_patience:
            return False
        self.rollbacks += 1
        try:
            checkpoint = ckpt.resolve_checkpoint(self.run_dir)
        except ckpt.CheckpointError:
            checkpoint = None
        if checkpoint is None or self.rollbacks > train.nonfinite_max_rollbacks:
            where = f"; the last good checkpoint is {checkpoint}" if checkpoint else ""
            raise NonFiniteTraining(
                f"{self.run_dir}: losses or gradients were NaN/Inf for {self.consecutive_bad} consecutive steps "
                f"(step {self.step}, {self.rollbacks - 1} rollbacks, learning rate ×{self.lr_factor:g}){where}; "
                f"fix: lower the optim learning rates or check the data, then --resume")
        self.lr_factor *= train.nonfinite_lr_factor
        state = ckpt.read_state(checkpoint)
        ckpt.load_method_weights(self.method, checkpoint)
        ckpt.restore_training(checkpoint, self.method.optimizers, state)
        self._say(f"{self.consecutive_bad} consecutive NaN/Inf steps at step {self.step}: rolled back to "
                  f"{checkpoint.name} with learning rate ×{self.lr_factor:g} (rollback {self.rollbacks} of "
                  f"{train.nonfinite_max_rollbacks})")
        self.step = int(state["step"])
        self.consecutive_bad = 0
        return True

    def _set_learning_rates(self, step: int, total: int) -> None:
        factor = self.config.schedule.factor(step, total) * self.lr_factor
        for optimizer in self.method.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _log(self, losses: dict[str, float], epoch: int, seconds: float) -> None:
        if not self.dist.is_main:  # the losses are already averaged over the ranks
            return
        lrs = {f"lr/{name}": opt.param_groups[0]["lr"] for name, opt in self.method.optimizers.items()}
        record = {"step": self.step, "epoch": epoch, "seconds": round(seconds, 3), **losses, **lrs}
        if self.bad_steps:  # NaN/Inf steps skipped so far in this run
            record["bad_steps"] = self.bad_steps
        with open(self.loss_log, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.writer:
            for key, value in {**losses, **lrs}.items():
                self.writer.add_scalar(key if "/" in key else f"loss/{key}", value, self.step)

    # ------------------------------------------------------------------ outputs
    def recalibration_batches(self, count: int):
        """Up to ``count`` training batches for hooks such as batch-norm recalibration (no augmentation).

        The images come from a shuffle of the whole training split seeded by ``train.seed`` (the same images at
        every call, so statistics depend on the weights only), as OASIS's ≤ 50 batches of its shuffled training
        loader do — the first count×batch files would be consecutive frames of one sequence (CamVid).  What was
        used is kept in ``self.recalibration_record`` (state.json ``ema_recalibration``).
        """
        dataset = open_dataset(self.config.data, split=self.config.data.split, augment=False)
        size = self.config.train.batch_size
        seed = self.config.train.seed
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
        used = min(count, len(dataset) // size)
        self.recalibration_record = {
            "split": self.config.data.split or "train", "batches": used, "batch_size": size, "images": used * size,
            "split_images": len(dataset), "order": f"shuffled (seed {seed})", "augment": False}
        for index in range(used):
            yield move(collate([dataset[i] for i in order[index * size:(index + 1) * size]]), self.device)

    def save(self, epoch: int = 0) -> Path:
        """Write a checkpoint atomically; weights holding NaN/Inf are never saved (the previous one stays)."""
        self.method.before_checkpoint(self.recalibration_batches)
        weights = self.method.checkpoint_state()
        broken = [name for name, tensor in weights.items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if broken:
            raise NonFiniteTraining(f"{self.run_dir}: step {self.step}: weights {', '.join(broken[:3])} hold NaN/Inf; "
                                    f"not saved, the previous checkpoint is kept; fix: lower the learning rates "
                                    f"and --resume")
        state = {
            "epoch": epoch,
            "method": self.config.method,
            "config": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "image_size": list(self.config.data.size),
            "method_state": self.method.extra_state(),
            "perception": self.method.perception_record(),  # the networks and weights files actually used
            "init_from": self.init_record,
            # the training images the EMA generator's batch-norm statistics were last re-estimated on (None: never)
            "ema_recalibration": self.recalibration_record,
            "cpu_seconds": round(time.process_time() - self.cpu_start, 3) if hasattr(self, "cpu_start") else 0.0,
            "lr_factor": self.lr_factor,
            "bad_steps": self.bad_steps,
            "world_size": self.dist.world_size,
            "loss_scale": {name: scaler.state() for name, scaler in self.method.loss_scalers.items()},
            "global_batch": self.global_batch,
            "inverseg_version": __import__("inverseg").__version__,
        }
        if not self.dist.is_main:  # every rank holds the same weights; rank 0 writes them
            return ckpt.checkpoint_path(self.run_dir, self.step)
        return ckpt.save_checkpoint(self.run_dir, self.step, weights,
                                    self.method.optimizers, state, keep=self.config.train.keep_checkpoints)

    def write_samples(self) -> Path | None:
        if not self.validation:
            return None
        self.method.eval()
        self.method.before_sampling(self.recalibration_batches)  # on every rank: hooks may broadcast from rank 0
        if not self.dist.is_main:  # only rank 0 writes the gallery, so only it samples
            return None
        labels = torch.stack([s["label"] for s in self.validation]).to(self.device)
        generator = torch.Generator(device="cpu").manual_seed(1234)
        outputs = self.method.sample(labels, k=self.config.train.sample_k, generator=generator)
        extras, extra_titles = None, None
        if hasattr(self.method, "gallery_extras"):
            extra_titles, extra_images = self.method.gallery_extras(labels)
            extras = [[to_uint8(image) for image in images] for images in extra_images]
        image = sample_grid(
            labels=[self.spec.colorize(s["label"]) for s in self.validation],
            outputs=[[to_uint8(o) for o in per_layout] for per_layout in outputs],
            references=[to_uint8(s["image"]) for s in self.validation],
            extras=extras, extra_titles=extra_titles,
        )
        path = write_gallery(self.run_dir, self.step, image, f"{self.config.preset or self.config.method} — "
                                                             f"{self.run_dir.name}")
        if self.writer:
            self.writer.add_image("samples", image, self.step, dataformats="HWC")
        return path
