"""Train the evaluator segmenter on the real images of a dataset, under a CPU time budget.

Recipe (tuned on CamVid at 96×128 on two CPU threads, see docs/evaluation.md): ImageNet MobileNetV2 (offline
weights, batch-norm statistics frozen) + ``LiteDecoder``; images enlarged ×``input_scale`` inside the network;
cross-entropy that ignores the void id; AdamW with a lower learning rate for the backbone; the learning rate
decays polynomially over the *time* budget (or the step budget, whichever ends first), so a short run still
ends with a small learning rate; augmentation = random zoom-in (resize to 1…1+``scale_jitter`` × the
evaluation size, random crop back) and horizontal flips.  The evaluation path (bicubic resize of the original
file straight to H×W, labels nearest) is the s = 1 case of the training path, so the evaluator sees at test
time exactly what it was trained on.

The final weights are kept (no selection on the validation split, which is the split generated images are
scored on); the validation scores are measured once at the end and stored in ``evaluator.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import DataConfig, open_dataset
from ..data.base import read_label
from ..perception import load_mobilenet_v2
from .metrics import confusion_matrix, segmentation_scores
from .segmenter import MobileNetSegmenter, SegmenterConfig


@dataclass
class EvaluatorTrainConfig:
    """Everything that defines an evaluator training run; stored in evaluator.json."""

    size: tuple[int, int] = (96, 128)
    minutes: float | None = 12.0  # wall-clock training budget (validation and saving come on top)
    steps: int | None = None  # optional step budget (tests); the first budget to run out ends training
    batch_size: int = 8
    lr: float = 1e-3  # decoder; AdamW
    backbone_lr_factor: float = 0.5  # backbone lr = lr × this
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    poly_power: float = 0.9
    scale_jitter: float = 0.5  # random zoom-in: resize to (1 … 1+jitter) × size, random crop back to size
    flip: bool = True
    width: int = 128
    input_scale: float = 2.0
    # none | sqrt-inverse: cross-entropy weight of class c ∝ 1/sqrt(pixel frequency of c in the training labels),
    # normalised to mean 1 — thin, rare classes (poles, signs) are otherwise learnt late in a short budget
    class_weighting: str = "sqrt-inverse"
    seed: int = 0
    threads: int | None = 2
    train_split: str = "train"
    val_split: str = "val"
    val_every: int = 0  # steps between validation passes logged to training_log.jsonl (0: only at the end)


class _ArrayMemo:
    """Keeps decoded (image, label) arrays in RAM so each epoch only resizes/crops; labels stored compactly."""

    def __init__(self, load):
        self.load, self.memo = load, {}

    def __call__(self, pair):
        if pair not in self.memo:
            image, label, instance = self.load(pair)
            dtype = np.uint8 if label.max(initial=0) < 256 and label.min(initial=0) >= 0 else np.int32
            self.memo[pair] = (image, label.astype(dtype), None)
        return self.memo[pair]


def _memoise_if_small(dataset, budget_bytes: int = 2 << 30) -> None:
    if not hasattr(dataset, "load_arrays") or not len(dataset):
        return
    image, label, _ = dataset.load_arrays(dataset.pairs[0])
    per_item = (image.nbytes if image is not None else 0) + label.size
    if per_item * len(dataset) <= budget_bytes:
        dataset.load_arrays = _ArrayMemo(dataset.load_arrays)


def class_weights(dataset, mode: str) -> torch.Tensor | None:
    """Cross-entropy class weights from the pixel counts of the training labels (original resolution)."""
    if mode == "none":
        return None
    if mode != "sqrt-inverse":
        raise ValueError(f"class_weighting must be 'none' or 'sqrt-inverse', got {mode!r}")
    classes = dataset.spec.num_classes
    counts = torch.zeros(classes, dtype=torch.float64)
    for pair in dataset.pairs:
        label = torch.from_numpy(read_label(pair.label, dataset.spec, dataset.palette)).reshape(-1)
        counts += torch.bincount(label[(label >= 0) & (label < classes)], minlength=classes).double()
    frequency = counts / counts.sum().clamp(min=1)
    weights = torch.where(counts > 0, frequency.clamp(min=1e-6).rsqrt(), torch.zeros_like(frequency))
    return (weights / weights[counts > 0].mean()).float()


def _batches(dataset, batch_size: int, seed: int):
    """Endless shuffled batches (drop_last), reproducible from the seed; a new augmentation draw every epoch."""
    epoch = 0
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            samples = [dataset[int(i)] for i in order[start:start + batch_size]]
            yield epoch, torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])
        epoch += 1


@torch.no_grad()
def evaluate_segmenter(segmenter, dataset, batch_size: int = 16) -> dict:
    """Scores of a segmenter on the real images of a dataset (at the dataset's size) vs their labels."""
    spec = dataset.spec
    confusion = torch.zeros(spec.num_classes, spec.num_classes + 1, dtype=torch.int64)
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        images = torch.stack([s["image"] for s in samples])
        labels = torch.stack([s["label"] for s in samples])
        confusion += confusion_matrix(segmenter.predict(images), labels, spec.num_classes)
    scores = segmentation_scores(confusion, spec.class_names)
    scores["images"] = len(dataset)
    return scores


def train_evaluator(data: DataConfig, out: str | Path, config: EvaluatorTrainConfig | None = None,
                    show_progress: bool = True, backbone_weights: str | Path | None = "auto") -> dict:
    """Train, validate and save an evaluator in ``out``; returns the summary also stored in evaluator.json.

    ``backbone_weights=None`` starts from random weights (tests only: such an evaluator is meaningless).
    """
    config = config or EvaluatorTrainConfig()
    if config.minutes is None and config.steps is None:
        raise ValueError("give a time budget (minutes) or a step budget (steps)")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    size = tuple(config.size)
    train_config = DataConfig(dataset=data.dataset, path=data.path, size=size, resize="exact", crop="random",
                              flip=config.flip, scale_jitter=config.scale_jitter, palette=data.palette,
                              ignore_id=data.ignore_id, scheme=data.scheme, seed=config.seed)
    train_set = open_dataset(train_config, split=config.train_split, augment=True)
    val_set = open_dataset(DataConfig(**{**asdict(train_config), "crop": "center", "flip": False,
                                         "scale_jitter": 0.0}), split=config.val_split, augment=False)
    if len(train_set) < config.batch_size:
        raise ValueError(f"{len(train_set)} training images, fewer than batch_size={config.batch_size}")
    _memoise_if_small(train_set)
    spec = train_set.spec

    backbone = load_mobilenet_v2(backbone_weights, frozen=False)
    backbone_description = getattr(backbone, "weights_description", "random initialisation")
    model = MobileNetSegmenter(SegmenterConfig(spec.num_classes, config.width, config.input_scale), spec, size,
                               backbone=backbone)
    base_lrs = (config.lr * config.backbone_lr_factor, config.lr)
    optimizer = torch.optim.AdamW([
        {"params": list(model.backbone.parameters()), "lr": base_lrs[0]},
        {"params": list(model.decoder.parameters()), "lr": base_lrs[1]},
    ], weight_decay=config.weight_decay)
    ignore = spec.ignore_index if spec.ignore_index is not None else -100
    weights = class_weights(train_set, config.class_weighting)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "training_log.jsonl"
    log_path.write_text("")
    budget = config.minutes * 60.0 if config.minutes is not None else math.inf
    step_budget = config.steps if config.steps is not None else math.inf
    progress = tqdm(total=config.steps if config.steps is not None else round(budget),
                    unit="step" if config.steps is not None else "s", desc="train evaluator", file=sys.stderr,
                    disable=not show_progress, dynamic_ncols=True)
    started, cpu_started = time.monotonic(), time.process_time()
    step, epoch, running = 0, 0, []
    stream = _batches(train_set, config.batch_size, config.seed)
    model.train()
    while True:
        elapsed = time.monotonic() - started
        done = max(step / step_budget, elapsed / budget)
        if done >= 1.0:
            break
        factor = (1.0 - done) ** config.poly_power
        if step < config.warmup_steps:
            factor *= (step + 1) / config.warmup_steps
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        epoch, images, labels = next(stream)
        loss = F.cross_entropy(model(images), labels, weight=weights, ignore_index=ignore)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        running.append(float(loss.detach()))
        if config.steps is not None:
            progress.update(1)
        else:
            progress.update(min(round(time.monotonic() - started), progress.total) - progress.n)
        record = None
        if step % 10 == 0:
            record = {"step": step, "epoch": epoch, "seconds": round(time.monotonic() - started, 1),
                      "loss": float(np.mean(running)), "lr": optimizer.param_groups[1]["lr"]}
            progress.set_postfix(step=step, epoch=epoch, loss=f"{record['loss']:.3f}")
            running = []
        if config.val_every and step % config.val_every == 0:
            model.eval()
            record = dict(record or {"step": step}, val_miou=evaluate_segmenter(model, val_set)["miou"])
            model.train()
            tqdm.write(f"step {step}: val mIoU {record['val_miou']:.3f}", file=sys.stderr)
        if record:
            with open(log_path, "a", encoding="utf-8") as stream_file:
                stream_file.write(json.dumps(record) + "\n")
    progress.close()
    seconds = time.monotonic() - started
    model.eval()
    validation = evaluate_segmenter(model, val_set)
    training = {
        "dataset": data.dataset,
        "data_path": str(Path(data.path).resolve()) if data.path else None,
        "label_set": spec.name,
        "train_split": config.train_split,
        "train_images": len(train_set),
        "steps": step,
        "epochs": epoch + 1 if step else 0,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),  # all threads; wall time varies with load
        "threads": torch.get_num_threads(),
        "backbone_weights": backbone_description,
        "config": _plain(asdict(config)),
        "class_weights": None if weights is None else [round(float(w), 4) for w in weights],
        "recipe": "AdamW, poly decay over the time/step budget, cross-entropy ignoring the void id, random "
                  "zoom-in crop + horizontal flip, backbone batch-norm statistics frozen",
    }
    model.save(out, info={"training": training, "validation": {"split": config.val_split, **validation}})
    return {"out": str(out), "sha256": model.identity["sha256"], "steps": step, "seconds": round(seconds, 1),
            "validation": validation}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value
