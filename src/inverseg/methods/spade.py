"""SPADE / GauGAN (Park et al., CVPR 2019): the recipe.

Networks: the SPADE generator and, with ``vae.enabled``, the VAE image encoder (``models/spade.py``); the shared
multi-scale PatchGAN with spectral + instance norm (``nn/discriminator.py``).  Objective (§4 "Implementation
details", official ``pix2pix_model.py``): hinge GAN loss + λ_FM=10 · feature matching + λ_VGG=10 · VGG loss
[+ λ_KLD=0.05 · KL with the encoder].  One ``train_step`` = one G update, then one D update on a *fresh* fake
generated under ``no_grad`` by the just-updated G (the official trainer calls G again; ``loss.d_fake``).  D sees
fake and real concatenated in one batch, as officially.  Optimiser: TTUR, G 1e-4 / D 4e-4, Adam β=(0, 0.9)
(the paper's β2=0.999 is wrong per the authors, SPADE issue #50).

Input: one-hot of the classes [+ the "don't care" channel: the spec's void pixels, SPADE's ``label_nc`` index]
[+ the instance-boundary edge map when the data has instance maps].  SPADE feeds don't-care as an input channel
rather than ignoring it (implementations.md §14.6).

Multi-modal synthesis (§3.3, Fig. 9/15): with the encoder, the generator starts from z.  ``pipe(label, seed=s)``
draws z ~ N(0, I); ``pipe(label, style_image=photo)`` encodes the photo to (μ, σ) and uses z = μ + σ·ε (official
test-time behaviour; ``vae.style_z: mean`` uses μ, so the same photo always gives the same image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..labels import LabelSpec
from ..losses.adversarial import kl_divergence
from ..models.spade import SPADEGenerator, StyleEncoder, reparameterize
from ..nn.layers import initialize
from .base import InferenceControls
from .gan import DiscriminatorConfig, EMAConfig, GANMethod, TTURConfig, encode_layout, set_requires_grad


@dataclass
class SPADEModelConfig:
    """Generator and input encoding (official option names in comments)."""

    ngf: int = 64                     # --ngf
    num_upsampling: str = "normal"    # --num_upsampling_layers normal | more (Cityscapes) | most
    norm: str = "syncbatch"           # param-free norm in SPADE (norm_G spectralspade*syncbatch*3x3) | batch | instance
    spectral: bool = True             # norm_G 'spectral…': spectral norm on the ResBlk convs
    spade_kernel: int = 3             # the '3x3' of spadesyncbatch3x3
    spade_hidden: int = 128           # "nhidden = 128 — Yes, hardcoded"
    dontcare_channel: bool = True     # contain_dontcare_label (ADE20K, COCO: true; Cityscapes labelIds: false)
    instance_edges: bool = True       # not --no_instance (Cityscapes, COCO: true; ADE20K: false)
    init: str = "xavier"              # --init_type xavier, --init_variance 0.02, zero biases
    init_gain: float = 0.02


@dataclass
class VAEConfig:
    """The image encoder for multi-modal / style-guided synthesis (--use_vae; off in the released models)."""

    enabled: bool = False
    z_dim: int = 256                          # --z_dim (the encoder's 256 outputs are hard-coded officially)
    nf: int = 64                              # official: = ngf
    input_size: tuple[int, int] = (256, 256)  # the encoder resizes its input to this (official: 256×256)
    num_layers: int = 6                       # stride-2 convs (official: 6, i.e. 256 → 4×4)
    norm: str = "instance"                    # norm_E spectralinstance
    spectral: bool = True
    style_z: str = "sample"                   # style images: sample z = μ + σ·ε (official) | mean (z = μ)


@dataclass
class SPADELossConfig:
    gan_mode: str = "hinge"              # --gan_mode hinge | ls | bce (original)
    scale_reduction: str = "mean"        # GANLoss averages over the D scales
    d_loss_weight: float = 1.0           # d_loss = D_Fake + D_real
    lambda_feat: float = 10.0            # --lambda_feat (FM weight λ/num_D per term)
    feat_weighting: str = "spade"        # spade: λ/num_D | pix2pixhd: λ·4/(n_layers_D+1)/num_D
    lambda_vgg: float = 10.0             # --lambda_vgg
    vgg_backbone: str = "auto"           # auto | vgg19 | vgg16
    vgg_weights: str | None = "auto"     # auto | path | null (random weights: tests only)
    vgg_input_convention: str = "legacy"  # legacy ([-1,1] as officially) | caffe | imagenet | auto
    lambda_kld: float = 0.05             # --lambda_kld
    kld_reduction: str = "sum"           # KLDLoss sums over batch and z (mean: per sample)
    d_fake: str = "regenerate"           # regenerate: D step re-runs the updated G under no_grad | reuse (pix2pixHD)


@dataclass
class SPADESettings:
    model: SPADEModelConfig = field(default_factory=SPADEModelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig(spectral=True))  # norm_D spectralinstance, n_layers_D 4
    loss: SPADELossConfig = field(default_factory=SPADELossConfig)
    optim: TTURConfig = field(default_factory=TTURConfig)  # TTUR: G 1e-4, D 4e-4, betas (0, 0.9)
    ema: EMAConfig = field(default_factory=EMAConfig)


class SPADE(GANMethod):
    name = "spade"
    export_graph = "spade"  # also CC-FPSE, LGGAN and SAFM, which sample as SPADE does
    Settings = SPADESettings
    checkpoint_modules = ("generator", "discriminator", "encoder", "generator_ema")
    inference_modules = ("generator", "generator_ema", "encoder")
    # how a user gets a style photo and k different images from a recipe of this family (its refusals name it)
    vae_fix: ClassVar[str] = "train with vae.enabled=true"

    def __init__(self, settings: SPADESettings, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        super().__init__(settings, spec, image_size, training)
        model, vae = settings.model, settings.vae
        self.label_channels = spec.input_channels(model.dontcare_channel) + int(model.instance_edges)
        self.generator = initialize(self.build_generator(), model.init, model.init_gain)
        self.encoder = None
        if vae.enabled:
            if vae.style_z not in ("sample", "mean"):
                raise ValueError(f"vae.style_z must be 'sample' or 'mean', got {vae.style_z!r}")
            encoder = StyleEncoder(vae.nf, vae.z_dim, tuple(vae.input_size), vae.num_layers, vae.norm, vae.spectral)
            self.encoder = initialize(encoder, model.init, model.init_gain)
        if not training:
            return
        self.setup_training_parts(self.label_channels + 3, zero_bias=True)

    # ------------------------------------------------------------------ pieces
    def build_generator(self) -> SPADEGenerator:
        model, vae = self.settings.model, self.settings.vae
        return SPADEGenerator(self.label_channels, self.image_size, model.ngf, model.num_upsampling, model.norm,
                              model.spectral, model.spade_kernel, model.spade_hidden,
                              z_dim=vae.z_dim if vae.enabled else None)

    def layout(self, label: torch.Tensor, instance: torch.Tensor | None, training: bool = False) -> torch.Tensor:
        model = self.settings.model
        return encode_layout(self.spec, label, model.dontcare_channel, model.instance_edges, instance,
                             require_instance=training)

    def layout_inputs(self) -> dict[str, dict]:
        """Channels ``layout`` appends to the label encoding that a graph cannot compute, by name, with what the
        ONNX runtime needs to compute them (``channels``, ``about`` and method facts).  ``inverseg export`` makes
        each one a graph input; SPADE has none (SAFM: its SPD)."""
        return {}

    def generate(self, generator, layout: torch.Tensor, real: torch.Tensor, with_kld: bool = False,
                 noise: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G(layout [, z = reparameterised E(real)]) and, if asked, λ_KLD · KL (official ``generate_fake``)."""
        if self.encoder is None:
            return generator(layout), None
        mu, logvar = self.encoder(real)
        kld = None
        if with_kld:
            loss = self.settings.loss
            kld = loss.lambda_kld * kl_divergence(mu, logvar, loss.kld_reduction)
        return generator(layout, reparameterize(mu, logvar, noise)), kld

    def discriminate(self, layout: torch.Tensor, fake: torch.Tensor, real: torch.Tensor):
        """D on fake and real in one batch (official ``discriminate``) → (fake outputs, real outputs)."""
        outputs = self.discriminator(torch.cat([torch.cat([layout, fake], 1), torch.cat([layout, real], 1)], 0))
        half = fake.shape[0]
        return ([[t[:half] for t in scale] for scale in outputs], [[t[half:] for t in scale] for scale in outputs])

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        loss = self.settings.loss
        real = batch["image"]
        layout = self.layout(batch["label"], batch.get("instance"), training=True)

        # generator update (D frozen while G's loss flows through it)
        fake, kld = self.generate(self.generator, layout, real, with_kld=True)
        set_requires_grad(self.discriminator, False)
        pred_fake, pred_real = self.discriminate(layout, fake, real)
        g_losses = self.generator_losses(pred_fake, pred_real, fake, real)
        if kld is not None:
            g_losses["g_kld"] = kld
        g_losses.update(self.extra_generator_losses(batch, fake, step))
        self.optimizer_step("generator", sum(g_losses.values()))
        self.update_ema()

        # discriminator update
        set_requires_grad(self.discriminator, True)
        fake_for_d = self.discriminator_fake(fake, lambda: self.generate(self.generator, layout, real)[0])
        pred_fake, pred_real = self.discriminate(layout, fake_for_d, real)
        d_real, d_fake = self.adversarial.discriminator(pred_real, pred_fake)
        self.optimizer_step("discriminator", loss.d_loss_weight * (d_real + d_fake))
        return self.floats({**g_losses, "d_real": d_real, "d_fake": d_fake})

    def extra_generator_losses(self, batch: dict, fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Terms a SPADE fork adds to G's objective (SAFM: the semantic-alignment loss); none in SPADE."""
        return {}

    def recalibration_forward(self, generator, batch: dict) -> None:
        """(its own noise generator: re-estimating statistics must not move the training RNG)"""
        self.generate(generator, self.layout(batch["label"], batch.get("instance")), batch["image"],
                      noise=torch.Generator().manual_seed(0))

    # ------------------------------------------------------------------ inference
    def inference_controls(self) -> InferenceControls:
        """With the VAE image encoder (SPADE, SAFM and CC-FPSE alike: they share this ``sample``): a fresh z per
        image and a style photo; without it one deterministic image."""
        if self.encoder is None:
            return InferenceControls()
        return InferenceControls(max_k=None, style_image=True)

    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               style_image: torch.Tensor | None = None, instance: torch.Tensor | None = None,
               **unknown) -> torch.Tensor:
        """(B,H,W) ids → (B,k,3,H,W).  With the VAE: z ~ N(0,I) from ``generator``, or from ``style_image``."""
        if unknown:
            raise TypeError(f"{self.name.upper()} takes style_image=IMAGE or instance=MAP; got {', '.join(unknown)}")
        net = self.sampling_generator()
        layout = self.layout(label, instance)
        if self.encoder is None:
            if style_image is not None:
                raise TypeError(f"this {self.name.upper()} was trained without the VAE image encoder "
                                f"(vae.enabled=false), so it cannot take a style image; fix: {self.vae_fix}")
            if k > 1:
                raise ValueError(f"this {self.name.upper()} is deterministic (vae.enabled=false): ask for k=1, or "
                                 f"{self.vae_fix} for k different images")
            return net(layout).clamp(-1.0, 1.0)[:, None]
        batch = label.shape[0]
        if style_image is not None:
            image = style_image.to(layout)
            mu, logvar = self.encoder(image.expand(batch, -1, -1, -1) if image.shape[0] == 1 else image)
        outputs = []
        for _ in range(k):
            if style_image is None:
                z = torch.randn(batch, self.settings.vae.z_dim, generator=generator).to(layout)
            elif self.settings.vae.style_z == "mean":
                z = mu
            else:
                z = reparameterize(mu, logvar, generator)
            outputs.append(net(layout, z))
        return torch.stack(outputs, dim=1).clamp(-1.0, 1.0)
