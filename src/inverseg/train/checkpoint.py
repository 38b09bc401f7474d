"""Checkpoints: safetensors weights + optimiser tensors, JSON state, written atomically.

Layout of one checkpoint (``RUN/checkpoints/step_000500/``):
  weights.safetensors     the method's checkpoint modules (generator, discriminator, EMA, λ buffers …)
  training.safetensors    optimiser moment tensors and the torch RNG state (needed only to resume)
  state.json              step, epoch, resolved config, label spec, optimiser hyper-parameters, λ, RNG seeds

The directory is written under a temporary name, fsynced, and renamed into place, then ``RUN/checkpoints/latest``
is replaced atomically; older checkpoints are removed only after the new one is complete.  A kill -9 at any moment
therefore leaves at least one complete checkpoint, and ``resolve_checkpoint`` skips anything incomplete or torn.
A full disk is reported as such and the previous checkpoint survives.  Nothing here uses pickle: loading a
checkpoint cannot execute code.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import InversegError
from ..utils.io import atomic_write_text

STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.safetensors"
TRAINING_FILE = "training.safetensors"


class CheckpointError(InversegError, RuntimeError):
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


KERNEL_KEYS = ("foreach", "fused")  # optimiser options that choose how, not what, torch computes


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
        # the run's config chooses the kernel (optim.adam), not the run that wrote the checkpoint
        kernels = [{key: group[key] for key in KERNEL_KEYS if key in group} for group in optimizer.param_groups]
        optimizer.load_state_dict({"state": state, "param_groups": info[name]["param_groups"]})
        for group, kernel in zip(optimizer.param_groups, kernels):
            group.update(kernel)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives (a folder of weights, optimiser state and state.json)."""
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict,
    keep: int = 2,
) -> Path:
    final = checkpoint_path(run_dir, step)
    checkpoints = final.parent
    checkpoints.mkdir(parents=True, exist_ok=True)
    temporary = checkpoints / f".step_{step:07d}.partial"
    if temporary.exists():
        shutil.rmtree(temporary)
    optimizer_tensors, optimizer_info = flatten_optimizers(optimizers)
    optimizer_tensors["rng/torch"] = torch.get_rng_state()
    full_state = {**state, "step": step, "optimizers": optimizer_info, "python_random": _python_rng()}
    try:
        temporary.mkdir()
        save_file(_contiguous(weights), str(temporary / WEIGHTS_FILE))
        save_file(_contiguous(optimizer_tensors), str(temporary / TRAINING_FILE))
        (temporary / STATE_FILE).write_text(json.dumps(full_state, indent=1) + "\n", encoding="utf-8")
        for path in temporary.iterdir():
            with open(path, "rb") as stream:
                os.fsync(stream.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_directory(checkpoints)
        atomic_write_text(checkpoints / "latest", final.name + "\n")
    except Exception as error:  # noqa: BLE001 — safetensors reports a full disk as its own error type
        shutil.rmtree(temporary, ignore_errors=True)
        previous = _complete_checkpoints(checkpoints)
        kept = f"the previous checkpoint {previous[-1].name} is kept" if previous else "no earlier checkpoint exists"
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error):
            raise CheckpointError(f"{temporary}: no space left on the device while writing the step {step} "
                                  f"checkpoint; {kept}; fix: free disk space, then --resume") from None
        raise CheckpointError(f"{temporary}: could not write the step {step} checkpoint ({_one_line(error)}); "
                              f"{kept}") from None
    _prune(checkpoints, keep, final)
    return final


def _fsync_directory(path: Path) -> None:
    """Make a rename durable: without this a power cut can forget it even though the files are on disk."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory descriptors
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _python_rng() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _prune(checkpoints: Path, keep: int, newest: Path) -> None:
    existing = sorted(p for p in checkpoints.glob("step_*") if p.is_dir())
    for path in existing[: max(0, len(existing) - max(1, keep))]:
        if path != newest:
            shutil.rmtree(path, ignore_errors=True)


def is_complete(checkpoint: Path) -> bool:
    """All three files present, the JSON parses, and both safetensors headers are intact (read, not the data)."""
    try:
        json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        for name in (WEIGHTS_FILE, TRAINING_FILE):
            with safe_open(str(checkpoint / name), framework="pt") as handle:
                handle.keys()
    except Exception:  # noqa: BLE001 — any failure means "not a checkpoint to resume from"
        return False
    return True


def _complete_checkpoints(checkpoints: Path) -> list[Path]:
    if not checkpoints.is_dir():
        return []
    return [c for c in sorted(checkpoints.glob("step_*")) if c.is_dir() and is_complete(c)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (→ its newest complete checkpoint) or a checkpoint directory → the checkpoint directory.

    ``checkpoints/latest`` names the newest; if it is missing or torn (a kill during a write, a disk that lost the
    last blocks), the newest complete ``step_*`` directory is used instead.
    """
    path = Path(path).expanduser()
    if (path / STATE_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    latest = path / "checkpoints" / "latest"
    if latest.is_file():
        candidate = path / "checkpoints" / latest.read_text().strip()
        if candidate.name.startswith("step_") and is_complete(candidate):
            return candidate
    candidates = _complete_checkpoints(path / "checkpoints")
    if candidates:
        return candidates[-1]
    raise CheckpointError(
        f"{path}: no checkpoint found (expected RUN_DIR/checkpoints/step_N/ with {WEIGHTS_FILE} and {STATE_FILE}); "
        f"fix: pass a run directory written by 'inverseg train'"
    )


def read_state(checkpoint: Path) -> dict:
    """The checkpoint's JSON state; a missing, truncated or edited file is a one-line CheckpointError."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; fix: pass a complete checkpoint directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable or corrupt JSON ({_one_line(error)}); "
                              f"fix: use another checkpoint of the run (checkpoints/step_*)") from None
    if not isinstance(state, dict) or not {"method", "config", "spec", "image_size"} <= set(state):
        raise CheckpointError(f"{path}: not an inverseg checkpoint state (keys method, config, spec, image_size "
                              f"expected); fix: use a checkpoint written by 'inverseg train'")
    return state


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file (no pickle: loading cannot run code); damage is a one-line CheckpointError."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; fix: pass a complete checkpoint directory") from None
    except Exception as error:  # noqa: BLE001 — safetensors raises its own error types on damaged headers/data
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({_one_line(error)}); "
                              f"fix: use another checkpoint of the run (checkpoints/step_*)") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def load_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return _load_tensors(checkpoint / WEIGHTS_FILE)


def load_method_weights(method, checkpoint: Path, modules: tuple[str, ...] | None = None) -> None:
    """Load a checkpoint's weights into ``method``; tensors that do not fit the model are a one-line error."""
    try:
        method.load_checkpoint_state(load_weights(checkpoint), modules)
    except (KeyError, RuntimeError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        message = _one_line(error.args[0] if isinstance(error, KeyError) and error.args else error)
        raise CheckpointError(f"{checkpoint / WEIGHTS_FILE}: weights do not fit the model described by its "
                              f"{STATE_FILE} ({message}); fix: use an unmodified checkpoint of the run") from None


def restore_training(checkpoint: Path, optimizers: dict[str, torch.optim.Optimizer], state: dict) -> None:
    """Optimiser moments and RNG streams, so that a resumed run continues exactly."""
    tensors = _load_tensors(checkpoint / TRAINING_FILE)
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
