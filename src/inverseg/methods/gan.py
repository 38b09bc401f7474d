"""What the adversarial recipes share: config sections, label encoding, optimisers (TTUR), EMA, D toggling.

pix2pixHD and SPADE (and the SPADE forks / OASIS later) build on :class:`GANMethod`; each still writes its own
``train_step`` so that the order of generator and discriminator updates stays visible in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..labels import LabelSpec
from ..labels.spec import instance_edges
from ..losses.adversarial import AdversarialLoss, feature_matching_loss
from ..losses.vgg import build_vgg_loss
from ..nn.discriminator import MultiScaleDiscriminator
from ..nn.ema import make_ema, recalibrate_batch_norm, renormalize_spectral_norm, update_ema
from ..nn.layers import initialize
from .base import Method


# --------------------------------------------------------------------------------------------- config sections
@dataclass
class DiscriminatorConfig:
    """Multi-scale PatchGAN (``nn/discriminator.py``).  Defaults: the network both pix2pixHD and SPADE build."""

    ndf: int = 64
    num_scales: int = 2      # official num_D (pix2pixHD 1024p scripts: 3)
    num_layers: int = 4      # convs before the output conv = SPADE n_layers_D (4) = pix2pixHD n_layers_D (3) + 1
    norm: str = "instance"   # instance | batch | none
    spectral: bool = False   # SPADE norm_D 'spectralinstance': true
    two_stream: bool = False  # SESAME's semantic + image streams (the D of SAFM's official code)


@dataclass
class TTURConfig:
    """Adam for G and for D with their own learning rates (Heusel et al. 2017's two time-scale update rule).

    SPADE's TTUR default: lr 2e-4 → G 1e-4, D 4e-4, betas (0, 0.9); pix2pixHD: both 2e-4, betas (0.5, 0.999).
    G's optimiser also holds the image/feature encoder (as officially).  The Trainer's schedule scales both.
    ``adam`` picks torch's Adam kernel, not the algorithm (see :data:`ADAM_KERNELS`).
    """

    lr_generator: float = 1e-4
    lr_discriminator: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    eps: float = 1e-8
    adam: str = "fused"  # fused | foreach | loop (the official codes' kernel): see ADAM_KERNELS

    @classmethod
    def from_spade(cls, lr: float = 2e-4, ttur: bool = True) -> "TTURConfig":
        """SPADE's ``--lr`` / ``--no_TTUR`` → explicit values (``create_optimizers``)."""
        if ttur:
            return cls(lr / 2, lr * 2, (0.0, 0.9))
        return cls(lr, lr, (0.5, 0.999))


@dataclass
class EMAConfig:
    """Exponential moving average of G (not in pix2pixHD/SPADE; OASIS's default, decay 0.9999)."""

    decay: float | None = None        # None: off
    buffers: str = "copy"             # copy | average (OASIS averages the whole state dict)
    recalibrate_batches: int = 0      # re-estimate the EMA generator's batch-norm statistics before saving
    sample_with_ema: bool = True      # gallery / pipeline use the averaged weights when present
    # power-iterate the EMA's spectral-norm vectors on the averaged weights before saving or sampling: averaged or
    # copied u, v do not belong to the averaged W, so an eval-mode forward would divide by a too-small σ and
    # amplify the layer (issue 11 §2; nn/ema.py); false = inverseg before issue 11
    renormalize_spectral: bool = True


# --------------------------------------------------------------------------------------------- helpers
def encode_layout(spec: LabelSpec, label: torch.Tensor, void_channel: bool, edges: bool,
                  instance: torch.Tensor | None = None, require_instance: bool = False) -> torch.Tensor:
    """One-hot label [+ void/don't-care channel] [+ instance-boundary edge channel] at full resolution.

    Edges come from the instance map (pix2pixHD §3.3, Fig. 4).  Without one, training fails with a fix
    (``require_instance``); sampling falls back to the label map's class boundaries, which equal the instance
    edges except between touching objects of one class.
    """
    encoded = spec.one_hot(label, mode="nearest", void_channel=void_channel)
    if not edges:
        return encoded
    if instance is None:
        if require_instance:
            raise ValueError("model.instance_edges is true but the batch has no instance maps (e.g. CamVid has "
                             "none); fix: set model.instance_edges=false, or use a dataset with instance maps")
        instance = label
    instance = torch.as_tensor(instance)
    if instance.dim() == 2:
        instance = instance.unsqueeze(0)
    if instance.shape[-2:] != label.shape[-2:]:
        instance = nn.functional.interpolate(instance[:, None].float(), size=label.shape[-2:],
                                             mode="nearest")[:, 0].long()
    return torch.cat([encoded, instance_edges(instance.to(label.device)).to(encoded)], dim=1)


def set_requires_grad(module: nn.Module | None, flag: bool) -> None:
    """Freeze D while G's loss flows through it (saves computing D's weight gradients; results are unchanged)."""
    if module is not None:
        module.requires_grad_(flag)


def build_discriminator(config: DiscriminatorConfig, in_channels: int, init: str, gain: float,
                        zero_bias: bool) -> MultiScaleDiscriminator:
    discriminator = MultiScaleDiscriminator(in_channels, config.num_scales, config.ndf, config.num_layers,
                                            config.norm, config.spectral, config.two_stream)
    return initialize(discriminator, init, gain, zero_bias)


# The same Adam update computed by torch's three kernels.  loop (torch's CPU default, what the official codes run):
# one tensor at a time, with a temporary ``denom`` per parameter; foreach: the same arithmetic over lists of
# tensors, bit-identical to loop; fused: one pass per parameter with no temporaries — the same formula, rounded
# differently (about one ulp of the weights per step), 3.7× faster than loop on this CPU for a 1024×1024×3×3
# weight (and the largest single cost after the convolutions in a SPADE/OASIS step: docs/performance.md).
ADAM_KERNELS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def adam(params, lr: float, config: TTURConfig) -> torch.optim.Adam:
    """Adam with ``config``'s betas, eps and kernel (``optim.adam``)."""
    if config.adam not in ADAM_KERNELS:
        raise ValueError(f"optim.adam must be one of {', '.join(ADAM_KERNELS)}, got {config.adam!r}")
    return torch.optim.Adam(params, lr=lr, betas=tuple(config.betas), eps=config.eps, **ADAM_KERNELS[config.adam])


def make_optimizers(generator_params, discriminator_params, config: TTURConfig) -> dict[str, torch.optim.Optimizer]:
    return {"generator": adam(generator_params, config.lr_generator, config),
            "discriminator": adam(discriminator_params, config.lr_discriminator, config)}


# --------------------------------------------------------------------------------------------- base recipe
class GANMethod(Method):
    """Method with a generator, a discriminator, optional EMA of the generator and a VGG loss.

    Subclasses create ``self.generator`` (and ``self.encoder`` or None), then, when training, call
    :meth:`setup_training_parts`.  At inference (``training=False``) no EMA copy exists: when the checkpoint holds
    ``generator_ema`` weights, :meth:`load_checkpoint_state` loads them *into* ``self.generator``.
    """

    def setup_training_parts(self, discriminator_channels: int, zero_bias: bool) -> None:
        """pix2pixHD's and SPADE's training-only parts: the PatchGAN D, the losses, EMA and the TTUR optimisers.

        G's optimiser also holds the image/feature encoder (as officially).
        """
        settings, loss = self.settings, self.settings.loss
        self.discriminator = self.make_discriminator(discriminator_channels, zero_bias)
        self.adversarial = AdversarialLoss(loss.gan_mode, loss.scale_reduction)
        self.vgg_loss = None
        if loss.lambda_vgg > 0:
            self.vgg_loss = build_vgg_loss(loss.vgg_backbone, loss.vgg_weights, loss.vgg_input_convention)
        self.generator_ema = make_ema(self.generator) if settings.ema.decay else None
        generator_params = list(self.generator.parameters())
        if self.encoder is not None:
            generator_params += list(self.encoder.parameters())
        self.optimizers = make_optimizers(generator_params, self.discriminator.parameters(), settings.optim)

    def make_discriminator(self, in_channels: int, zero_bias: bool) -> nn.Module:
        """The shared multi-scale PatchGAN on ``concat(layout, image)``; CC-FPSE builds its own D here."""
        model = self.settings.model
        return build_discriminator(self.settings.discriminator, in_channels, model.init, model.init_gain, zero_bias)

    # ------------------------------------------------------------------ training pieces
    def generator_losses(self, pred_fake, pred_real, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """pix2pixHD's and SPADE's G objective: GAN + λ_FM · feature matching on D's features + λ_VGG · VGG."""
        loss = self.settings.loss
        g_losses = {"g_gan": self.adversarial.generator(pred_fake)}
        if loss.lambda_feat > 0:
            g_losses["g_feat"] = feature_matching_loss(pred_fake, pred_real, loss.lambda_feat, loss.feat_weighting)
        if self.vgg_loss is not None:
            g_losses["g_vgg"] = loss.lambda_vgg * self.vgg_loss(fake, real)
        return g_losses

    def discriminator_fake(self, fake: torch.Tensor, regenerate: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The fake D trains on (``loss.d_fake``): this step's, detached (pix2pixHD), or ``regenerate()`` run
        under ``no_grad`` by the just-updated G (SPADE, OASIS: the official trainers call G again)."""
        mode = self.settings.loss.d_fake
        if mode == "reuse":
            return fake.detach()
        if mode == "regenerate":
            with torch.no_grad():
                return regenerate()
        raise ValueError(f"loss.d_fake must be 'regenerate' or 'reuse', got {mode!r}")

    # ------------------------------------------------------------------ EMA
    def sampling_generator(self) -> nn.Module:
        ema = getattr(self, "generator_ema", None)
        return ema if ema is not None and self.settings.ema.sample_with_ema else self.generator

    def update_ema(self) -> None:
        if getattr(self, "generator_ema", None) is not None:
            update_ema(self.generator_ema, self.generator, self.settings.ema.decay, self.settings.ema.buffers)

    def recalibration_forward(self, generator: nn.Module, batch: dict) -> None:
        """One forward of ``generator`` on a training batch (used to re-estimate batch-norm statistics)."""
        raise NotImplementedError

    def before_checkpoint(self, batches) -> None:
        """Make the EMA generator usable: spectral-norm vectors re-normalised on the averaged weights
        (``ema.renormalize_spectral``), then batch-norm statistics re-estimated (``ema.recalibrate_batches`` > 0).
        Both change buffers only: under torchrun rank 0 does it and broadcasts them."""
        ema = getattr(self, "generator_ema", None)
        if ema is None:
            return

        def refresh() -> None:
            if self.settings.ema.renormalize_spectral:
                renormalize_spectral_norm(ema)
            if self.settings.ema.recalibrate_batches > 0:
                recalibrate_batch_norm(ema, self.recalibration_forward, batches(self.settings.ema.recalibrate_batches))

        self.on_main_rank(ema, refresh)

    def before_sampling(self, batches) -> None:
        """Galleries sample the EMA generator too, so its statistics are refreshed the same way."""
        GANMethod.before_checkpoint(self, batches)

    def after_init_from(self, loaded: set[str]) -> None:
        """--init-from into a run with EMA from a source without one: the average starts at the loaded G, not at
        G's random initialisation (the EMA copy was made before the weights arrived)."""
        ema = getattr(self, "generator_ema", None)
        if ema is not None and not any(name.startswith("generator_ema.") for name in loaded):
            ema.load_state_dict(self.generator.state_dict())

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], modules: tuple[str, ...] | None = None) -> None:
        modules = tuple(modules or self.checkpoint_modules)
        ema_keys = {k[len("generator_ema."):]: v for k, v in state.items() if k.startswith("generator_ema.")}
        use_ema = "generator_ema" in modules and bool(ema_keys) and self.settings.ema.sample_with_ema
        if self.is_training_setup or not use_ema:
            super().load_checkpoint_state(state, modules)
            return
        # inference with EMA weights present: the averaged weights *are* the generator
        super().load_checkpoint_state(state, tuple(m for m in modules if m not in ("generator", "generator_ema")))
        self.generator.load_state_dict(ema_keys, strict=True)

    # ------------------------------------------------------------------ logging
    @staticmethod
    def floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
        return {key: float(value.detach()) for key, value in values.items()}
