"""The contract between a paper's recipe and the shared Trainer / Pipeline.

A ``Method`` owns its networks, losses and optimisers and knows how to take one training step and how to
sample.  The Trainer never knows which method it runs: it calls ``train_step``, saves ``checkpoint_state``,
restores it, and shows ``sample`` outputs.  The Pipeline builds the method with ``training=False`` (no losses,
no discriminator, no perception weights needed) and calls ``sample``.  ``--init-from`` copies the tensors of
``transfer_modules`` from another run by name and shape and may ``freeze`` the loaded ones (``train/init_from.py``).
What a trained model can vary at inference is its ``inference_controls()``: the studio builds its page from it
and ``inverseg synthesize`` checks its options against it, so neither needs to know the methods by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Iterable, TypeVar

import torch
from torch import nn

from ..labels import LabelSpec

T = TypeVar("T")


@dataclass(frozen=True)
class InferenceControls:
    """What one built model lets a caller vary when it samples, as its ``sample`` really behaves.

    ``max_k``: the most *different* images it gives for one layout — 1 for a deterministic generator, the number
    of outputs or candidates it has (CRN, SIMS), or None when every image draws fresh randomness (any k).
    """

    max_k: int | None = 1
    style_image: bool = False   # sample(style_image=PHOTO): an image encoder copies the photo's appearance
    clusters: int = 0           # sample(style=CLUSTER | {class: cluster}): appearance clusters per class
    resample: bool = False      # sample(noise=…, resample_mask=…): re-draw the noise of one region (OASIS 3D noise)
    canvas: bool = False        # the method leaves its canvas of pasted segments in ``last_extras`` (SIMS)

    def as_dict(self) -> dict:
        return asdict(self)


class Method(nn.Module):
    name: ClassVar[str] = ""
    Settings: ClassVar[type] = object
    # Modules saved in checkpoints and those an inference pipeline needs.
    checkpoint_modules: ClassVar[tuple[str, ...]] = ("generator",)
    inference_modules: ClassVar[tuple[str, ...]] = ("generator",)
    # Modules whose tensors ``--init-from`` copies (None: all checkpoint modules).  Learned weights only: loss
    # schedules such as CRN's λ balancer belong to the run that measured them and start afresh.
    transfer_modules: ClassVar[tuple[str, ...] | None] = None
    # The graph of ``export/onnx.py`` that computes this method's ``sample`` for given random inputs, which
    # ``inverseg export`` asks for (None: not exportable).  A fork that samples like its parent inherits it.
    export_graph: ClassVar[str | None] = None

    def __init__(self, settings: Any, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        super().__init__()
        self.settings = settings
        self.spec = spec
        self.image_size = tuple(image_size)
        self.is_training_setup = training
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.frozen: list[nn.Parameter] = []  # parameters no optimiser may change (--freeze-loaded)
        self.distributed = None  # set by the Trainer under torchrun: gradients averaged, side work done by rank 0
        self.loss_scalers: dict = {}  # optimiser name → LossScaler, set by the Trainer for train.amp=fp16

    @classmethod
    def check_config(cls, run: Any) -> list[str]:
        """Problems of a complete run config that construction would not catch (each a one-line fix)."""
        return []

    def inference_parameter_count(self) -> int:
        """Parameters of the networks that synthesise (the "params" column of reports).  Modules absent at
        inference (e.g. the EMA copy, loaded into the generator) or switched off (None) are skipped."""
        modules = (getattr(self, name, None) for name in self.inference_modules)
        return sum(p.numel() for module in modules if isinstance(module, nn.Module) for p in module.parameters())

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        """One optimisation step on a batch (all sub-steps, e.g. G then D); returns scalar losses to log."""
        raise NotImplementedError

    def optimizer_step(self, name: str, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` and step ``self.optimizers[name]`` (gradients cleared before, freed after).

        A NaN/Inf loss or gradient skips the update (one bad batch must not poison Adam's moments or the
        weights) and is reported to the Trainer through ``pop_nonfinite``.
        """
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss.detach()).all())
        sync = self.distributed  # under torchrun: every rank skips or steps together (train/distributed.py)
        if not (sync.all_true(finite) if sync else finite):
            self._nonfinite = True
            return
        scaler = self.loss_scalers.get(name)  # train.amp=fp16: dynamic loss scaling (train/precision.py)
        scaled = loss * scaler.scale if scaler else loss
        if sync:  # gradients averaged over the ranks, bucket by bucket during the backward pass
            frozen = {id(p) for p in self.frozen}
            sync.backward(name, scaled, [p for group in optimizer.param_groups for p in group["params"]
                                         if p.requires_grad and id(p) not in frozen])
        else:
            scaled.backward()
        for parameter in self.frozen:  # a method's own requires_grad toggling (e.g. of D) may revive them
            parameter.grad = None  # Adam skips parameters without a gradient: no update, no moment change
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if scaler and gradients:
            torch._foreach_div_(gradients, scaler.scale)
        if gradients and not bool(torch.isfinite(torch.nn.utils.get_total_norm(gradients))):
            optimizer.zero_grad(set_to_none=True)
            if scaler:  # an fp16 overflow: a smaller scale next time, not a bad step
                scaler.overflowed()
            else:
                self._nonfinite = True
            return
        optimizer.step()
        # the gradients are spent: freed now rather than at this optimiser's next step, so the other network's
        # forward and backward (G's while D's gradients wait, and vice versa) do not hold them (peak RSS)
        optimizer.zero_grad(set_to_none=True)
        if scaler:
            scaler.stepped()

    def pop_nonfinite(self) -> bool:
        """Whether an update since the last call was skipped for NaN/Inf (and reset the flag)."""
        flag, self._nonfinite = getattr(self, "_nonfinite", False), False
        return flag

    def freeze(self, names: Iterable[str]) -> None:
        """Keep the named parameters (``named_parameters`` names) fixed for the rest of the run."""
        parameters = dict(self.named_parameters())
        names = list(names)
        unknown = [name for name in names if name not in parameters]
        if unknown:
            raise KeyError(f"cannot freeze {unknown[0]}: this {self.name} has no such parameter")
        self.frozen = [parameters[name] for name in names]
        for parameter in self.frozen:
            parameter.requires_grad_(False)  # no gradient is computed for them at all (memory, time)

    def after_init_from(self, loaded: set[str]) -> None:
        """Hook after ``--init-from`` copied the ``loaded`` tensors (GANs: refresh an EMA copy left behind)."""

    def perception_record(self) -> dict[str, dict]:
        """The pretrained perception networks the training losses use, as resolved (not "auto"): module path →
        network, weights file and sha256 (``VGGFeatures.weights_record``).  Empty when there is none."""
        from ..perception.vgg import VGGFeatures

        return {name: dict(module.weights_record) for name, module in self.named_modules()
                if isinstance(module, VGGFeatures) and hasattr(module, "weights_record")}

    def on_main_rank(self, module: nn.Module, work: Callable[[], T]) -> T | None:
        """Side work that changes only ``module``'s buffers (k-means clusters, batch-norm recalibration): under
        torchrun rank 0 does it and broadcasts the buffers, so every rank holds the same result without repeating
        the work (the others get None back); in one process it simply runs."""
        return work() if self.distributed is None else self.distributed.on_main(module, work)

    def before_training(self, open_split) -> None:
        """Hook once before training starts or resumes; ``open_split()`` opens the training split without
        augmentation (OASIS ``loss.class_balance: dataset``: class frequencies over the split)."""

    def before_checkpoint(self, batches) -> None:
        """Hook before weights are saved or sampled (OASIS: recompute EMA batch-norm statistics)."""

    def before_sampling(self, batches) -> None:
        """Hook before the Trainer's gallery samples (OASIS: refresh the EMA batch-norm statistics)."""

    def extra_state(self) -> dict:
        """JSON-friendly state worth reading in state.json (e.g. the current perceptual λ)."""
        return {}

    # ------------------------------------------------------------------ inference
    def inference_controls(self) -> InferenceControls:
        """What this model's ``sample`` accepts and varies (default: one deterministic image, no options)."""
        return InferenceControls()

    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               **style) -> torch.Tensor:
        """(B,H,W) ids at ``image_size`` → (B,k,3,H,W) images in [-1,1]."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, modules: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        state = {}
        for name in modules or self.checkpoint_modules:
            module = getattr(self, name, None)
            if module is None:
                continue
            for key, value in module.state_dict().items():
                state[f"{name}.{key}"] = value.detach()
        return state

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], modules: tuple[str, ...] | None = None) -> None:
        for name in modules or self.checkpoint_modules:
            module = getattr(self, name, None)
            if module is None:
                continue
            prefix = f"{name}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not part:
                raise KeyError(f"checkpoint has no weights for '{name}'")
            module.load_state_dict(part, strict=True)

    @property
    def device(self) -> torch.device:
        for parameter in self.parameters():
            return parameter.device
        return torch.device("cpu")
