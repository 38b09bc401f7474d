"""Mixed precision for GPU training (``train.amp``) and its loss scaling.

``bf16`` autocasts the forward pass to bfloat16, whose range equals float32's: no scaling is needed.  ``fp16``
has a narrow range, so small gradients underflow; the loss is multiplied by a scale before ``backward`` and the
gradients divided by it afterwards (dynamic loss scaling, as ``torch.amp.GradScaler`` does: start at 2¹⁶, halve
on an overflow and skip that update, double after 2,000 clean steps).  It is written out here rather than used
through GradScaler because the overflow decision must be taken *after* the gradients are averaged across
torchrun's ranks, so that every rank skips or steps together.  Autocast runs matrix products and convolutions in
low precision and keeps reductions, norms and losses in float32.  On this CPU bf16 is ~100× slower (no bf16
hardware): mixed precision is for GPUs.
"""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(amp: str, device: torch.device):
    """The context a training step runs in: autocast for ``bf16``/``fp16`` (checked by TrainConfig), nothing for
    ``off``."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


class LossScaler:
    """Dynamic loss scale for fp16 (see the module docstring)."""

    def __init__(self, scale: float = 2.0 ** 16, growth_interval: int = 2000):
        self.scale = scale
        self.growth_interval = growth_interval
        self.good_steps = 0
        self.overflows = 0

    def overflowed(self) -> None:
        self.scale = max(self.scale / 2, 1.0)
        self.good_steps = 0
        self.overflows += 1

    def stepped(self) -> None:
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= 2
            self.good_steps = 0

    def state(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "overflows": self.overflows}

    def load(self, state: dict) -> None:
        self.scale = float(state.get("scale", self.scale))
        self.good_steps = int(state.get("good_steps", 0))
        self.overflows = int(state.get("overflows", 0))
