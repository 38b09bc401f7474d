"""Training: the shared Trainer, checkpoints and the sample gallery."""

from .trainer import Trainer

__all__ = ["Trainer"]
