"""Typed run configuration: YAML presets → dataclasses, with ``key=value`` overrides and no silent typos.

A run config has four fixed sections (``method``, ``data``, ``train``, ``schedule``) plus the sections of the
chosen method's ``Settings`` dataclass (``model``, ``loss``, ``optim``, …).  Unknown keys are errors that name
the key path and the known keys.  A preset may start from another with ``base: other-preset``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .data import DataConfig
from .errors import InversegError


class ConfigError(InversegError, ValueError):
    """A preset or override is wrong; the message names the key and the fix."""


@dataclass
class InitConfig:
    """Start a new run from another run's weights (``inverseg train --init-from``; ``train/init_from.py``).

    Tensors are matched by name and shape; a name present in both with another shape is an error.  Prefixes
    are module paths such as ``generator.to_rgb`` (they match that module and everything under it).
    """

    source: str | None = None  # a run directory or a checkpoint directory; None: train from scratch
    exclude: list[str] = field(default_factory=list)  # target prefixes left freshly initialised
    rename: dict[str, str] = field(default_factory=dict)  # source prefix → target prefix, applied before matching
    freeze_loaded: bool = False  # loaded parameters are not trained (buffers such as BN statistics still update)
    unfreeze: list[str] = field(default_factory=list)  # with freeze_loaded: loaded prefixes that still train


@dataclass
class TrainConfig:
    """How long and how a run trains, and what it writes. Time limits are wall-clock on this machine."""

    steps: int = 1000
    minutes: float | None = None  # stop after this much wall time (checkpoint written), whichever comes first
    # stop after this much CPU time of the training process (all its threads): an equal budget for method
    # comparisons that does not depend on what else the machine is running
    cpu_minutes: float | None = None
    batch_size: int = 1  # CRN: 1 (implementations.md §1.4); batch 1 is also the fastest per image on a CPU
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms: exact resume, slower on GPUs
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # torch intra-op threads: auto = the cores other processes leave free, re-checked every 30 s (utils/threads.py;
    # oversubscribed OpenMP threads spin and stall; with deterministic: true, auto = all usable cores, fixed, because
    # results depend on the thread count), N = fixed, None = torch's default (all cores)
    threads: int | str | None = "auto"
    num_workers: int = 0  # DataLoader workers (0: load in the main process)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    sample_every: int = 250
    num_samples: int = 6  # fixed validation layouts shown in the gallery
    sample_k: int = 1  # images per layout in the gallery (diversity models: set to k)
    tensorboard: bool = True
    init: InitConfig = field(default_factory=InitConfig)  # --init-from: weights of another run as the start
    # NaN/Inf in a loss or a gradient: the optimiser step is skipped (counted in the loss log); after this many
    # consecutive bad steps the run rolls back to its last checkpoint with the learning rate × nonfinite_lr_factor,
    # at most nonfinite_max_rollbacks times, then stops with a message
    nonfinite_patience: int = 10
    nonfinite_lr_factor: float = 0.5
    nonfinite_max_rollbacks: int = 3
    # under torchrun (train/distributed.py): batch norm synchronised across the processes (SPADE and OASIS train
    # with synchronised batch norm officially; torch's SyncBatchNorm needs CUDA, so CPU runs say so and keep
    # per-process statistics), and how long a rank waits for the others before the job ends with an error
    sync_batchnorm: bool = True
    distributed_timeout_minutes: float = 10.0
    # gradients all-reduced in buckets of this many MiB while the backward pass runs (DistributedDataParallel's
    # default size), so communication overlaps computation; 0 = one all-reduce after the backward pass
    gradient_bucket_mb: float = 25.0
    # GPU speed-ups (train/precision.py): autocast to bf16 or fp16 (fp16 with dynamic loss scaling), channels-last
    # memory layout.  Both slowed training on this CPU (bf16 ~100×, channels_last 0.5–0.8×): off by default
    amp: str = "off"
    channels_last: bool = False
    # glibc malloc (utils/malloc.py): retain = keep freed memory mapped instead of mmap/munmap-ing large blocks every
    # step (10–20 % faster steps, ~10 % more peak RSS at SPADE/OASIS ngf 64 on this CPU; results unchanged)
    malloc: str = "default"

    def __post_init__(self) -> None:
        if isinstance(self.threads, str) and self.threads != "auto":
            raise ConfigError(f"train.threads must be auto, a number of threads or null, got {self.threads!r}")
        if isinstance(self.threads, int) and self.threads < 1:
            raise ConfigError(f"train.threads must be at least 1, got {self.threads}")
        if self.gradient_bucket_mb < 0:
            raise ConfigError(f"train.gradient_bucket_mb must be 0 (one all-reduce) or a size in MiB, "
                              f"got {self.gradient_bucket_mb}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ConfigError(f"train.amp must be off, bf16 or fp16, got {self.amp!r}")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule shared by every optimiser of a method (multiplier on each base lr)."""

    kind: str = "constant"  # constant | linear | cosine
    decay_start: float = 0.5  # fraction of train.steps after which linear decay to 0 starts (pix2pixHD: 0.5)
    warmup_steps: int = 0
    min_factor: float = 0.0

    def factor(self, step: int, total: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            start = self.decay_start * total
            if step < start:
                return 1.0
            return max(self.min_factor, 1.0 - (step - start) / max(1.0, total - start))
        if self.kind == "cosine":
            import math

            progress = min(1.0, step / max(1, total))
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        raise ConfigError(f"schedule.kind must be constant, linear or cosine, got {self.kind!r}")


@dataclass
class RunConfig:
    method: str
    data: DataConfig
    train: TrainConfig
    schedule: ScheduleConfig
    settings: Any  # the method's Settings dataclass; its fields are top-level sections in YAML
    preset: str = ""

    def to_dict(self) -> dict:
        result = {"method": self.method, "preset": self.preset}
        result["data"] = dataclasses.asdict(self.data)
        result["train"] = dataclasses.asdict(self.train)
        result["schedule"] = dataclasses.asdict(self.schedule)
        result.update(dataclasses.asdict(self.settings))
        return _plain(result)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- building
def build_dataclass(cls, data: dict | None, path: str = ""):
    """Create ``cls`` from a dict, checking keys and coercing YAML values to the annotated types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]}; known keys{' of ' + path if path else ''}: {', '.join(sorted(known))}"
        )
    values = {}
    for name in data:
        values[name] = _coerce(data[name], hints[name], f"{path}.{name}" if path else name)
    return cls(**values)


def _coerce(value, hint, path: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if hint is Any:
        return value
    if is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return build_dataclass(hint, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {list(value)}")
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_hint = args[0] if args else Any
            items = [_coerce(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------- presets
def preset_names() -> list[str]:
    folder = resources.files("inverseg") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_summary(name: str) -> dict:
    """One preset described for ``inverseg train --list``: method, dataset, resolution and what it is for.

    The description is the first sentence of the preset file's leading comment (every preset starts with one).
    """
    text = (resources.files("inverseg") / "configs" / f"{name}.yaml").read_text(encoding="utf-8")
    comment = next((line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")), "")
    for stop in (": ", ". ", "; "):
        comment = comment.split(stop, 1)[0]
    data = read_preset(name)
    section = data.get("data") or {}
    size = section.get("size")
    return {"name": name, "method": data.get("method", "?"), "dataset": section.get("dataset", "synthetic"),
            "size": f"{size[0]}×{size[1]}" if size else "—", "description": comment.rstrip(",. ")}


def read_preset(name_or_path: str, _seen: tuple = ()) -> dict:
    """Load a preset by name (``crn-cpu``) or file path, resolving ``base:`` chains."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        resource = resources.files("inverseg") / "configs" / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"no preset named {name_or_path!r} and no such YAML file; presets: {', '.join(preset_names())}"
            )
        text = resource.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: a preset must be a YAML mapping")
    base = data.pop("base", None)
    if base:
        if base in _seen:
            raise ConfigError(f"{name_or_path}: preset base chain loops through {base!r}")
        data = deep_merge(read_preset(base, (*_seen, name_or_path)), data)
    return data


def deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``a.b.c=value`` strings; values are parsed as YAML (numbers, lists ``[64,128]``, true/false, null)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.steps=200)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        target = data
        for part in parts[:-1]:
            child = target.get(part)
            target[part] = dict(child) if isinstance(child, dict) else {}
            target = target[part]
        target[parts[-1]] = value
    return data


def build_run_config(data: dict, preset: str = "") -> RunConfig:
    from .methods import get_method

    data = dict(data)
    method_name = data.pop("method", None)
    if not method_name:
        raise ConfigError(f"{preset or 'config'}: missing 'method' (e.g. method: crn)")
    method = get_method(method_name)
    data.pop("preset", None)
    run = {key: data.pop(key, None) for key in ("data", "train", "schedule")}
    settings = build_dataclass(method.Settings, data, "")
    return RunConfig(
        method=method_name,
        data=build_dataclass(DataConfig, run["data"], "data"),
        train=build_dataclass(TrainConfig, run["train"], "train"),
        schedule=build_dataclass(ScheduleConfig, run["schedule"], "schedule"),
        settings=settings,
        preset=preset,
    )


def config_problems(config: RunConfig) -> list[str]:
    """What the method finds wrong with a complete config (e.g. a λ schedule that never fires in the run)."""
    from .methods import get_method

    return get_method(config.method).check_config(config)


def load_run_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    """A preset (or YAML file) with overrides.  The preset itself must be consistent: a problem in it (e.g. a
    ``rebalance_at`` inherited from a longer preset) is an error naming the preset and the key; problems that
    only the overrides create are left to the Trainer, which prints them (smoke runs, runs resumed longer)."""
    preset = Path(name_or_path).stem if name_or_path.endswith(".yaml") else name_or_path
    data = read_preset(name_or_path)
    try:
        bare = build_run_config(data, preset=preset)
    except (ConfigError, KeyError):  # a file completed by its overrides (e.g. method=…) is checked as a whole below
        bare = None
    problems = config_problems(bare) if bare is not None else []
    if problems:
        raise ConfigError(f"{preset}: {problems[0]}")
    return build_run_config(apply_overrides(data, overrides or []), preset=preset)


__all__ = [
    "ConfigError", "InitConfig", "RunConfig", "ScheduleConfig", "TrainConfig", "apply_overrides", "build_dataclass",
    "build_run_config", "config_problems", "deep_merge", "load_run_config", "preset_names", "read_preset",
]
