"""SESAME (Ntavelis et al., ECCV 2020): semantic editing of a real photo — the recipe.

Task: the user changes the layout of a region of a photo (adds a car, erases a pedestrian); the generator
re-renders that region and the rest of the photo is kept.  Training imitates it (official ``preprocess_input``,
reference notes §3.1): a box is erased from the photo (``data/edit_regions.py``: object or background boxes,
optionally inside a square context crop), the layout stays complete, and the generator fills the hole.

Inputs (official ``--mix_input_gen``): the generator sees ``concat(masked photo, semantics)``, the SPADE layers and
the discriminator see the semantics ``= concat(layout, hole)``, where layout = one-hot [+ don't-care] [+ instance
edges] — multiplied by the hole with ``model.layout_inside_hole_only`` (``--segmentation_mask``, the Cityscapes
script: only the edited region's layout is given).  The hole is filled with 0 (mid-grey in [-1, 1]).
Output composition (not ``--no_mix_real_fake``): ``fake = (1 − hole)·real + hole·G(…)``; every loss and D see the
composite, so pixels outside the hole are the input's exactly.

Objective (``pix2pix_model.py``, ``scripts/train_*.sh``): hinge GAN + λ_FM = 10 · feature matching (image-stream
features, /num_D) + λ_VGG = 10 · VGG19 loss; no L1 term.  The optional Gram style loss (``--use_style_loss``) is
off in both scripts and not implemented.  One ``train_step`` = one G update, then one D update on a fresh fake
generated under ``no_grad`` (the official D step calls G again).  Optimiser: TTUR, G 1e-4 / D 4e-4, β = (0, 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.edit_regions import RegionRule, sample_regions
from ..labels import LabelSpec
from ..losses.adversarial import AdversarialLoss
from ..losses.vgg import build_vgg_loss
from ..models.sesame import SesameDiscriminator, SesameGenerator
from ..nn.ema import make_ema
from ..nn.layers import initialize
from .gan import DiscriminatorConfig, EMAConfig, GANMethod, TTURConfig, encode_layout, make_optimizers, \
    set_requires_grad


@dataclass
class SesameModelConfig:
    """Generator and input encoding (official option names in comments; defaults = both training scripts)."""

    ngf: int = 64                          # --ngf
    n_downsample: int = 2                  # --resnet_n_downsample
    n_resnet_blocks: int = 4               # --resnet_n_blocks
    n_spade_blocks: int = 5                # --spade_n_blocks
    initial_kernel: int = 7                # --resnet_initial_kernel_size
    norm: str = "syncbatch"                # norm_G spectralspadesyncbatch3x3 (param-free norm inside SPADE)
    spectral: bool = True                  # … spectral norm on the SPADE ResBlk convs
    spade_kernel: int = 3
    spade_hidden: int = 128
    dontcare_channel: bool = False         # contain_dontcare_label (off in both scripts)
    instance_edges: bool = False           # both scripts pass --no_instance
    layout_inside_hole_only: bool = False  # --segmentation_mask (Cityscapes script: on; ADE20K script: off)
    mix_real_fake: bool = True             # not --no_mix_real_fake: outside the hole the output is the input
    init: str = "xavier"                   # --init_type xavier --init_variance 0.02
    init_gain: float = 0.02


@dataclass
class MaskingConfig:
    """Training holes (official ``segmentation_dataset.py`` defaults; the dataset-specific numbers are in presets)."""

    classes: list[str] = field(default_factory=list)  # classes of interest by name (empty: every class)
    min_box_size: int = 128          # --min_box_size (objects: longer side ≥ this; background boxes: sides ≥ this)
    max_box_size: int = 256          # --max_box_size (background boxes: sides < this)
    prob_bg: float = 0.0             # --prob_bg: share of random background boxes (Cityscapes 0, ADE20K 0.1)
    object_choice: str = "first"     # first: the official code overwrites its random pick with candidate 0 | random
    context_crop: bool = True        # --resize_or_crop select_region: square context window around the box
    context_margin: float = 3.0      # --contextMargin: window side = 3 × the box's longer side (clipped)
    crop_size: int = 256             # --fineSize: the window is resized to this square
    random_crop: bool = True         # --random_crop 1 (training): the window is shifted at random
    prob_full: float = 0.0           # not official: share of samples erased entirely (layout → image; issue #4)


@dataclass
class SesameLossConfig:
    gan_mode: str = "hinge"              # --gan_mode hinge
    scale_reduction: str = "mean"        # GANLoss averages over the D scales
    d_loss_weight: float = 1.0           # D_Fake + D_real
    lambda_feat: float = 10.0            # --lambda_feat (λ/num_D per term)
    feat_weighting: str = "spade"
    lambda_vgg: float = 10.0             # --lambda_vgg
    vgg_backbone: str = "auto"           # auto | vgg19 | vgg16
    vgg_weights: str | None = "auto"     # auto | path | null (random weights: tests only)
    vgg_input_convention: str = "legacy"  # [-1,1] into VGG19, as officially
    d_fake: str = "regenerate"           # the D step re-runs G under no_grad (compute_discriminator_loss)


@dataclass
class SesameSettings:
    model: SesameModelConfig = field(default_factory=SesameModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig(spectral=True))  # 2 scales, n_layers_D 4, spectralinstance
    loss: SesameLossConfig = field(default_factory=SesameLossConfig)
    optim: TTURConfig = field(default_factory=TTURConfig)  # TTUR: G 1e-4, D 4e-4, betas (0, 0.9)
    ema: EMAConfig = field(default_factory=EMAConfig)      # not in SESAME (off)


class SESAME(GANMethod):
    name = "sesame"
    export_graph = "sesame"
    Settings = SesameSettings
    checkpoint_modules = ("generator", "discriminator", "generator_ema")
    inference_modules = ("generator", "generator_ema")
    edits_photos = True  # Pipeline.edit / inverseg edit / the studio's photo editing

    def __init__(self, settings: SesameSettings, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        super().__init__(settings, spec, image_size, training)
        model, masking = settings.model, settings.masking
        self.layout_channels = spec.input_channels(model.dontcare_channel) + int(model.instance_edges)
        generator = SesameGenerator(self.layout_channels + 1, model.ngf, model.n_downsample, model.n_resnet_blocks,
                                    model.n_spade_blocks, model.norm, model.spectral, model.spade_kernel,
                                    model.spade_hidden, model.initial_kernel)
        self.generator = initialize(generator, model.init, model.init_gain)
        self.encoder = None
        if masking.object_choice not in ("first", "random"):
            raise ValueError(f"masking.object_choice must be 'first' or 'random', got {masking.object_choice!r}")
        unknown = [name for name in masking.classes if name not in spec.class_names]
        if unknown:
            raise ValueError(f"masking.classes: {unknown[0]!r} is not a class of '{spec.name}'; classes: "
                             f"{', '.join(spec.class_names)}")
        self.rule = RegionRule(tuple(spec.class_names.index(name) for name in masking.classes),
                               masking.min_box_size, masking.max_box_size, masking.prob_bg, masking.object_choice)
        if not training:
            return
        settings_d, loss = settings.discriminator, settings.loss
        discriminator = SesameDiscriminator(self.layout_channels + 1, settings_d.num_scales, settings_d.ndf,
                                            settings_d.num_layers, settings_d.norm, settings_d.spectral)
        self.discriminator = initialize(discriminator, model.init, model.init_gain)
        self.adversarial = AdversarialLoss(loss.gan_mode, loss.scale_reduction)
        self.vgg_loss = build_vgg_loss(loss.vgg_backbone, loss.vgg_weights, loss.vgg_input_convention) \
            if loss.lambda_vgg > 0 else None
        self.generator_ema = make_ema(self.generator) if settings.ema.decay else None
        self.optimizers = make_optimizers(self.generator.parameters(), self.discriminator.parameters(),
                                          settings.optim)

    # ------------------------------------------------------------------ pieces
    def semantics(self, label: torch.Tensor, hole: torch.Tensor, instance: torch.Tensor | None = None,
                  training: bool = False) -> torch.Tensor:
        """concat(layout [· hole], hole): the SPADE / discriminator conditioning (official ``input_semantics``)."""
        model = self.settings.model
        layout = encode_layout(self.spec, label, model.dontcare_channel, model.instance_edges, instance,
                               require_instance=training)
        if model.layout_inside_hole_only:
            layout = layout * hole
        return torch.cat([layout, hole], dim=1)

    def inpaint(self, generator, image: torch.Tensor, semantics: torch.Tensor) -> torch.Tensor:
        """G(masked photo, semantics), composited with the photo outside the hole (official ``generate_fake``)."""
        hole = semantics[:, -1:]
        generated = generator(image * (1.0 - hole), semantics)
        if not self.settings.model.mix_real_fake:
            return generated
        return (1.0 - hole) * image + hole * generated

    def discriminate(self, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor):
        """D on fake and real in one batch → (fake outputs, real outputs)."""
        outputs = self.discriminator(torch.cat([torch.cat([semantics, fake], 1), torch.cat([semantics, real], 1)], 0))
        half = fake.shape[0]
        return ([[t[:half] for t in scale] for scale in outputs], [[t[half:] for t in scale] for scale in outputs])

    def training_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real, semantics, hole) of a batch with its training holes (and context crops) drawn."""
        masking = self.settings.masking
        real, label, instance, hole = sample_regions(
            batch["image"], batch["label"], batch.get("instance"), self.rule, masking.context_crop,
            masking.crop_size, masking.context_margin, masking.random_crop, masking.prob_full)
        return real, self.semantics(label, hole, instance, training=True), hole

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        real, semantics, _ = self.training_inputs(batch)

        # generator update (D frozen while G's loss flows through it)
        fake = self.inpaint(self.generator, real, semantics)
        set_requires_grad(self.discriminator, False)
        pred_fake, pred_real = self.discriminate(semantics, fake, real)
        g_losses = self.generator_losses(pred_fake, pred_real, fake, real)
        self.optimizer_step("generator", sum(g_losses.values()))
        self.update_ema()

        # discriminator update
        set_requires_grad(self.discriminator, True)
        fake_for_d = self.discriminator_fake(fake, lambda: self.inpaint(self.generator, real, semantics))
        pred_fake, pred_real = self.discriminate(semantics, fake_for_d, real)
        d_real, d_fake = self.adversarial.discriminator(pred_real, pred_fake)
        self.optimizer_step("discriminator", self.settings.loss.d_loss_weight * (d_real + d_fake))
        return self.floats({**g_losses, "d_real": d_real, "d_fake": d_fake})

    def recalibration_forward(self, generator, batch: dict) -> None:
        hole = torch.ones_like(batch["label"][:, None], dtype=batch["image"].dtype)
        self.inpaint(generator, batch["image"], self.semantics(batch["label"], hole, batch.get("instance")))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               image: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               instance: torch.Tensor | None = None, **unknown) -> torch.Tensor:
        """(B,H,W) ids → (B,1,3,H,W).  With ``image`` (B|1,3,H,W) in [-1,1] and ``mask`` (B|1,H,W), non-zero =
        re-render: an edit of the photo.  Without them the whole image is the hole (layout → image, which an editing
        model does well only when trained with ``masking.prob_full`` > 0)."""
        if unknown:
            raise TypeError(f"SESAME takes image=PHOTO, mask=REGION or instance=MAP; got {', '.join(unknown)}")
        if k > 1:
            raise ValueError("SESAME is deterministic: ask for k=1")
        batch, size = label.shape[0], tuple(label.shape[-2:])
        device = label.device
        if image is None:
            if mask is not None:
                raise TypeError("a mask needs the photo it applies to: pass image= as well")
            image = torch.zeros(batch, 3, *size, device=device)
            hole = torch.ones(batch, 1, *size, device=device)
        else:
            image = image.to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1)
            if tuple(image.shape[-2:]) != size:
                raise ValueError(f"the photo is {tuple(image.shape[-2:])} but the layout is {size}; resize one")
            if mask is None:
                raise TypeError("an edit needs mask= (the region to re-render, non-zero inside)")
            hole = torch.as_tensor(mask, device=device)
            hole = (hole[None] if hole.dim() == 2 else hole).ne(0).float()[:, None].expand(batch, -1, -1, -1)
            if tuple(hole.shape[-2:]) != size:
                raise ValueError(f"the mask is {tuple(hole.shape[-2:])} but the layout is {size}; resize one")
        semantics = self.semantics(label, hole, instance)
        return self.inpaint(self.sampling_generator(), image, semantics).clamp(-1.0, 1.0)[:, None]
