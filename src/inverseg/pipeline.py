"""Inference: ``Pipeline.from_pretrained(run_or_checkpoint)`` then ``pipe(label)`` → list of PIL images.

``label`` may be a path to an index PNG, a colour-coded PNG (decoded with the run's palette), a numpy array or
a tensor of ids.  Values outside the model's classes are the one-line LabelError, never a silent clamp.  The
label is resized (nearest) to the model's resolution; ``size="input"`` resizes the outputs back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import build_run_config
from .data.base import LOSSY_FORMATS, label_values, open_image
from .data.transforms import resize_array
from .labels import LabelError, LabelSpec
from .methods import get_method
from .train import checkpoint as ckpt
from .utils.images import to_uint8

LabelInput = str | Path | np.ndarray | torch.Tensor | Image.Image


class Pipeline:
    def __init__(self, method, spec: LabelSpec, image_size: tuple[int, int], config, source: str = ""):
        self.method = method.eval()
        self.spec = spec
        self.image_size = tuple(image_size)
        self.config = config
        self.source = source
        # Side images of the last call (e.g. SIMS's canvas): name → PIL image; ``{}`` for most methods.
        self.last_extras: dict[str, Image.Image] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        use_ema: bool = True) -> "Pipeline":
        """Load a run directory (its latest checkpoint) or one checkpoint directory, without pickle."""
        checkpoint = ckpt.resolve_checkpoint(path)
        state = ckpt.read_state(checkpoint)
        config = build_run_config(state["config"], preset=state["config"].get("preset", ""))
        spec = LabelSpec.from_dict(state["spec"])
        method_class = get_method(state["method"])
        method = method_class(config.settings, spec, tuple(state["image_size"]), training=False)
        modules = method_class.inference_modules
        if not use_ema:
            modules = tuple(m.replace("_ema", "") for m in modules)
        ckpt.load_method_weights(method, checkpoint, modules)
        method.to(torch.device(device))
        return cls(method, spec, tuple(state["image_size"]), config, source=str(checkpoint))

    # ------------------------------------------------------------------ label input
    def read_label(self, label: LabelInput, source: str = "label") -> torch.Tensor:
        """Any supported label input → (H,W) int64 ids, validated against the model's classes."""
        if isinstance(label, (str, Path)):
            return self.read_label(open_image(label, "label"), source=str(label))
        if isinstance(label, Image.Image):
            if label.mode in ("RGB", "RGBA") and label.format not in LOSSY_FORMATS:
                ids = self.spec.palette().decode(np.asarray(label.convert("RGB")), source=source)
                return torch.from_numpy(ids)
            return self.read_label(label_values(label, source), source)
        if isinstance(label, np.ndarray):
            if label.ndim == 3 and label.shape[2] in (3, 4):
                ids = self.spec.palette().decode(label[..., :3].astype(np.uint8), source=source)
                return torch.from_numpy(ids)
            label = torch.from_numpy(label.astype(np.int64))
        if not isinstance(label, torch.Tensor):
            raise TypeError(f"label must be a path, PIL image, numpy array or tensor, got {type(label).__name__}")
        if label.dim() != 2 or label.is_floating_point():
            raise LabelError(f"{source}: expected an (H,W) integer id map, got {tuple(label.shape)} {label.dtype}")
        label = label.long().cpu()
        self.spec.validate(label, source=source)
        return label

    def to_model_size(self, label: torch.Tensor) -> torch.Tensor:
        """Nearest resize with PIL, exactly as the training data was resized (pixel-centre sampling)."""
        if tuple(label.shape[-2:]) == self.image_size:
            return label
        return torch.from_numpy(resize_array(label.numpy(), self.image_size, Image.NEAREST))

    # ------------------------------------------------------------------ synthesis
    @torch.no_grad()
    def __call__(self, label: LabelInput | list, k: int = 1, seed: int | None = None, size: str = "model",
                 **style: Any) -> list[Image.Image]:
        """Synthesize ``k`` images for one label map (or a list of label maps → list of lists)."""
        if isinstance(label, list):
            return [self(item, k=k, seed=seed, size=size, **style) for item in label]
        if size not in ("model", "input"):
            raise ValueError(f"size must be 'model' or 'input', got {size!r}")
        ids = self.read_label(label)
        input_size = tuple(ids.shape)
        model_ids = self.to_model_size(ids).to(self.method.device)[None]
        generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
        style = {key: self._style_value(value) for key, value in style.items()}
        images = self.method.sample(model_ids, k=k, generator=generator, **style)[0]

        def picture_of(image: torch.Tensor) -> Image.Image:
            picture = Image.fromarray(to_uint8(image))
            if size == "input" and picture.size != (input_size[1], input_size[0]):
                picture = picture.resize((input_size[1], input_size[0]), Image.BICUBIC)
            return picture

        # a method may leave side images of this call in ``method.last_extras``: name → (1, [k,] 3, H, W)
        self.last_extras = {}
        for name, extra in (getattr(self.method, "last_extras", None) or {}).items():
            per_output = extra[0] if extra.dim() == 5 else extra  # one layout per call: (k, 3, H, W)
            for index, image in enumerate(per_output):
                self.last_extras[name if index == 0 else f"{name}_{index}"] = picture_of(image)
        return [picture_of(image) for image in images]

    def _style_value(self, value):
        """Style images given as paths / PIL images become [-1,1] tensors at the model size."""
        if isinstance(value, (str, Path)):
            value = open_image(value, "style image").convert("RGB")
        if isinstance(value, Image.Image):
            value = value.convert("RGB").resize((self.image_size[1], self.image_size[0]), Image.BICUBIC)
            array = np.array(value)
            return (torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1.0)[None].to(self.method.device)
        return value
