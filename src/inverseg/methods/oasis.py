"""OASIS (Sushko, Schönfeld et al., ICLR 2021): the recipe.

Networks (``models/oasis.py``): the SPADE generator conditioned on [3D noise, one-hot label] at every layer, and
the U-Net discriminator that segments images into N real classes + "fake".  Objective (§3.1–3.2, official
``models.py``/``losses.py``; ``losses/oasis.py``): G minimises the class-balanced CE of D(G(t, z)) towards the real
classes; D minimises the balanced CE on real images + the CE towards "fake" on generated ones + λ_LM · LabelMix
(λ 10; 5 on Cityscapes).  No perceptual loss by default ("only adversarial supervision"; ``loss.add_vgg`` adds the
SPADE VGG loss × ``lambda_vgg`` 10, official ``--add_vgg_loss``).

One ``train_step`` = G update, then D update on a fake regenerated under ``no_grad`` by the updated G with fresh
noise (official: ``losses_D`` calls ``netG`` again), then the EMA update of G (decay 0.9999; 0.999 on Cityscapes).
Adam β = (0, 0.999), G 1e-4 (Cityscapes 4e-4), D 4e-4, no decay.

EMA (§3.4 / official ``utils.update_EMA``): the whole state dict is averaged (``ema.buffers: average``), and before
every checkpoint and every gallery sampling (a) the spectral-norm vectors of the averaged weights are
power-iterated to convergence (``ema.renormalize_spectral``; averaging leaves them non-unit, and an eval-mode
forward would then divide by a too-small σ — the official code re-normalises through its train-mode recalibration
passes), and (b) the EMA generator's batch-norm statistics are re-estimated over ``ema.recalibrate_batches``
training batches (official ≤ 50; momentum updates without reset, ``recalibrate_cumulative: false``), drawn by the
Trainer from a seeded shuffle of the training split.  Checkpoints hold the result, so evaluation and the Pipeline
use the re-normalised, recalibrated EMA weights.

Label encoding: one-hot of the classes [+ the don't-care channel = the spec's void pixels; OASIS's
``contain_dontcare_label`` index 0].  Loss targets: see ``losses/oasis.py`` (class c → c + 1, fake → 0, void →
weight 0).

Sampling (``pipe(label, seed=…, noise=…, resample_classes=…, resample_mask=…)``): the 3D noise is drawn from the
seeded generator (``model.noise_mode``), or given; ``resample_*`` re-draws it inside a region only, so the image
changes there and stays (nearly) the same elsewhere.  The noise of the last call is ``method.last_noise``
(B, k, z_dim, H, W); pass it back as ``noise=`` to keep an image and re-sample one region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..labels import LabelSpec
from ..losses.oasis import (
    class_balance_weights,
    class_frequencies,
    fake_class_loss,
    labelmix_images,
    labelmix_loss,
    labelmix_mask,
    real_class_loss,
)
from ..losses.vgg import build_vgg_loss
from ..models.oasis import NOISE_MODES, DISCRIMINATOR_WIDTHS, OASISDiscriminator, OASISGenerator, draw_noise, \
    resample_noise
from ..nn.ema import make_ema, recalibrate_batch_norm, renormalize_spectral_norm, update_ema
from ..nn.layers import initialize
from .base import InferenceControls
from .gan import EMAConfig, GANMethod, TTURConfig, encode_layout, make_optimizers, set_requires_grad


@dataclass
class OASISModelConfig:
    """Generator, noise and input encoding (official option names in comments)."""

    ngf: int = 64                     # --channels_G 64 → widths 1024, 1024, 1024, 512, 256, 128, 64
    z_dim: int = 64                   # --z_dim 64 (0: --no_3dnoise)
    noise_mode: str = "replicated"    # replicated (official, paper's "global" sampling) | per_class | per_region
                                      # | per_pixel — the noise drawn in training and by default when sampling
    norm: str = "syncbatch"           # --param_free_norm syncbatch (= batch norm on one device) | batch | instance
    spectral: bool = True             # spectral norm on G's ResBlk convs (not --no_spectral_norm)
    spade_kernel: int = 3             # --spade_ks 3
    spade_hidden: int = 128           # nhidden = 128 (hard-coded)
    dontcare_channel: bool = True     # contain_dontcare_label: void pixels as an input channel (ADE20K, COCO)
    init: str = "xavier"              # init_networks: xavier_normal, gain 0.02, zero biases (G and D)
    init_gain: float = 0.02


@dataclass
class OASISDiscriminatorConfig:
    channels: tuple[int, ...] = DISCRIMINATOR_WIDTHS  # encoder widths (official [128,128,256,256,512,512])
    last_channels: int = 64                           # the last decoder block's width (official 64)
    spectral: bool = True                             # not --no_spectral_norm


@dataclass
class OASISLossConfig:
    class_balancing: bool = True        # not --no_balancing_inloss
    class_balance: str = "batch"        # batch: w_c from each batch's pixel counts (official) | dataset: from the
                                        # training split's class shares, computed once (a remedy for small batches:
                                        # at batch 4 one rare-class pixel gets weight ≈ T, up to 4,468 on CamVid)
    count_void: bool = True             # T in w_c = T/(n·count_c) counts void pixels too (official numel(label))
    zero_weight_classes: tuple[int, ...] = ()  # class ids with weight 0 (OASIS's don't care when it is a class,
                                               # e.g. Cityscapes labelId 0 'unlabeled')
    lambda_labelmix: float = 10.0       # --lambda_labelmix 10 (Cityscapes 5); 0 = --no_labelmix
    labelmix_bits: str = "batch"        # batch: one bit per class for the whole batch (official) | sample
    labelmix_merge_quirk: bool = False  # reproduce the official in-place relabelling (see losses.oasis.labelmix_mask)
    add_vgg: bool = False               # --add_vgg_loss
    lambda_vgg: float = 10.0            # --lambda_vgg 10
    vgg_backbone: str = "auto"          # auto | vgg19 | vgg16
    vgg_weights: str | None = "auto"    # auto | path | null (random weights: tests only)
    vgg_input_convention: str = "legacy"  # legacy ([-1,1] into VGG19, as officially) | caffe | imagenet | auto
    d_fake: str = "regenerate"          # regenerate: D's fake from the updated G with new noise (official) | reuse


@dataclass
class OASISEMAConfig(EMAConfig):
    decay: float | None = 0.9999        # --EMA_decay 0.9999 (Cityscapes 0.999); null = --no_EMA
    buffers: str = "average"            # the whole state dict is averaged, BN statistics included (official)
    recalibrate_batches: int = 50       # update_EMA: ≤ 50 forward passes over training batches
    recalibrate_cumulative: bool = False  # False: momentum updates, no reset (official) | True: exact average
    # renormalize_spectral (EMAConfig, on): officially done by its train-mode update_EMA passes


@dataclass
class OASISSettings:
    model: OASISModelConfig = field(default_factory=OASISModelConfig)
    discriminator: OASISDiscriminatorConfig = field(default_factory=OASISDiscriminatorConfig)
    loss: OASISLossConfig = field(default_factory=OASISLossConfig)
    optim: TTURConfig = field(default_factory=lambda: TTURConfig(1e-4, 4e-4, (0.0, 0.999)))  # config.py
    ema: OASISEMAConfig = field(default_factory=OASISEMAConfig)


class OASIS(GANMethod):
    name = "oasis"
    export_graph = "oasis"
    Settings = OASISSettings
    checkpoint_modules = ("generator", "discriminator", "generator_ema")
    inference_modules = ("generator", "generator_ema")

    def __init__(self, settings: OASISSettings, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        super().__init__(settings, spec, image_size, training)
        model, loss = settings.model, settings.loss
        if model.noise_mode not in NOISE_MODES:
            raise ValueError(f"model.noise_mode must be one of {', '.join(NOISE_MODES)}, got {model.noise_mode!r}")
        if loss.labelmix_bits not in ("batch", "sample"):
            raise ValueError(f"loss.labelmix_bits must be 'batch' or 'sample', got {loss.labelmix_bits!r}")
        if loss.class_balance not in ("batch", "dataset"):
            raise ValueError(f"loss.class_balance must be 'batch' or 'dataset', got {loss.class_balance!r}")
        if loss.d_fake not in ("regenerate", "reuse"):
            raise ValueError(f"loss.d_fake must be 'regenerate' or 'reuse', got {loss.d_fake!r}")
        self.label_channels = spec.input_channels(model.dontcare_channel)
        generator = OASISGenerator(self.label_channels, self.image_size, model.z_dim, model.ngf, model.norm,
                                   model.spectral, model.spade_kernel, model.spade_hidden)
        self.generator = initialize(generator, model.init, model.init_gain)
        self.last_noise: torch.Tensor | None = None
        self._ema_updates = 0
        self._recalibrated_at: int | None = None
        self._ema_record: dict | None = None
        self.class_shares: torch.Tensor | None = None  # loss.class_balance=dataset: set by before_training
        self._recalibration_rng = torch.Generator().manual_seed(0)
        if not training:
            return
        disc = settings.discriminator
        discriminator = OASISDiscriminator(spec.num_classes + 1, tuple(disc.channels), disc.last_channels,
                                           disc.spectral)
        self.discriminator = initialize(discriminator, model.init, model.init_gain)
        self.vgg_loss = build_vgg_loss(loss.vgg_backbone, loss.vgg_weights, loss.vgg_input_convention) \
            if loss.add_vgg else None
        self.generator_ema = make_ema(self.generator) if settings.ema.decay else None
        self.optimizers = make_optimizers(self.generator.parameters(), self.discriminator.parameters(),
                                          settings.optim)

    # ------------------------------------------------------------------ pieces
    def layout(self, label: torch.Tensor) -> torch.Tensor:
        return encode_layout(self.spec, label, self.settings.model.dontcare_channel, edges=False)

    def noise(self, label: torch.Tensor, mode: str | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor | None:
        model = self.settings.model
        if not model.z_dim:
            return None
        return draw_noise(label, model.z_dim, mode or model.noise_mode, self.spec.num_classes, generator)

    def labelmix_merge_pair(self) -> tuple[int | None, int] | None:
        """Our ids of OASIS's indices 0 and 1: (void, class 0) with a don't-care channel, else (class 0, class 1)."""
        if not self.settings.loss.labelmix_merge_quirk:
            return None
        return (None, 0) if self.settings.model.dontcare_channel else (0, 1)

    def before_training(self, open_split) -> None:
        """``loss.class_balance: dataset``: each class's share of the training split's pixels, counted once."""
        loss = self.settings.loss
        if loss.class_balance != "dataset" or not loss.class_balancing:
            return
        dataset = open_split()
        labels = (dataset[index]["label"] for index in range(len(dataset)))
        self.class_shares = class_frequencies(labels, self.spec.num_classes, loss.zero_weight_classes,
                                              loss.count_void)

    def balance_weights(self, label: torch.Tensor) -> torch.Tensor:
        loss = self.settings.loss
        if loss.class_balance == "dataset" and loss.class_balancing and self.class_shares is None:
            raise ValueError("loss.class_balance=dataset needs the training split's class shares: call "
                             "method.before_training(open_split) first (the Trainer does)")
        return class_balance_weights(label, self.spec.num_classes, loss.zero_weight_classes, loss.count_void,
                                     loss.class_balancing, self.class_shares)

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        loss = self.settings.loss
        real, label = batch["image"], batch["label"]
        layout = self.layout(label)
        weights = self.balance_weights(label)

        # generator update: D's balanced segmentation loss towards the real classes (D frozen)
        fake = self.generator(layout, self.noise(label))
        set_requires_grad(self.discriminator, False)
        g_losses = {"g_adv": real_class_loss(self.discriminator(fake), label, weights)}
        if self.vgg_loss is not None:
            g_losses["g_vgg"] = loss.lambda_vgg * self.vgg_loss(fake, real)
        self.optimizer_step("generator", sum(g_losses.values()))
        set_requires_grad(self.discriminator, True)

        # discriminator update: real → classes, fake → class 0, LabelMix consistency
        fake = self.discriminator_fake(fake, lambda: self.generator(layout, self.noise(label)))
        fake_logits = self.discriminator(fake)
        real_logits = self.discriminator(real)
        d_losses = {"d_fake": fake_class_loss(fake_logits), "d_real": real_class_loss(real_logits, label, weights)}
        if loss.lambda_labelmix > 0:
            mask = labelmix_mask(label, self.spec.num_classes, loss.labelmix_bits == "sample",
                                 self.labelmix_merge_pair())
            mixed_logits = self.discriminator(labelmix_images(mask, real, fake))
            d_losses["d_labelmix"] = loss.lambda_labelmix * labelmix_loss(mixed_logits, real_logits, fake_logits,
                                                                          mask)
        self.optimizer_step("discriminator", sum(d_losses.values()))
        self.update_ema()
        return self.floats({**g_losses, **d_losses})

    def update_ema(self) -> None:
        if getattr(self, "generator_ema", None) is not None:
            update_ema(self.generator_ema, self.generator, self.settings.ema.decay, self.settings.ema.buffers)
            self._ema_updates += 1

    def recalibration_forward(self, generator, batch: dict) -> None:
        label = batch["label"]
        generator(self.layout(label), self.noise(label, generator=self._recalibration_rng))

    def before_checkpoint(self, batches) -> None:
        """Make the EMA generator usable: spectral norm, then batch-norm statistics (official ``update_EMA``).

        First the spectral-norm vectors are power-iterated on the averaged weights (``ema.renormalize_spectral``;
        see ``nn.ema``), because the batch-norm statistics depend on the weights' scale; then the statistics are
        re-estimated over ``ema.recalibrate_batches`` training batches (§14.8).  Runs once per EMA state: a
        checkpoint and a gallery at the same step share one pass.  The noise comes from a fixed-seed generator,
        so the statistics are a function of the weights and the data only.  Under torchrun rank 0 does both and
        broadcasts the EMA generator's buffers (the record below is rank 0's, the one written to state.json).
        """
        ema = self.settings.ema
        if getattr(self, "generator_ema", None) is None or self._recalibrated_at == self._ema_updates:
            return

        def refresh() -> dict:
            layers = renormalize_spectral_norm(self.generator_ema) if ema.renormalize_spectral else 0
            used = 0
            if ema.recalibrate_batches > 0:
                self._recalibration_rng = torch.Generator().manual_seed(0)
                used = recalibrate_batch_norm(self.generator_ema, self.recalibration_forward,
                                              batches(ema.recalibrate_batches), cumulative=ema.recalibrate_cumulative)
            return {"spectral_renormalised_layers": layers, "bn_batches": used,
                    "bn_estimate": "exact mean" if ema.recalibrate_cumulative else "momentum, no reset"}

        self._ema_record = self.on_main_rank(self.generator_ema, refresh)
        self._recalibrated_at = self._ema_updates  # on every rank: the next call skips (or broadcasts) everywhere

    def extra_state(self) -> dict:
        """What the EMA generator in the checkpoint went through (``inverseg evaluate`` reports it), and the
        dataset-wide class shares when the loss uses them."""
        state = {"ema": self._ema_record} if self._ema_record else {}
        if self.class_shares is not None:
            state["class_shares"] = {name: round(float(share), 6)
                                     for name, share in zip(self.spec.class_names, self.class_shares)}
        return state

    def before_sampling(self, batches) -> None:
        self.before_checkpoint(batches)

    # ------------------------------------------------------------------ inference
    def resample_region(self, label: torch.Tensor, classes=None, mask=None) -> torch.Tensor | None:
        """``resample_classes`` (ids or names) and/or ``resample_mask`` → (B,H,W) bool region, or None."""
        if classes is None and mask is None:
            return None
        region = torch.zeros(label.shape, dtype=torch.bool, device=label.device)
        if classes is not None:
            if isinstance(classes, (int, str)):
                classes = [classes]
            for item in classes:
                region |= label == self._class_id(item)
        if mask is not None:
            region |= self._mask_tensor(mask, label)
        return region

    def _class_id(self, item) -> int:
        names = list(self.spec.class_names)
        if isinstance(item, str):
            if item in names:
                return names.index(item)
            if item == "void" and self.spec.ignore_index is not None:
                return self.spec.ignore_index
            raise ValueError(f"resample_classes: unknown class {item!r}; classes: {', '.join(names)}")
        class_id = int(item)
        if not (0 <= class_id < self.spec.num_classes or class_id == self.spec.ignore_index):
            raise ValueError(f"resample_classes: {class_id} is not one of {self.spec.allowed_description()}")
        return class_id

    @staticmethod
    def _mask_tensor(mask, label: torch.Tensor) -> torch.Tensor:
        """A mask as (H,W)/(B,H,W) bools or numbers (non-zero = inside), or an image tensor (B,3,H,W) in [-1, 1]
        as the Pipeline makes from a PIL image / file (brighter than mid-grey = inside), at any size."""
        mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if mask.dim() == 4:  # image: (B, C, H, W)
            mask = mask.float().mean(1) > 0
        elif mask.dim() == 2:
            mask = mask[None]
        if mask.dim() != 3:
            raise ValueError(f"resample_mask must be (H,W), (B,H,W) or an image, got shape {tuple(mask.shape)}")
        mask = mask.to(label.device)
        if tuple(mask.shape[-2:]) != tuple(label.shape[-2:]):
            mask = torch.nn.functional.interpolate(mask[:, None].float(), size=label.shape[-2:], mode="nearest")[:, 0]
        return (mask != 0).expand(label.shape[0], -1, -1)

    def _given_noise(self, noise, batch: int, k: int, size: tuple[int, int]) -> torch.Tensor:
        """Accept (z,H,W), (B|1,z,H,W), (1,k,z,H,W) / (B,k,z,H,W) — e.g. ``last_noise`` — → (B,k,z,H,W)."""
        noise = torch.as_tensor(np.asarray(noise) if not isinstance(noise, torch.Tensor) else noise).float()
        z_dim = self.settings.model.z_dim
        if noise.dim() == 3:
            noise = noise[None, None]
        elif noise.dim() == 4:
            noise = noise[:, None] if noise.shape[0] in (1, batch) else noise[None]
        if noise.dim() != 5 or noise.shape[2] != z_dim or tuple(noise.shape[-2:]) != tuple(size):
            raise ValueError(f"noise must have shape (B, k, {z_dim}, {size[0]}, {size[1]}) (as method.last_noise) "
                             f"or (B, {z_dim}, {size[0]}, {size[1]}), got {tuple(noise.shape)}")
        if noise.shape[0] not in (1, batch) or noise.shape[1] not in (1, k):
            raise ValueError(f"noise holds {noise.shape[0]}×{noise.shape[1]} (layouts × images) but {batch} "
                             f"layouts × k={k} images are asked for")
        return noise.expand(batch, k, -1, -1, -1)

    def inference_controls(self) -> InferenceControls:
        """With 3D noise: any k and regional re-sampling; without (``model.z_dim=0``) one deterministic image."""
        noisy = bool(self.settings.model.z_dim)
        return InferenceControls(max_k=None if noisy else 1, resample=noisy)

    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               noise=None, resample_classes=None, resample_mask=None, noise_mode: str | None = None,
               **unknown) -> torch.Tensor:
        """(B,H,W) ids → (B,k,3,H,W); the noise used is left in ``self.last_noise`` (B,k,z_dim,H,W).

        All k noises are drawn first from ``generator`` (so ``seed=s`` gives the same base noise with or without
        ``resample_*``), then each region's fresh noise.  Without a generator a fresh unseeded one is used (the
        global RNG is never touched).
        """
        if unknown:
            raise TypeError(f"OASIS takes noise=, resample_classes=, resample_mask= and noise_mode=; "
                            f"got {', '.join(unknown)}")
        mode = noise_mode or self.settings.model.noise_mode
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
        if generator is None:
            generator = torch.Generator()
            generator.seed()
        net = self.sampling_generator()
        layout = self.layout(label)
        batch, size = label.shape[0], tuple(label.shape[-2:])
        if not self.settings.model.z_dim:
            if k > 1 or noise is not None or resample_classes is not None or resample_mask is not None:
                raise ValueError("this OASIS has no 3D noise (model.z_dim=0): it is deterministic")
            self.last_noise = None
            return net(layout).clamp(-1.0, 1.0)[:, None]
        if noise is None:
            noises = torch.stack([self.noise(label, mode, generator) for _ in range(k)], dim=1)
        else:
            noises = self._given_noise(noise, batch, k, size).to(layout)
        region = self.resample_region(label, resample_classes, resample_mask)
        if region is not None:
            noises = torch.stack([resample_noise(noises[:, i], region, label, mode, self.spec.num_classes, generator)
                                  for i in range(k)], dim=1)
        self.last_noise = noises
        return torch.stack([net(layout, noises[:, i]) for i in range(k)], dim=1).clamp(-1.0, 1.0)
