"""Frozen VGG16/VGG19 feature extractors for perceptual losses and feature matching.

The module tree mirrors torchvision's ``vgg16().features`` / ``vgg19().features`` (an ``nn.Sequential`` called
``features`` with Conv2d/ReLU/MaxPool2d at the same indices), so torchvision checkpoints load unchanged and our
own converted weights can be used by anything that expects torchvision's keys.

Layer names follow the papers: ``conv{b}_{i}`` is the output of the i-th convolution of block b *before* its
ReLU, ``relu{b}_{i}`` the same activation after the ReLU, ``pool{b}`` the output of block b's pooling.  Beware
that the methods disagree on what "conv" means: CRN's "conv1_2 … conv5_2" are, in its MatConvNet code,
post-ReLU activations, i.e. our ``relu1_2 … relu5_2``; pix2pixHD and SPADE use ``relu1_1 … relu5_1``.

Every extractor takes images in [-1, 1], RGB, (B, 3, H, W) and converts them itself, because the right
conversion belongs to the weights, not to the caller:

``caffe``     (x + 1) * 127.5, RGB→BGR, minus the BGR mean (103.939, 116.779, 123.68).  What Caffe-born VGG
              weights expect, such as the offline VGG16 converted from Keras (``keras...vgg16.preprocess_input``).
``imagenet``  ((x + 1) / 2 − mean) / std with torchvision's ImageNet mean/std, RGB.  Correct for torchvision's
              ``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth``.
``legacy``    [-1, 1] fed as is, which is what pix2pixHD, SPADE and OASIS do with torchvision's VGG19; kept so
              that their loss magnitudes can be reproduced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import nn

# Output channels per convolution, "M" marks a pooling layer; identical to torchvision's configs "D" and "E".
_CONFIGS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}
ARCHS = tuple(_CONFIGS)
CONVENTIONS = ("caffe", "imagenet", "legacy")
POOLINGS = ("max", "avg")

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def layer_indices(arch: str) -> dict[str, int]:
    """Name → index in ``features`` of the module whose *output* is that layer."""
    if arch not in _CONFIGS:
        raise ValueError(f"unknown VGG architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    names: dict[str, int] = {}
    block, conv, index = 1, 0, 0
    for item in _CONFIGS[arch]:
        if item == "M":
            names[f"pool{block}"] = index
            block, conv, index = block + 1, 0, index + 1
        else:
            conv += 1
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index += 2
    return names


def _build_features(arch: str, pooling: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _CONFIGS[arch]:
        if item == "M":
            # Average pooling has no parameters, so swapping it in keeps the state-dict keys unchanged.
            layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


def arch_of(state_dict: dict[str, torch.Tensor]) -> str:
    """Tell VGG16 from VGG19 by the number of convolutions in a ``features.*`` state dict."""
    convs = sum(1 for key in state_dict if key.startswith("features.") and key.endswith(".weight"))
    for arch, config in _CONFIGS.items():
        if convs == sum(1 for item in config if item != "M"):
            return arch
    raise ValueError(f"state dict has {convs} convolution weights: neither VGG16 (13) nor VGG19 (16)")


class VGGFeatures(nn.Module):
    """Frozen VGG conv stack returning a dict of the requested activations.

    The forward pass stops after the deepest requested layer, because perceptual losses rarely need pool5 and
    the deep blocks dominate the cost.  Parameters never require gradients and the module stays in eval mode
    even when a parent calls ``.train()``; gradients still flow to the input, which is what losses need.
    """

    def __init__(self, arch: str = "vgg19", layers: Iterable[str] = DEFAULT_LAYERS, pooling: str = "max",
                 input_convention: str = "imagenet"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if input_convention not in CONVENTIONS:
            raise ValueError(f"input_convention must be one of {CONVENTIONS}, got {input_convention!r}")
        indices = layer_indices(arch)
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("ask for at least one layer")
        unknown = [name for name in self.layers if name not in indices]
        if unknown:
            raise ValueError(f"{arch} has no layer(s) {', '.join(unknown)}; known: {', '.join(indices)}")
        self.arch, self.pooling, self.input_convention = arch, pooling, input_convention
        self._index_to_names: dict[int, list[str]] = {}
        for name in self.layers:
            self._index_to_names.setdefault(indices[name], []).append(name)
        self._stop = max(self._index_to_names) + 1
        self.features = _build_features(arch, pooling)
        # Non-persistent so that the state dict holds exactly torchvision's keys.
        self.register_buffer("_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.ones(1, 3, 1, 1), persistent=False)
        if input_convention == "caffe":
            self._mean.copy_(torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1))
        elif input_convention == "imagenet":
            self._mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self._std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Stay in eval mode: a perception network is a fixed measuring instrument."""
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB → what the weights were trained on (see the module docstring)."""
        if self.input_convention == "caffe":
            x = (x + 1.0) * 127.5
            return x.flip(1) - self._mean
        if self.input_convention == "imagenet":
            return ((x + 1.0) * 0.5 - self._mean) / self._std
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        x = self.preprocess(x)
        out: dict[str, torch.Tensor] = {}
        for index in range(self._stop):
            x = self.features[index](x)
            for name in self._index_to_names.get(index, ()):
                out[name] = x
        return {name: out[name] for name in self.layers}

    def extra_repr(self) -> str:
        return f"arch={self.arch}, pooling={self.pooling}, input_convention={self.input_convention}, " \
               f"layers={list(self.layers)}"


def load_vgg(arch: str = "vgg19", layers: Iterable[str] = DEFAULT_LAYERS, pooling: str = "max",
             input_convention: str | None = None, weights: str | Path | None = "auto",
             cache: str | Path | None = None) -> VGGFeatures:
    """A pretrained, frozen ``VGGFeatures``.

    ``weights="auto"`` takes torchvision's standard file for ``arch`` when present, else the offline VGG16
    (with a warning naming the missing file); a path loads that file; ``None`` leaves random weights (shape
    tests only).  ``input_convention=None`` uses the convention that belongs to the weights; pass
    ``"legacy"`` to reproduce pix2pixHD/SPADE/OASIS.  The returned model's ``arch`` may differ from the one
    asked for when the substitute is used; ``model.weights_description`` says what was loaded and
    ``model.weights_record`` records it (network, weights file, sha256) for state.json and reports.
    """
    if weights is None:
        model = VGGFeatures(arch, layers, pooling, input_convention or "imagenet")
        model.weights_description = "random initialisation (no weights loaded)"
        model.weights_record = describe_weights(model, arch, "random initialisation", None)
        return model
    from .weights import locate_vgg, resolve_vgg

    path = None if weights == "auto" else weights
    source = locate_vgg(arch, path, cache)
    state_dict, description, convention = resolve_vgg(arch, path, cache=cache)
    actual = arch_of(state_dict)
    layers = tuple(layers)
    missing = [name for name in layers if name not in layer_indices(actual)]
    if missing:
        raise ValueError(f"layer(s) {', '.join(missing)} do not exist in the weights that were found "
                         f"({description}); ask for layers that VGG16 has too, or provide the {arch} file")
    model = VGGFeatures(actual, layers, pooling, input_convention or convention)
    model.load_state_dict(state_dict)
    model.weights_description = description
    model.weights_record = describe_weights(model, arch, source.label, source.path)
    return model


def describe_weights(model: VGGFeatures, requested: str, label: str, path: Path | None) -> dict:
    """What a VGG really is, for run records: e.g. "VGG16 (HED-offline) in place of VGG19" with its file's sha256.

    Layer names are this module's: VGG16's relu3_2/relu4_2/relu5_2 are the 2nd of *three* convolutions of their
    block, VGG19's the 2nd of four — same names, different depths.
    """
    from .weights import cached_sha256

    network = model.arch.upper()
    summary = f"{network} ({label})" + (f" in place of {requested.upper()}" if model.arch != requested else "")
    record = {
        "network": network,
        "requested": requested.upper(),
        "weights": label,
        "file": path.name if path is not None else None,
        "path": str(path) if path is not None else None,
        "sha256": cached_sha256(path) if path is not None else None,
        "input_convention": model.input_convention,
        "pooling": model.pooling,
        "layers": list(model.layers),
    }
    layers = f"{model.layers[0]}…{model.layers[-1]}" if len(model.layers) > 1 else model.layers[0]
    weights = f"{path.name} sha256 {record['sha256'][:12]}" if path is not None else "no weights file"
    record["summary"] = (f"{summary}; {weights}; {model.input_convention} input, {model.pooling} pooling, "
                         f"{layers}")
    return record
