"""CC-FPSE (Liu et al., NeurIPS 2019): the recipe — SPADE's training loop with CC-FPSE's networks.

Official code ``xh-liu/CC-FPSE@5619e632`` (a fork of NVlabs/SPADE; methods-later.md §1).  The training loop,
the objective's form and the VAE are SPADE's (``methods/spade.py``, shared through ``CCFPSE(SPADE)``): one G
step, then one D step on a fake regenerated under ``no_grad``; D sees fake and real as one batch; TTUR (G 1e-4,
D 4e-4, Adam β (0, 0.9)); hinge loss; λ_VGG 10 (VGG19, [-1, 1] input); λ_KLD 0.05 with the image encoder.
What CC-FPSE changes:

* **Generator**: the conditional-convolution generator (``models/ccfpse.py``): a label feature pyramid and
  per-block predicted depthwise kernels and attention maps.
* **Discriminator**: the single FPSE discriminator on the image, with the layout entering through the
  semantic-embedding (projection) term of its three pyramid scores; the hinge terms are averaged over the three.
* **Feature matching** on the FPSE encoder's four features (1/4 … 1/32): L1, each weighted λ_feat / 4
  (official ``lambda_feat / num_D`` with ``num_D = len(feats) = 4``); λ_feat 10, but 20 in the shipped COCO
  script.
* **VAE on** by default: every shipped train/test script passes ``--use_vae`` (the official non-VAE path does not
  run: its first conv outputs 16·nf·sh·sw channels); ``vae.enabled=false`` builds SPADE's 16·nf conv instead.

Sampling as SPADE: ``pipe(label, seed=s)`` draws z ~ N(0, I); ``pipe(label, style_image=photo)`` encodes the
photo and samples z from its posterior, which is what the official test scripts do with the *ground-truth* photo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..labels import LabelSpec
from ..models.ccfpse import CC_NORMS, MODES, CondConvGenerator, FPSEDiscriminator
from ..nn.layers import initialize
from .gan import EMAConfig, TTURConfig
from .spade import SPADE, VAEConfig


@dataclass
class CCFPSEModelConfig:
    """Generator and input encoding (official option names in comments)."""

    ngf: int = 64                     # --ngf
    num_upsampling: str = "normal"    # normal | more (official: 'more' iff dataset_mode == 'cityscapes')
    pyramid_channels: int | None = None  # label pyramid width (official: nf; null = ngf)
    hidden: int = 128                 # kernel / attention heads and the shortcut SPADE (nhidden = 128, hard-coded)
    cc_kernel: int = 3                # DepthConv kw = 3
    norm: str = "syncbatch"           # norm_G spectralsync_batch (pyramid), BatchNorm(affine) in the CC blocks
    spectral: bool = True             # spectral norm on the pyramid convs and the shortcut 1×1 conv
    dontcare_channel: bool = True     # contain_dontcare_label (ADE20K, COCO: true; Cityscapes labelIds: false)
    instance_edges: bool = True       # not --no_instance (Cityscapes, COCO: true; ADE20K: false)
    init: str = "xavier"              # --init_type xavier, --init_variance 0.02
    init_gain: float = 0.02


@dataclass
class FPSEConfig:
    """The FPSE discriminator (--netD fpse)."""

    ndf: int = 64                     # --ndf
    norm: str = "instance"            # norm_D spectralinstance
    spectral: bool = True


@dataclass
class CCFPSELossConfig:
    gan_mode: str = "hinge"              # --gan_mode hinge | ls | bce (original)
    scale_reduction: str = "mean"        # GANLoss averages over the three pyramid scores
    d_loss_weight: float = 1.0           # d_loss = D_Fake + D_real
    lambda_feat: float = 10.0            # --lambda_feat (÷ 4 per encoder feature); COCO train.sh: 20
    lambda_vgg: float = 10.0             # --lambda_vgg
    vgg_backbone: str = "auto"           # auto | vgg19 | vgg16
    vgg_weights: str | None = "auto"     # auto | path | null (random weights: tests only)
    vgg_input_convention: str = "legacy"  # legacy ([-1,1] as officially) | caffe | imagenet | auto
    lambda_kld: float = 0.05             # --lambda_kld
    kld_reduction: str = "sum"           # KLDLoss sums over batch and z
    d_fake: str = "regenerate"           # regenerate: D step re-runs the updated G under no_grad | reuse


@dataclass
class CCFPSESettings:
    model: CCFPSEModelConfig = field(default_factory=CCFPSEModelConfig)
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(enabled=True))  # --use_vae in every script
    discriminator: FPSEConfig = field(default_factory=FPSEConfig)
    loss: CCFPSELossConfig = field(default_factory=CCFPSELossConfig)
    optim: TTURConfig = field(default_factory=TTURConfig)  # TTUR: G (+ E) 1e-4, D 4e-4, betas (0, 0.9)
    ema: EMAConfig = field(default_factory=EMAConfig)


class CCFPSE(SPADE):
    name = "ccfpse"
    Settings = CCFPSESettings
    checkpoint_modules = ("generator", "discriminator", "encoder", "generator_ema")
    inference_modules = ("generator", "generator_ema", "encoder")

    def __init__(self, settings: CCFPSESettings, spec: LabelSpec, image_size: tuple[int, int],
                 training: bool = True):
        model = settings.model
        if model.num_upsampling not in MODES:
            raise ValueError(f"model.num_upsampling must be one of {', '.join(MODES)} for CC-FPSE, "
                             f"got {model.num_upsampling!r}")
        if model.norm not in CC_NORMS:
            raise ValueError(f"model.norm must be one of {', '.join(CC_NORMS)}, got {model.norm!r}")
        super().__init__(settings, spec, image_size, training)

    # ------------------------------------------------------------------ pieces
    def build_generator(self) -> CondConvGenerator:
        model, vae = self.settings.model, self.settings.vae
        return CondConvGenerator(self.label_channels, self.image_size, model.ngf, model.num_upsampling,
                                 model.pyramid_channels, model.hidden, model.cc_kernel, model.norm, model.spectral,
                                 z_dim=vae.z_dim if vae.enabled else None)

    def make_discriminator(self, in_channels: int, zero_bias: bool) -> FPSEDiscriminator:
        """FPSE sees the image; the layout (``label_channels``) enters only through its embedding."""
        config, model = self.settings.discriminator, self.settings.model
        discriminator = FPSEDiscriminator(self.label_channels, config.ndf, config.norm, config.spectral)
        return initialize(discriminator, model.init, model.init_gain, zero_bias)

    def discriminate(self, layout: torch.Tensor, fake: torch.Tensor, real: torch.Tensor):
        """D on fake and real in one batch (official ``discriminate``) → (fake outputs, real outputs)."""
        outputs = self.discriminator(torch.cat([fake, real], 0), torch.cat([layout, layout], 0))
        return outputs.split(fake.shape[0])

    def generator_losses(self, pred_fake, pred_real, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hinge over the three scores + λ_feat/4 · Σ L1 over the four encoder features + λ_VGG · VGG."""
        loss = self.settings.loss
        g_losses = {"g_gan": self.adversarial.generator(pred_fake)}
        if loss.lambda_feat > 0:
            pairs = list(zip(pred_fake.features, pred_real.features))
            g_losses["g_feat"] = loss.lambda_feat / len(pairs) * sum(F.l1_loss(f, r.detach()) for f, r in pairs)
        if self.vgg_loss is not None:
            g_losses["g_vgg"] = loss.lambda_vgg * self.vgg_loss(fake, real)
        return g_losses
