"""CRN — Cascaded Refinement Networks (Chen & Koltun, ICCV 2017): the recipe.

One feed-forward generator (``models/crn.py``, paper §3.2) trained by direct regression with the perceptual loss
(``losses/perceptual.py``, §3.3); with ``model.num_outputs = k > 1`` it emits k images at once and trains with
the per-class best-of-k diversity loss (``losses/diversity.py``, §3.4).  No discriminator.

Official defaults (implementations.md §1): Adam lr 1e-4, betas (0.9, 0.999), batch 1, constant lr; label maps
as area-downsampled one-hot with a void channel; VGG-19 with average pooling.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field

import torch

from ..labels import LabelSpec
from ..losses.diversity import DiversityLoss
from ..losses.perceptual import CRN_LAYERS, OFFICIAL_LAMBDAS, LambdaBalancer, PerceptualLoss, ReferenceCache
from ..models.crn import CRNGenerator
from .base import InferenceControls, Method


@dataclass
class CRNModelConfig:
    """Generator shape. ``widths[i]`` = feature maps of module i; the output size is base_grid · 2^(n−1)."""

    widths: tuple[int, ...] = (256, 256, 256, 256, 128, 64)
    base_grid: tuple[int, int] = (3, 4)
    void_channel: bool = True  # paper §3.1 / official 20-channel input: void = 1 − Σ classes
    num_outputs: int = 1  # k images per layout (diversity variant: 9)
    # xavier (official: slim's Xavier weights, zero bias) | centred (deviation): before the first step, shift the
    # output bias so that every one of the k outputs starts at mid-grey on the first batch.  With Xavier weights
    # the 1×1 output conv maps the positive mean of the LReLU features to a random colour per output (tens to
    # over a hundred levels off grey per channel); under the per-class min the output that starts nearest wins every class and the others stay
    # stuck (docs/methods/crn.md "Diversity collapse").
    output_init: str = "xavier"


@dataclass
class PerceptualConfig:
    """The VGG perceptual loss and its λ (paper §3.3)."""

    # auto: torchvision VGG19 when vgg19-dcbb9e9d.pth is present, else the offline VGG16 (caffe input);
    # vgg19 / vgg16 pick an architecture (its standard file, else the offline VGG16 for vgg16).
    backbone: str = "auto"
    weights: str = "auto"  # auto | path to a weights file (.safetensors, or torchvision .pth)
    input_convention: str | None = None  # None: the convention that belongs to the weights
    pooling: str = "avg"  # CRN's MatConvNet VGG-19 uses average pooling (implementations.md §1.3)
    layers: tuple[str, ...] = CRN_LAYERS  # CRN's conv1_2 … conv5_2 (post-ReLU in the official code)
    # once (paper: rescale once, after 100 epochs) | every | fixed (all weights 1, i.e. λ = 1/#elements)
    # | official-crn-256p | official-crn-512p | official-crn-1024p | official-gta-256p (published constants)
    balance: str = "once"
    rebalance_at: int = 297_500  # steps; paper: 100 epochs × 2,975 Cityscapes images at batch 1
    window: int | None = None  # steps averaged before rebalancing (paper: the 100th epoch; None: all steps)
    final_layer_boost: float = 1.0  # official scripts: 10 on conv5_2 (not in the paper)
    diversity_mean_mix: float = 0.0  # official: 0.001 · mean over outputs mixed into the per-class min
    # Deviation (not in the paper or the official code), off by default: an extra balanced term "colour" = L1
    # between the mean colours of each class region of output and photo, aimed at the colour cast of an
    # under-trained CRN; λ for it is balanced like the other terms.  Measured: at that weight it does not remove
    # the cast in an 8-CPU-min CamVid run (docs/methods/crn.md "Colour cast").
    colour_term: bool = False
    cache_reference: bool = False  # keep reference VGG features in RAM across epochs (verified by checksum)
    cache_max_mb: int = 4096  # float32 features; CamVid train at 96×128 needs ≈ 2.1 GB

    def schedule_problems(self, steps: int) -> list[str]:
        """A λ schedule that cannot fire within ``steps`` training steps (the balancer rebalances on its
        ``rebalance_at``-th step), e.g. a value inherited from a longer preset."""
        if self.balance not in ("once", "every") or self.rebalance_at <= steps:
            return []
        return [f"loss.rebalance_at={self.rebalance_at} is after the last step (train.steps={steps}), so λ would "
                f"never be rebalanced; fix: set loss.rebalance_at ≤ {steps} (with loss.window ≤ it), or "
                f"loss.balance=fixed to keep λ = 1/#elements"]


@dataclass
class AdamConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class CRNSettings:
    model: CRNModelConfig = field(default_factory=CRNModelConfig)
    loss: PerceptualConfig = field(default_factory=PerceptualConfig)
    optim: AdamConfig = field(default_factory=AdamConfig)


def build_balancer(config: PerceptualConfig, term_names: tuple[str, ...]) -> LambdaBalancer:
    if config.balance.startswith("official-"):
        return LambdaBalancer.official(config.balance[len("official-"):], term_names)
    if config.balance not in LambdaBalancer.MODES:
        choices = [*LambdaBalancer.MODES, *(f"official-{name}" for name in OFFICIAL_LAMBDAS)]
        raise ValueError(f"loss.balance {config.balance!r} is not one of {', '.join(choices)}")
    layers = [name for name in term_names if name not in ("pixel", "colour")]
    return LambdaBalancer(term_names, mode=config.balance, rebalance_at=config.rebalance_at,
                          window=config.window, final_layer_boost=config.final_layer_boost,
                          boosted_term=layers[-1] if layers else None)


def build_vgg(config: PerceptualConfig, layers: tuple[str, ...]):
    """The frozen feature extractor; says which weights it uses when the standard file is missing."""
    from ..perception import load_vgg

    arch = "vgg19" if config.backbone in ("auto", "vgg19") else config.backbone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vgg = load_vgg(arch, layers=layers, pooling=config.pooling, input_convention=config.input_convention,
                       weights=config.weights)
    for warning in caught:
        print(f"note: {warning.message}", file=sys.stderr)
    return vgg


class CRN(Method):
    name = "crn"
    export_graph = "crn"
    Settings = CRNSettings
    checkpoint_modules = ("generator", "balancer")
    inference_modules = ("generator",)
    transfer_modules = ("generator",)  # --init-from: λ is measured afresh in every run (official 512p re-measured)

    @classmethod
    def check_config(cls, run) -> list[str]:
        return run.settings.loss.schedule_problems(run.train.steps)

    def __init__(self, settings: CRNSettings, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        super().__init__(settings, spec, image_size, training)
        model = settings.model
        self.generator = CRNGenerator(
            in_channels=spec.input_channels(model.void_channel), widths=model.widths,
            base_grid=tuple(model.base_grid), num_outputs=model.num_outputs,
        )
        if tuple(self.generator.output_size) != tuple(image_size):
            raise ValueError(
                f"CRN with base_grid {tuple(model.base_grid)} and {len(model.widths)} modules outputs "
                f"{self.generator.output_size}, but data.size is {tuple(image_size)}; fix: set data.size to "
                f"{list(self.generator.output_size)} or change model.base_grid / model.widths"
            )
        if model.output_init not in ("xavier", "centred"):
            raise ValueError(f"model.output_init must be 'xavier' (official) or 'centred', got {model.output_init!r}")
        # Centred on the first training step's batch; not after a resume (step > 0) nor over a loaded output layer.
        self._centre_pending = training and model.output_init == "centred"
        if not training:
            return
        loss = settings.loss
        vgg = build_vgg(loss, tuple(loss.layers))
        cache = ReferenceCache(max_bytes=loss.cache_max_mb * 2**20) if loss.cache_reference \
            else None
        term_names = ("pixel", *loss.layers) + (("colour",) if loss.colour_term else ())
        if loss.colour_term and loss.balance.startswith("official-"):
            raise ValueError(f"loss.balance={loss.balance} has the official 6 constants, but loss.colour_term adds "
                             f"a 7th term; fix: loss.balance=once (measures λ for every term) or "
                             f"loss.colour_term=false")
        self.perceptual = PerceptualLoss(vgg, layers=loss.layers, balancer=build_balancer(loss, term_names),
                                         cache=cache, colour_term=loss.colour_term)
        self.balancer = self.perceptual.balancer
        self.diversity = DiversityLoss(self.perceptual, mean_mix=loss.diversity_mean_mix) \
            if model.num_outputs > 1 else None
        optim = settings.optim
        self.optimizers = {"generator": torch.optim.Adam(
            self.generator.parameters(), lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
            weight_decay=optim.weight_decay)}

    def encode(self, label: torch.Tensor) -> torch.Tensor:
        """Full-resolution one-hot (+ void); each module area-downsamples it (soft class fractions)."""
        return self.spec.one_hot(label, mode="area", void_channel=self.settings.model.void_channel)

    def after_init_from(self, loaded: set[str]) -> None:
        if any(name.startswith("generator.to_rgb") for name in loaded):
            self._centre_pending = False  # a trained output layer keeps its colours

    @torch.no_grad()
    def centre_outputs(self, layout: torch.Tensor) -> torch.Tensor:
        """Shift the output bias so each output's mean over ``layout``'s batch is 0 (mid-grey); returns the shift."""
        images = self.generator(layout)  # (B, k, 3, H, W)
        shift = images.mean((0, 3, 4)).flatten()  # (k·3,), in to_rgb's channel order (u, c)
        self.generator.to_rgb.bias.sub_(shift)
        return shift

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        layout = self.encode(batch["label"])
        if self._centre_pending:
            if step == 0:
                self.centre_outputs(layout)
            self._centre_pending = False
        images = self.generator(layout)  # (B, k, 3, H, W)
        keys = batch.get("name") if self.perceptual.cache is not None else None
        if self.diversity is not None:
            loss, logs = self.diversity(images, batch["image"], layout, keys=keys)
        else:
            loss, logs = self.perceptual(images[:, 0], batch["image"], keys=keys, label=layout)
        self.optimizer_step("generator", loss)
        result = {"loss": float(loss.detach())}
        result.update({key.replace("weighted/", "w_"): float(value) for key, value in logs.items()
                       if key.startswith("weighted/")})
        return result

    def inference_controls(self) -> InferenceControls:
        """k different images at once (the diversity variant), the same ones for every seed."""
        return InferenceControls(max_k=self.settings.model.num_outputs)

    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               **style) -> torch.Tensor:
        if style:
            raise TypeError(f"CRN has no style inputs; got {', '.join(style)}")
        available = self.settings.model.num_outputs
        if k > available:
            raise ValueError(f"this CRN emits {available} image(s) per layout (model.num_outputs={available}); "
                             f"fix: ask for k ≤ {available} or train a diversity model (model.num_outputs=9)")
        return self.generator(self.encode(label))[:, :k].clamp(-1.0, 1.0)

    def extra_state(self) -> dict:
        return {"lambda": self.balancer.describe()} if hasattr(self, "balancer") else {}
