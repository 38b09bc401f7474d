"""LGGAN (Tang, Xu, Yan, Torr, Sebe, CVPR 2020): the recipe — SPADE's, with three generator outputs to train.

Official code ``Ha0Tang/LGGAN@e67dfb83:semantic_image_synthesis`` (a fork of NVlabs/SPADE; methods-later.md §2).
The generator (``models/lggan.py``) returns the fused image and, for the losses, its global and local parts, the
per-class images and the class scores.  What changes against SPADE (official ``models/pix2pix_model.py``):

* **Three images are judged.**  The fused output, the global image and the local image each get the hinge GAN term,
  feature matching (λ_FM 10 / num_D) and the VGG term (λ_VGG 10); their sum is G's objective.  The D step scores all
  three fakes (regenerated under ``no_grad``) against the real image: ``D_Fake`` is the sum of three hinge terms,
  and ``D_real`` too — the real image is scored three times with the same weights, i.e. 3 × one real term.
* **Per-class L1** (``L1_Local``, on by default): Σ_k mean|image_k − real ⊙ M_k| · λ_L1 (λ_L1 = 1 on Cityscapes,
  10 on ADE20K) — every class branch learns to paint its own region.
* **Classification** (``class``, λ 1): cross-entropy of the classifier on the masked mean feature of each branch
  against the branch's class index, averaged over the branches whose class is present (``valid_index``).
* **Image L1** (``L1``, λ_L1 on each of the three images): in the code, but **off** in both shipped training
  scripts (``--no_l1_loss``), so ``loss.image_l1: false`` in the presets.

Everything else is SPADE's: TTUR (G 1e-4, D 4e-4, betas (0, 0.9)), the two-scale spectral/instance-norm PatchGAN on
[layout, image], Xavier init (gain 0.02), one G step then one D step.  There is no VAE: the official code builds
one but its generator cannot run with it (``x_encode`` is only computed without it), so ``vae.enabled`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..labels import LabelSpec
from ..losses.adversarial import feature_matching_loss
from ..models.lggan import LGGANGenerator, LGGANOutputs
from .gan import DiscriminatorConfig, EMAConfig, TTURConfig, set_requires_grad
from .spade import SPADE, SPADELossConfig, SPADEModelConfig, VAEConfig

# the official Cityscapes generator returns the class-26 mask twice and never class 27's
OFFICIAL_MASK_SLIP = (27, 26)


@dataclass
class LGGANModelConfig(SPADEModelConfig):
    local_blocks: int = 9                # resnet_blocks1 … resnet_blocks9 of the local generator
    local_classes: int | None = None     # null: a branch per class (Cityscapes); ADE20K: 51 + one "other" branch
    unused_start_conv: bool = False      # build the official ``fc`` its forward never uses (parameter count only)


@dataclass
class LGGANLossConfig(SPADELossConfig):
    lambda_l1: float = 1.0               # --lambda_l1 (weights both L1 terms)
    image_l1: bool = False               # G_losses['L1'] on the three images: off in the shipped scripts (--no_l1_loss)
    local_l1: bool = True                # G_losses['L1_Local'] (not --no_l1_local_loss)
    lambda_class: float = 1.0            # --lambda_class (0: no classification loss, as --no_class_loss)
    official_mask_slip: bool = False     # true: class 27's L1 against class 26's mask, as the official Cityscapes code


@dataclass
class LGGANSettings:
    model: LGGANModelConfig = field(default_factory=LGGANModelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)  # must stay disabled (see the module docstring)
    discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig(spectral=True))  # SPADE's D: norm_D spectralinstance
    loss: LGGANLossConfig = field(default_factory=LGGANLossConfig)
    optim: TTURConfig = field(default_factory=TTURConfig)  # TTUR: G 1e-4, D 4e-4, betas (0, 0.9)
    ema: EMAConfig = field(default_factory=EMAConfig)


class LGGAN(SPADE):
    name = "lggan"
    Settings = LGGANSettings
    checkpoint_modules = ("generator", "discriminator", "generator_ema")
    inference_modules = ("generator", "generator_ema")
    vae_fix = "use a SPADE, SAFM or CC-FPSE run trained with vae.enabled=true (LGGAN has no VAE mode)"

    def __init__(self, settings: LGGANSettings, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        if settings.vae.enabled:
            raise ValueError("LGGAN has no VAE mode (the official generator computes its encoder only without one); "
                             "fix: set vae.enabled=false")
        super().__init__(settings, spec, image_size, training)

    def build_generator(self) -> LGGANGenerator:
        model = self.settings.model
        return LGGANGenerator(self.label_channels, self.image_size, self.spec.num_classes, model.dontcare_channel,
                              model.local_classes, model.ngf, model.num_upsampling, model.norm, model.spectral,
                              model.spade_kernel, model.spade_hidden, model.local_blocks, model.unused_start_conv)

    # ------------------------------------------------------------------ losses
    def discriminate_all(self, layout: torch.Tensor, images: list[torch.Tensor], real: torch.Tensor):
        """D on [fused, global, local, real] in one batch → (per-fake predictions, real predictions).

        The official code makes three D calls (each fake with the real image); D's instance norm treats samples
        independently, so one call gives the same outputs (spectral norm then runs one power iteration, not three).
        """
        batch = real.shape[0]
        inputs = torch.cat([torch.cat([layout, image], 1) for image in [*images, real]], 0)
        outputs = self.discriminator(inputs)

        def part(index: int):
            return [[t[index * batch:(index + 1) * batch] for t in scale] for scale in outputs]

        return [part(i) for i in range(len(images))], part(len(images))

    def local_l1(self, outputs: LGGANOutputs, real: torch.Tensor) -> torch.Tensor:
        """Σ_k mean|image_k − real ⊙ M_k| (official ``L1_Local``; each term an ``L1Loss`` mean over B·3·H·W)."""
        masks = outputs.masks
        if self.settings.loss.official_mask_slip and masks.shape[1] > OFFICIAL_MASK_SLIP[0]:
            wrong, used = OFFICIAL_MASK_SLIP
            masks = masks.clone()
            masks[:, wrong] = outputs.masks[:, used]
        targets = real[:, None] * masks[:, :, None]
        return (outputs.class_images - targets).abs().mean(dim=(0, 2, 3, 4)).sum()

    def class_loss(self, outputs: LGGANOutputs) -> torch.Tensor:
        """Cross-entropy of every single-class branch vs its index, over (sample, class) pairs where the class is
        present (the official ADE20K code's batch-aware ``valid_index``; the Cityscapes code assumes 1 sample/GPU)."""
        logits = outputs.class_logits
        batch, classes, _ = logits.shape
        targets = torch.arange(classes, device=logits.device).expand(batch, classes)
        losses = F.cross_entropy(logits.reshape(-1, classes), targets.reshape(-1), reduction="none")
        valid = (outputs.masks[:, :classes].flatten(2).sum(-1) > 0).reshape(-1).to(losses)
        return (losses * valid).sum() / valid.sum().clamp(min=1.0)

    def lggan_generator_losses(self, layout: torch.Tensor, outputs: LGGANOutputs,
                               real: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = self.settings.loss
        images = [outputs.image, outputs.global_image, outputs.local_image]
        preds_fake, pred_real = self.discriminate_all(layout, images, real)
        g_losses = {"g_gan": sum(self.adversarial.generator(pred) for pred in preds_fake)}
        if loss.lambda_feat > 0:
            g_losses["g_feat"] = sum(feature_matching_loss(pred, pred_real, loss.lambda_feat, loss.feat_weighting)
                                     for pred in preds_fake)
        if self.vgg_loss is not None:  # one VGG pass over the three images: the mean over 3B samples, × 3
            stacked = torch.cat(images, 0)
            g_losses["g_vgg"] = 3 * loss.lambda_vgg * self.vgg_loss(stacked, real.repeat(3, 1, 1, 1))
        if loss.image_l1:
            g_losses["g_l1"] = loss.lambda_l1 * sum(F.l1_loss(image, real) for image in images)
        if loss.local_l1:
            g_losses["g_l1_local"] = loss.lambda_l1 * self.local_l1(outputs, real)
        if loss.lambda_class > 0:
            g_losses["g_class"] = loss.lambda_class * self.class_loss(outputs)
        return g_losses

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        loss = self.settings.loss
        real = batch["image"]
        layout = self.layout(batch["label"], batch.get("instance"), training=True)

        # generator update (D frozen while G's loss flows through it)
        outputs = self.generator(layout, details=True)
        set_requires_grad(self.discriminator, False)
        g_losses = self.lggan_generator_losses(layout, outputs, real)
        self.optimizer_step("generator", sum(g_losses.values()))
        self.update_ema()

        # discriminator update on the three fakes of the updated G (or of this step, loss.d_fake=reuse)
        set_requires_grad(self.discriminator, True)
        fresh = outputs if loss.d_fake == "reuse" else self.discriminator_fake(
            outputs.image, lambda: self.generator(layout, details=True))
        fakes = [fresh.image.detach(), fresh.global_image.detach(), fresh.local_image.detach()]
        preds_fake, pred_real = self.discriminate_all(layout, fakes, real)
        d_real = d_fake = 0.0
        for pred in preds_fake:  # official: three (fake, real) pairs, each real term counted
            real_term, fake_term = self.adversarial.discriminator(pred_real, pred)
            d_real, d_fake = d_real + real_term, d_fake + fake_term
        self.optimizer_step("discriminator", loss.d_loss_weight * (d_real + d_fake))
        return self.floats({**g_losses, "d_real": d_real, "d_fake": d_fake})

    def recalibration_forward(self, generator, batch: dict) -> None:
        generator(self.layout(batch["label"], batch.get("instance")))

