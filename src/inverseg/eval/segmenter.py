"""Segmenters that judge generated images: our own MobileNetV2 evaluator, or a user's TorchScript/ONNX network.

The field scores semantic image synthesis by segmenting the generated image and comparing with the input layout.
The official repositories ship no segmenter, and the numbers move with every unstated choice (weights, input
resolution, resize method, ignore label, id mapping), so every segmenter here carries an *identity*: the sha256
of its weights file, recorded in every report.

Every segmenter has one method, ``predict(images) -> ids``: images (B,3,H,W) in [-1,1] at the evaluation
resolution → (B,H,W) int64 dataset class ids, or ``NO_CLASS`` (-1) where the network predicts something that has
no dataset class (an output index mapped to "ignore").  A ``NO_CLASS`` pixel counts as a miss for its ground-truth
class and as a hit for none.

* ``MobileNetSegmenter`` — the evaluator ``inverseg evaluator train`` produces: ImageNet MobileNetV2 (fine-tuned)
  + a light decoder (LR-ASPP context at stride 32, top-down fusion with the stride 16/8/4 maps).  Saved as
  ``evaluator.safetensors`` + ``evaluator.json`` in one directory.
* ``ExternalSegmenter`` — a TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``, needs onnxruntime) file described by
  a JSON file: input size/range/mean/std/channel order and the id mapping (network output index → dataset class
  id or null = ignore).  See docs/evaluation.md for DRN-D-105, UperNet-101 and DeepLab-v2.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InversegError
from ..labels import LabelSpec
from ..perception.mobilenet import STAGE_CHANNELS, MobileNetV2

NO_CLASS = -1
EVALUATOR_JSON = "evaluator.json"
EVALUATOR_WEIGHTS = "evaluator.safetensors"
EVALUATOR_FORMAT = "inverseg-evaluator/1"


class SegmenterError(InversegError, ValueError):
    """A segmenter file or description is unusable; the message names the file and the fix."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Our evaluator: MobileNetV2 + light decoder
# ---------------------------------------------------------------------------------------------------------
def _conv_bn_relu(inp: int, out: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out),
                         nn.ReLU(inplace=True))


def _separable(channels: int) -> nn.Sequential:
    """Depthwise 3×3 + pointwise 1×1: a 3×3 receptive field for a fraction of a full convolution's cost."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False), nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True), _conv_bn_relu(channels, channels, 1),
    )


class LiteDecoder(nn.Module):
    """LR-ASPP context (MobileNetV3 paper §6.3: 1×1 conv gated by a global-pool sigmoid) on the stride-32 map,
    then top-down fusion with 1×1 projections of the stride 16, 8 and 4 maps (FPN style), classifier at stride 4.

    Small objects (poles, signs, pedestrians) are a few pixels wide at evaluation resolutions, hence the
    stride-4 output instead of LR-ASPP's stride 8.
    """

    def __init__(self, num_classes: int, width: int = 128, in_channels: tuple[int, ...] = STAGE_CHANNELS):
        super().__init__()
        self.context = _conv_bn_relu(in_channels[3], width)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels[3], width, 1), nn.Sigmoid())
        self.lateral = nn.ModuleList(_conv_bn_relu(c, width) for c in in_channels[2::-1])  # strides 16, 8, 4
        self.fuse = nn.ModuleList(_separable(width) for _ in in_channels[2::-1])
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        top = stages[3]
        x = self.context(top) * self.gate(top)
        for lateral, fuse, skip in zip(self.lateral, self.fuse, stages[2::-1]):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(x + lateral(skip))
        return self.classifier(x)


@dataclass
class SegmenterConfig:
    """Architecture of the MobileNetV2 evaluator; serialised into evaluator.json."""

    num_classes: int
    width: int = 128  # decoder channels
    # Images at the evaluation resolution are bilinearly enlarged by this factor before the backbone, so that its
    # stride-4 map still resolves thin objects at 96×128; logits come back to the evaluation resolution.
    input_scale: float = 2.0


class MobileNetSegmenter(nn.Module):
    """ImageNet MobileNetV2 backbone (fine-tuned, batch-norm statistics frozen) + ``LiteDecoder``."""

    kind = "inverseg-mobilenetv2"

    def __init__(self, config: SegmenterConfig, spec: LabelSpec, size: tuple[int, int],
                 backbone: MobileNetV2 | None = None):
        super().__init__()
        if config.num_classes != spec.num_classes:
            raise ValueError(f"config has {config.num_classes} classes but the label set {spec.name} has "
                             f"{spec.num_classes}")
        self.config, self.spec, self.size = config, spec, tuple(size)
        self.backbone = backbone if backbone is not None else MobileNetV2(frozen=False)
        self.backbone.frozen = False
        self.backbone.requires_grad_(True)
        self.backbone.classifier = nn.Identity()  # ImageNet logits are never used; keeps the checkpoint small
        self.decoder = LiteDecoder(config.num_classes, config.width)
        self.identity: dict = {"name": "inverseg MobileNetV2 evaluator", "kind": self.kind, "sha256": None}
        self.eval()

    def train(self, mode: bool = True) -> "MobileNetSegmenter":
        """The backbone's batch-norm statistics stay ImageNet's: batches of a few small crops would ruin them."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] → logits (B,C,H,W) at the input's resolution."""
        size = images.shape[-2:]
        x = images
        if self.config.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.config.input_scale, mode="bilinear", align_corners=False)
        logits = self.decoder(self.backbone.stages(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self(images).argmax(1)

    @property
    def id_mapping(self) -> str:
        return f"identity (trained on the '{self.spec.name}' label set)"

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path, info: dict | None = None) -> Path:
        """``evaluator.safetensors`` + ``evaluator.json``; the weights' sha256 is the evaluator's identity."""
        from safetensors.torch import save_file

        from ..utils.io import atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / EVALUATOR_WEIGHTS
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        temporary = directory / f".{EVALUATOR_WEIGHTS}.tmp"
        save_file(state, str(temporary))
        temporary.replace(weights)
        checksum = sha256_file(weights)
        self.identity = {"name": "inverseg MobileNetV2 evaluator", "kind": self.kind, "sha256": checksum,
                         "path": str(directory)}
        document = {
            "format": EVALUATOR_FORMAT,
            "kind": self.kind,
            "weights": EVALUATOR_WEIGHTS,
            "sha256": checksum,
            "size": list(self.size),
            "config": asdict(self.config),
            "spec": self.spec.to_dict(),
            "protocol": evaluator_protocol(self.spec, self.size),
            **(info or {}),
        }
        atomic_write_json(directory / EVALUATOR_JSON, document)
        return directory

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> "MobileNetSegmenter":
        from safetensors.torch import load_file

        directory = Path(directory)
        document = read_evaluator_json(directory)
        weights = directory / document.get("weights", EVALUATOR_WEIGHTS)
        if not weights.is_file():
            raise SegmenterError(f"{weights}: evaluator weights missing; fix: train it again with "
                                 f"'inverseg evaluator train'")
        checksum = sha256_file(weights)
        if verify and checksum != document.get("sha256"):
            raise SegmenterError(f"{weights}: sha256 {checksum[:12]}… differs from the {document.get('sha256', '')[:12]}… "
                                 f"recorded in {EVALUATOR_JSON}; the evaluator was modified — retrain it")
        model = cls(SegmenterConfig(**document["config"]), LabelSpec.from_dict(document["spec"]),
                    tuple(document["size"]))
        model.load_state_dict(load_file(str(weights)))
        model.identity = {"name": "inverseg MobileNetV2 evaluator", "kind": cls.kind, "sha256": checksum,
                          "path": str(directory)}
        model.document = document
        return model.eval()


def evaluator_protocol(spec: LabelSpec, size: tuple[int, int]) -> dict:
    """What the evaluator expects, written next to its weights and into every report."""
    return {
        "resolution": list(size),
        "image_resize": "PIL bicubic from the original file to exactly H×W (aspect ratio not preserved)",
        "label_resize": "nearest",
        "ignore_index": spec.ignore_index,
        "input": "RGB in [-1,1]",
    }


def read_evaluator_json(directory: Path) -> dict:
    path = Path(directory) / EVALUATOR_JSON
    if not path.is_file():
        raise SegmenterError(f"{directory}: no {EVALUATOR_JSON}; fix: pass a folder written by "
                             f"'inverseg evaluator train' or a segmenter description JSON")
    document = json.loads(path.read_text(encoding="utf-8"))
    if document.get("format") != EVALUATOR_FORMAT:
        raise SegmenterError(f"{path}: format {document.get('format')!r}, expected {EVALUATOR_FORMAT!r}")
    return document


# ---------------------------------------------------------------------------------------------------------
# A user's segmenter: TorchScript or ONNX + id mapping + input convention
# ---------------------------------------------------------------------------------------------------------
@dataclass
class InputConvention:
    """How the network wants its input: ``size`` (H,W) or None (the evaluation resolution), value range, then
    ``(x − mean) / std`` per channel in that range, channel order."""

    size: tuple[int, int] | None = None
    range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: str = "RGB"  # RGB | BGR

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """[-1,1] RGB at the evaluation resolution → the network's input."""
        x = images
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            shrinking = self.size[0] < x.shape[-2] or self.size[1] < x.shape[-1]
            x = F.interpolate(x, size=tuple(self.size), mode="bilinear", align_corners=False, antialias=shrinking)
        low, high = self.range
        x = low + (x + 1.0) * 0.5 * (high - low)
        if self.channels == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


def parse_id_mapping(mapping, num_outputs: int, spec: LabelSpec, source: str) -> np.ndarray:
    """JSON id mapping → lookup table (network output index → dataset class id, or NO_CLASS).

    Accepted: ``"identity"``; a list whose i-th entry is the class id of output i (``null`` = ignore); a dict
    ``{"output index": class id or null}`` where unlisted outputs are ignored.  A class id may also be given by
    its name.  Every class id must exist in the dataset's label set.
    """

    def class_id(value, where: str) -> int:
        if value is None:
            return NO_CLASS
        if isinstance(value, str):
            if value not in spec.class_names:
                raise SegmenterError(f"{source}: id_mapping {where}: no class named {value!r} in '{spec.name}'")
            return spec.class_names.index(value)
        if not isinstance(value, int) or not 0 <= value < spec.num_classes:
            raise SegmenterError(f"{source}: id_mapping {where}: {value!r} is not a class id of '{spec.name}' "
                                 f"(0–{spec.num_classes - 1}) or null")
        return value

    if mapping in (None, "identity"):
        if num_outputs != spec.num_classes:
            raise SegmenterError(f"{source}: the network has {num_outputs} outputs but '{spec.name}' has "
                                 f"{spec.num_classes} classes; fix: give an id_mapping")
        return np.arange(num_outputs, dtype=np.int64)
    table = np.full(num_outputs, NO_CLASS, dtype=np.int64)
    if isinstance(mapping, list):
        if len(mapping) != num_outputs:
            raise SegmenterError(f"{source}: id_mapping lists {len(mapping)} entries for {num_outputs} outputs")
        for index, value in enumerate(mapping):
            table[index] = class_id(value, f"entry {index}")
    elif isinstance(mapping, dict):
        for key, value in mapping.items():
            if not str(key).isdigit() or not 0 <= int(key) < num_outputs:
                raise SegmenterError(f"{source}: id_mapping key {key!r} is not an output index 0–{num_outputs - 1}")
            table[int(key)] = class_id(value, f"key {key}")
    else:
        raise SegmenterError(f"{source}: id_mapping must be 'identity', a list or an object")
    return table


@dataclass
class SegmenterDescription:
    """The JSON file that turns a bare TorchScript/ONNX network into an evaluator (see docs/evaluation.md)."""

    model: str
    num_outputs: int
    name: str = ""
    format: str | None = None  # torchscript | onnx (default: from the file extension)
    input: InputConvention = field(default_factory=InputConvention)
    id_mapping: object = "identity"
    label_set: str | None = None  # the LabelSpec name the mapping targets (checked when given)

    @classmethod
    def read(cls, path: str | Path) -> "SegmenterDescription":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SegmenterError(f"{path}: not valid JSON ({error})") from None
        known = {"model", "num_outputs", "name", "format", "input", "id_mapping", "label_set"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SegmenterError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        for key in ("model", "num_outputs"):
            if key not in data:
                raise SegmenterError(f"{path}: missing key {key!r}")
        convention = dict(data.get("input") or {})
        unknown = sorted(set(convention) - {"size", "range", "mean", "std", "channels"})
        if unknown:
            raise SegmenterError(f"{path}: unknown input key {unknown[0]!r}; known: size, range, mean, std, channels")
        if convention.get("size") is not None:
            convention["size"] = tuple(int(v) for v in convention["size"])
        for key in ("range", "mean", "std"):
            if key in convention:
                convention[key] = tuple(float(v) for v in convention[key])
        if convention.get("channels", "RGB") not in ("RGB", "BGR"):
            raise SegmenterError(f"{path}: input.channels must be RGB or BGR")
        model = Path(data["model"]).expanduser()
        if not model.is_absolute():
            model = path.parent / model
        return cls(model=str(model), num_outputs=int(data["num_outputs"]), name=data.get("name", model.name),
                   format=data.get("format"), input=InputConvention(**convention),
                   id_mapping=data.get("id_mapping", "identity"), label_set=data.get("label_set"))


class ExternalSegmenter:
    """A TorchScript or ONNX segmentation network behind ``predict``.

    The network's output may be logits (B,K,h,w) — resized bilinearly to the evaluation resolution, then arg-max —
    or ids (B,h,w) — resized nearest.  A tuple/list output uses its first element, a dict its ``"out"`` entry.
    """

    def __init__(self, description: SegmenterDescription, spec: LabelSpec, source: str = "segmenter"):
        self.description = description
        self.spec = spec
        self.size = None  # any evaluation resolution; the input convention may fix the network's own
        if description.label_set and description.label_set != spec.name:
            raise SegmenterError(f"{source}: the segmenter's id_mapping targets label set "
                                 f"'{description.label_set}' but the dataset uses '{spec.name}'")
        path = Path(description.model)
        if not path.is_file():
            raise SegmenterError(f"{source}: model file {path} not found")
        kind = description.format or ("onnx" if path.suffix.lower() == ".onnx" else "torchscript")
        if kind not in ("torchscript", "onnx"):
            raise SegmenterError(f"{source}: format must be torchscript or onnx, got {kind!r}")
        self.kind = kind
        self.lookup = torch.from_numpy(parse_id_mapping(description.id_mapping, description.num_outputs, spec,
                                                        source))
        self.identity = {"name": description.name, "kind": kind, "sha256": sha256_file(path), "path": str(path)}
        if kind == "onnx":
            try:
                import onnxruntime
            except ImportError:
                raise SegmenterError(f"{source}: ONNX segmenters need onnxruntime; fix: pip install "
                                     f"'inverseg[onnx]' (or onnxruntime)") from None
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            self.module = None
        else:
            try:
                with warnings.catch_warnings():  # recent torch deprecates TorchScript; published nets use it
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.module = torch.jit.load(str(path), map_location="cpu").eval()
            except RuntimeError as error:
                raise SegmenterError(f"{source}: {path} is not a TorchScript file ({str(error).splitlines()[0]}); "
                                     f"fix: save it with torch.jit.trace(model, example).save(path)") from None
            self.session = None

    @property
    def id_mapping(self) -> dict | str:
        mapping = self.description.id_mapping
        return mapping if isinstance(mapping, str) else {
            str(i): (None if int(v) == NO_CLASS else int(v)) for i, v in enumerate(self.lookup.tolist())}

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            name = self.session.get_inputs()[0].name
            return torch.from_numpy(np.asarray(self.session.run(None, {name: x.numpy().astype(np.float32)})[0]))
        with torch.no_grad():
            out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = out["out"]
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        size = tuple(images.shape[-2:])
        out = self._run(self.description.input.apply(images.float()))
        if out.dim() == 4:
            if out.shape[1] != self.description.num_outputs:
                raise SegmenterError(f"{self.identity['path']}: the network returned {out.shape[1]} channels, "
                                     f"its description says num_outputs={self.description.num_outputs}")
            if tuple(out.shape[-2:]) != size:
                out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
            index = out.argmax(1)
        elif out.dim() == 3 and not out.is_floating_point():
            index = out.long()
            if tuple(index.shape[-2:]) != size:
                index = F.interpolate(index[:, None].float(), size=size, mode="nearest")[:, 0].long()
        else:
            raise SegmenterError(f"{self.identity['path']}: expected logits (B,K,H,W) or ids (B,H,W), got "
                                 f"{tuple(out.shape)} {out.dtype}")
        if int(index.min()) < 0 or int(index.max()) >= len(self.lookup):
            raise SegmenterError(f"{self.identity['path']}: predicted index outside 0–{len(self.lookup) - 1}")
        return self.lookup[index]


def load_segmenter(path: str | Path, spec: LabelSpec):
    """An evaluator directory (``inverseg evaluator train``) or a segmenter description JSON → segmenter."""
    path = Path(path).expanduser()
    if path.is_dir():
        model = MobileNetSegmenter.load(path)
        if list(model.spec.class_names) != list(spec.class_names):
            raise SegmenterError(f"{path}: the evaluator was trained on label set '{model.spec.name}' "
                                 f"({model.spec.num_classes} classes), not on '{spec.name}' ({spec.num_classes})")
        return model
    if path.is_file() and path.suffix.lower() == ".json":
        return ExternalSegmenter(SegmenterDescription.read(path), spec, source=str(path))
    if path.is_file():
        raise SegmenterError(f"{path}: pass a JSON description of the network (model file, input convention, "
                             f"id_mapping), not the network itself; see docs/evaluation.md")
    raise SegmenterError(f"{path}: no such evaluator folder or segmenter JSON")
