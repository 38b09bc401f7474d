"""Checkpoints: safetensors weights + optimiser tensors, JSON state, written atomically.

Layout of one checkpoint (``RUN/checkpoints/step_000500/``):
  weights.safetensors     the method's checkpoint modules (generator, discriminator, EMA, λ buffers …)
  training.safetensors    optimiser moment tensors and the torch RNG state (needed only to resume)
  state.json              step, epoch, resolved config, label spec, optimiser hyper-parameters, λ, RNG seeds

The directory is written under a temporary name and renamed into place, then ``RUN/checkpoints/latest`` is
replaced atomically, so an interrupted write never leaves a checkpoint that looks complete.  Nothing here uses
pickle: loading a checkpoint cannot execute code.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..utils.io import atomic_write_text

STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.safetensors"
TRAINING_FILE = "training.safetensors"


class CheckpointError(RuntimeError):
    pass


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared/non-contiguous storage; a clone per tensor keeps the files independent
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def flatten_optimizers(optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    """Optimiser state → (tensors for safetensors, JSON-able rest)."""
    tensors, info = {}, {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        scalars = {}
        for param_id, values in state["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{name}/{param_id}/{key}"] = value
                else:
                    scalars[f"{param_id}/{key}"] = value
        info[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, info


def unflatten_optimizers(optimizers: dict[str, torch.optim.Optimizer], tensors: dict, info: dict) -> None:
    for name, optimizer in optimizers.items():
        if name not in info:
            raise CheckpointError(f"checkpoint has no state for optimiser '{name}'")
        state: dict[int, dict] = {}
        prefix = f"optim/{name}/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                param_id, field = key[len(prefix):].split("/", 1)
                state.setdefault(int(param_id), {})[field] = value
        for key, value in info[name]["scalars"].items():
            param_id, field = key.split("/", 1)
            state.setdefault(int(param_id), {})[field] = value
        optimizer.load_state_dict({"state": state, "param_groups": info[name]["param_groups"]})


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict,
    keep: int = 2,
) -> Path:
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step_{step:07d}"
    temporary = checkpoints / f".step_{step:07d}.partial"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    optimizer_tensors, optimizer_info = flatten_optimizers(optimizers)
    optimizer_tensors["rng/torch"] = torch.get_rng_state()
    save_file(_contiguous(weights), str(temporary / WEIGHTS_FILE))
    save_file(_contiguous(optimizer_tensors), str(temporary / TRAINING_FILE))
    full_state = {**state, "step": step, "optimizers": optimizer_info, "python_random": _python_rng()}
    (temporary / STATE_FILE).write_text(json.dumps(full_state, indent=1) + "\n", encoding="utf-8")
    for path in temporary.iterdir():
        with open(path, "rb") as stream:
            os.fsync(stream.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    atomic_write_text(checkpoints / "latest", final.name + "\n")
    _prune(checkpoints, keep, final)
    return final


def _python_rng() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _prune(checkpoints: Path, keep: int, newest: Path) -> None:
    existing = sorted(p for p in checkpoints.glob("step_*") if p.is_dir())
    for path in existing[: max(0, len(existing) - max(1, keep))]:
        if path != newest:
            shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (→ its latest checkpoint) or a checkpoint directory → the checkpoint directory."""
    path = Path(path).expanduser()
    if (path / STATE_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    latest = path / "checkpoints" / "latest"
    if latest.is_file():
        candidate = path / "checkpoints" / latest.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    candidates = sorted((path / "checkpoints").glob("step_*")) if (path / "checkpoints").is_dir() else []
    candidates = [c for c in candidates if (c / STATE_FILE).is_file() and (c / WEIGHTS_FILE).is_file()]
    if candidates:
        return candidates[-1]
    raise CheckpointError(
        f"{path}: no checkpoint found (expected RUN_DIR/checkpoints/step_N/ with {WEIGHTS_FILE} and {STATE_FILE}); "
        f"fix: pass a run directory written by 'inverseg train'"
    )


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def load_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / WEIGHTS_FILE))


def restore_training(checkpoint: Path, optimizers: dict[str, torch.optim.Optimizer], state: dict) -> None:
    """Optimiser moments and RNG streams, so that a resumed run continues exactly."""
    tensors = load_file(str(checkpoint / TRAINING_FILE))
    unflatten_optimizers(optimizers, tensors, state["optimizers"])
    torch.set_rng_state(tensors["rng/torch"])
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))


def check_perception(checkpoint: Path, recorded: dict | None, current: dict) -> None:
    """A resumed run must train with the perception weights it started with: "auto" may resolve differently
    once a standard file appears (VGG19 instead of the offline VGG16), which would silently change the loss."""
    if recorded is None:  # checkpoints written before the record existed
        return
    for name, record in current.items():
        before = recorded.get(name)
        if before is not None and before.get("sha256") != record.get("sha256"):
            raise CheckpointError(
                f"{checkpoint}: {name} was trained with {before.get('summary')} but now resolves to "
                f"{record.get('summary')}; fix: pin the original file with the method's VGG weights key "
                f"(loss.weights or loss.vgg_weights={before.get('path')})")
