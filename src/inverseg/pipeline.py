"""Inference: ``Pipeline.from_pretrained(run_or_checkpoint)`` then ``pipe(label)`` → list of PIL images.

``Pipeline.from_onnx(file)`` runs an ``inverseg export`` file on onnxruntime instead (``export/runtime.py``).

``label`` may be a path to an index PNG, a colour-coded PNG (decoded with the run's palette; with
``void_colour=True`` the void colour means void, as the studio's canvas sends it), a numpy array or a tensor of ids.  Values outside the model's classes are the one-line LabelError,
never a silent clamp.  The label is resized (nearest) to the model's resolution; ``size="input"`` resizes the
outputs back.

Methods that edit photos (SESAME) also take ``pipe.edit(photo, edited_layout, mask=REGION)``: the region is
re-rendered for the edited layout and the rest of the photo is kept.
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
from .labels import LabelError, LabelSpec, Palette
from .methods import InferenceControls, get_method
from .train import checkpoint as ckpt
from .utils.images import to_uint8

LabelInput = str | Path | np.ndarray | torch.Tensor | Image.Image
ImageInput = str | Path | np.ndarray | Image.Image


class Pipeline:
    def __init__(self, method, spec: LabelSpec, image_size: tuple[int, int], config, source: str = ""):
        self.method = method.eval()
        self.spec = spec
        self.image_size = tuple(image_size)
        self.config = config
        self.source = source
        # Side images of the last call (e.g. SIMS's canvas): name → PIL image; ``{}`` for most methods.
        self.last_extras: dict[str, Image.Image] = {}
        self.last_region: torch.Tensor | None = None  # the (H,W) region the last ``edit`` re-rendered
        self._segmenter = None

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

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None) -> "Pipeline":
        """An ``inverseg export`` ONNX file on onnxruntime (``threads``: default torch's); no checkpoint needed."""
        from .export import load_onnx_pipeline

        return load_onnx_pipeline(path, threads)

    # ------------------------------------------------------------------ label input
    def read_label(self, label: LabelInput, source: str = "label", void_colour: bool = False) -> torch.Tensor:
        """Any supported label input → (H,W) int64 ids, validated against the model's classes."""
        palette = self.colour_palette() if void_colour else self.spec.palette()
        if isinstance(label, (str, Path)):
            return self.read_label(open_image(label, "label"), source=str(label), void_colour=void_colour)
        if isinstance(label, Image.Image):
            if label.mode in ("RGB", "RGBA") and label.format not in LOSSY_FORMATS:
                ids = palette.decode(np.asarray(label.convert("RGB")), source=source)
                return torch.from_numpy(ids)
            return self.read_label(label_values(label, source), source)
        if isinstance(label, np.ndarray):
            if label.ndim == 3 and label.shape[2] in (3, 4):
                ids = palette.decode(label[..., :3].astype(np.uint8), source=source)
                return torch.from_numpy(ids)
            label = torch.from_numpy(label.astype(np.int64))
        if not isinstance(label, torch.Tensor):
            raise TypeError(f"label must be a path, PIL image, numpy array or tensor, got {type(label).__name__}")
        if label.dim() != 2 or label.is_floating_point():
            raise LabelError(f"{source}: expected an (H,W) integer id map, got {tuple(label.shape)} {label.dtype}")
        label = label.long().cpu()
        self.spec.validate(label, source=source)
        return label

    def colour_palette(self) -> Palette:
        """The run's class colours, plus the void colour (→ the ignore index) when it is not a class colour."""
        palette = self.spec.palette()
        spec = self.spec
        if spec.ignore_index is None or tuple(spec.void_color) in spec.colors:
            return palette
        return Palette(palette.ids + (spec.ignore_index,), palette.names + ("void",),
                       palette.colors + (tuple(spec.void_color),), source=f"the '{spec.name}' palette")

    def to_model_size(self, label: torch.Tensor) -> torch.Tensor:
        """Nearest resize with PIL, exactly as the training data was resized (pixel-centre sampling)."""
        if tuple(label.shape[-2:]) == self.image_size:
            return label
        return torch.from_numpy(resize_array(label.numpy(), self.image_size, Image.NEAREST))

    # ------------------------------------------------------------------ synthesis
    @property
    def controls(self) -> InferenceControls:
        """What this run can vary: the most different images per layout, style photo, clusters … (the method's)."""
        return self.method.inference_controls()

    def check_options(self, k: int = 1, style_image: bool = False, style: bool = False) -> None:
        """Refuse, before any work, a k or a style this run cannot honour (one line naming the fix)."""
        controls, name = self.controls, self.method.name
        if controls.max_k is not None and k > controls.max_k:
            if controls.max_k == 1:
                raise ValueError(f"this {name} run is deterministic: it gives one image per layout; ask for k=1")
            raise ValueError(f"this {name} run gives at most {controls.max_k} different images per layout; "
                             f"ask for k ≤ {controls.max_k}")
        if style_image and not controls.style_image:
            raise ValueError(f"this {name} run has no image encoder here, so it takes no style image; drop it "
                             f"(or use a run trained with its encoder: vae.enabled / features.enabled=true)")
        if style and not controls.clusters:
            raise ValueError(f"this {name} run has no appearance clusters; drop the cluster style")

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
        style = {key: self._style_value(key, value) for key, value in style.items()}
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

    def _style_value(self, key: str, value):
        """Style images (``*_image`` options) given as paths / PIL images become [-1,1] tensors at the model size;
        other options (e.g. SIMS's ``canvas="empty"``) pass through."""
        if isinstance(value, (str, Path)) and key.endswith("image"):
            value = open_image(value, "style image").convert("RGB")
        if isinstance(value, Image.Image):
            value = value.convert("RGB").resize((self.image_size[1], self.image_size[0]), Image.BICUBIC)
            array = np.array(value)
            return (torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1.0)[None].to(self.method.device)
        return value

    # ------------------------------------------------------------------ editing a photo
    @property
    def edits_photos(self) -> bool:
        return bool(getattr(self.method, "edits_photos", False))

    def read_photo(self, image: ImageInput, source: str = "photo") -> Image.Image:
        """A path, PIL image or (H,W,3) uint8 array → RGB PIL image."""
        if isinstance(image, (str, Path)):
            return open_image(image, "photo").convert("RGB")
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] not in (3, 4) or array.dtype != np.uint8:
            raise ValueError(f"{source}: expected an (H,W,3) uint8 image, got {array.shape} {array.dtype}")
        return Image.fromarray(array[..., :3])

    def read_mask(self, mask: ImageInput | torch.Tensor, source: str = "mask") -> torch.Tensor:
        """A mask file, image or array → (H,W) bool; non-zero (any channel) = the region to re-render."""
        if isinstance(mask, (str, Path)):
            return self.read_mask(open_image(mask, "mask"), str(mask))
        if isinstance(mask, Image.Image):
            mask = np.asarray(mask.convert("L") if mask.mode not in ("1", "L", "P", "I", "I;16") else mask)
        mask = torch.as_tensor(np.array(mask) if not isinstance(mask, torch.Tensor) else mask)
        if mask.dim() == 3:
            mask = mask.ne(0).any(-1 if mask.shape[-1] in (3, 4) else 0)
        if mask.dim() != 2:
            raise ValueError(f"{source}: expected an (H,W) mask, got shape {tuple(mask.shape)}")
        return mask.ne(0).cpu()

    def edit_region(self, layout: torch.Tensor, mask=None, original_layout=None, grow: int = 2) -> torch.Tensor:
        """The (H,W) bool region to re-render at the model size: ``mask``, or where ``layout`` differs from
        ``original_layout``; both grown by ``grow`` pixels so that the new boundaries are rendered too."""
        if mask is not None:
            region = self.read_mask(mask)
        elif original_layout is not None:
            original = self.to_model_size(self.read_label(original_layout, source="original layout"))
            region = layout != original
        else:
            raise ValueError("an edit needs the region to re-render: pass mask=REGION, or original_layout=IDS to "
                             "re-render wherever the layout changed")
        if tuple(region.shape) != self.image_size:
            region = torch.from_numpy(resize_array(region.numpy().astype(np.uint8), self.image_size,
                                                   Image.NEAREST)).bool()
        if grow < 0:
            raise ValueError(f"grow must be ≥ 0 pixels, got {grow}")
        if grow:
            region = torch.nn.functional.max_pool2d(region[None, None].float(), 2 * grow + 1, 1, grow)[0, 0].bool()
        return region

    @torch.no_grad()
    def edit(self, image: ImageInput, layout: LabelInput, mask=None, original_layout: LabelInput | None = None,
             grow: int = 2, size: str = "input") -> Image.Image:
        """Re-render the region of ``image`` given by ``mask`` (or where ``layout`` differs from
        ``original_layout``) so that it shows ``layout`` there; everything else is the photo's own pixels.

        The photo is resized (bicubic) to the model size for the network.  ``size="input"`` returns the photo's
        size: the re-rendered region is enlarged and pasted into the untouched original.
        """
        if not self.edits_photos:
            raise ValueError(f"this {self.method.name} run synthesizes from layouts only; editing a photo needs a "
                             f"run of a method that edits (sesame)")
        if size not in ("model", "input"):
            raise ValueError(f"size must be 'model' or 'input', got {size!r}")
        photo = self.read_photo(image)
        ids = self.to_model_size(self.read_label(layout))
        region = self.edit_region(ids, mask, original_layout, grow)
        small = photo if photo.size == (self.image_size[1], self.image_size[0]) else \
            photo.resize((self.image_size[1], self.image_size[0]), Image.BICUBIC)
        device = self.method.device
        photo_tensor = (torch.from_numpy(np.array(small)).permute(2, 0, 1).float() / 127.5 - 1.0)[None].to(device)
        output = self.method.sample(ids[None].to(device), image=photo_tensor, mask=region[None].to(device))[0, 0]
        self.last_region = region
        result = Image.fromarray(to_uint8(output))
        if size == "model" or photo.size == result.size:
            return result
        enlarged = np.asarray(result.resize(photo.size, Image.BICUBIC))
        inside = resize_array(region.numpy().astype(np.uint8), (photo.size[1], photo.size[0]), Image.NEAREST) > 0
        return Image.fromarray(np.where(inside[..., None], enlarged, np.asarray(photo)))

    # ------------------------------------------------------------------ the layout of a photo
    def load_segmenter(self, path: str | Path | None = None):
        """The segmenter that reads a photo's layout: ``path`` (an ``inverseg evaluator train`` folder or a
        segmenter JSON), else the evaluator for this run's label set and size in the cache."""
        from .eval.paths import default_evaluator_dir
        from .eval.segmenter import SegmenterError, load_segmenter

        if path is None and self._segmenter is not None:
            return self._segmenter
        location = Path(path) if path is not None else default_evaluator_dir(self.spec.name, self.image_size)
        if path is None and not location.exists():
            raise SegmenterError(f"no segmenter for label set '{self.spec.name}' at {self.image_size[0]}x"
                                 f"{self.image_size[1]} ({location}); fix: inverseg evaluator train --dataset ... "
                                 f"--size {self.image_size[0]}x{self.image_size[1]}, or give the layout yourself")
        segmenter = load_segmenter(location, self.spec)
        if path is None:
            self._segmenter = segmenter
        return segmenter

    @torch.no_grad()
    def segment(self, image: ImageInput, segmenter=None) -> torch.Tensor:
        """A photo's layout at the model size, (H,W) ids; pixels the segmenter gives no class become void."""
        from .eval.segmenter import NO_CLASS

        segmenter = segmenter if segmenter is not None else self.load_segmenter()
        size = tuple(getattr(segmenter, "size", None) or self.image_size)
        photo = self.read_photo(image).resize((size[1], size[0]), Image.BICUBIC)
        tensor = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        ids = segmenter.predict(tensor)[0].cpu()
        fill = self.spec.ignore_index if self.spec.ignore_index is not None else 0
        ids = torch.where(ids == NO_CLASS, torch.full_like(ids, fill), ids)
        return self.to_model_size(ids.long())
