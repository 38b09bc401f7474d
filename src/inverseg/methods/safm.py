"""SAFM (Lv, Li, Niu, Cao, Zuo, CVPR 2022): the recipe — SPADE's, plus shape and a semantic-alignment loss.

Official code ``cszy98/SAFM@bd0cb3f0`` (a fork of NVlabs/SPADE; methods-later.md §4).  Everything SPADE does
stays (``methods/spade.py``: TTUR, hinge + λ_FM 10 + λ_VGG 10, G step then D step on a regenerated fake, optional
VAE); what SAFM changes:

* **Input.**  G is conditioned on [one-hot (+ don't care) (+ instance edges), SPD]: the 72-channel Shape-aware
  Position Descriptor of every pixel relative to its region's outline (``labels/shape_context.py``).  Officially
  the regions are the instance map's ids ≠ 0 (Cityscapes: ids ≥ 1000, i.e. thing instances; COCO-Stuff: SPADE's
  instance maps, whose stuff pixels carry their class; ADE20K: the ADEChallenge 2017 instance annotations),
  recomputed every iteration after crop and flip.  ``spd.source: label`` takes the classes of the label map as
  the regions instead (data without instance maps, e.g. CamVid).  The SPD is computed inside the method from the
  batch's maps, so sampling needs nothing extra: ``pipe(label)`` derives it from the label map (or from
  ``instance=MAP`` when given); descriptors are cached by map content (``spd.cache_mb``).
* **Generator** (``models/safm.py``): SAFM layers in every ResBlk normalisation, or (official Cityscapes) SPADE
  ResBlks after one shape-conditioning stage at the input — ``model.placement``.
* **Discriminator**: the SESAME two-stream PatchGAN (``discriminator.two_stream``), which sees the layout without
  the SPD (official ``input_semantics[:, :semantic_nc − 72]``).
* **Semantic alignment loss** (§3.3; official ``pix2pix_model.compute_generator_loss``): a segmentation network
  (the OASIS U-Net, official ``SegNet``) is trained from scratch with the class-balanced cross-entropy on real
  images, ``g_seg_real``; after ``loss.fake_seg_start`` steps (official: ``segepoch`` epochs) the same loss on the
  generated image, ``g_seg_fake``, trains G **and** the segmentation network (its parameters are in G's optimiser,
  as officially).  Class weights w_c = B·H·W / (K · count_c) over the K classes present, 0 on don't care (the
  OASIS formula, ``losses/oasis.py``).  Nothing pretrained is needed for it; the only pretrained part of SAFM is
  the VGG19 of the perceptual loss, replaced offline by the substitute ``losses/vgg.py`` documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..labels import LabelSpec
from ..labels.shape_context import CHANNELS as SPD_CHANNELS
from ..labels.shape_context import SPDCache, shape_descriptor
from ..losses.oasis import balanced_cross_entropy, class_balance_weights
from ..models.oasis import DISCRIMINATOR_WIDTHS, OASISDiscriminator
from ..models.safm import PLACEMENTS, SAFMGenerator
from ..nn.layers import initialize
from .gan import DiscriminatorConfig, EMAConfig, TTURConfig
from .spade import SPADE, SPADELossConfig, SPADEModelConfig, VAEConfig

SPD_SOURCES = ("instance", "label")


def spd_regions(label: torch.Tensor, instance: torch.Tensor | None, source: str, min_instance_id: int,
                num_classes: int, training: bool = False) -> torch.Tensor:
    """(B,H,W) region ids for the SPD, −1 where a pixel belongs to no region (``spd.source`` and
    ``spd.min_instance_id``; a function so that the ONNX runtime computes the same regions without the method)."""
    if source == "instance":
        if instance is not None:
            instance = torch.as_tensor(instance).to(label.device)
            if instance.dim() == 2:
                instance = instance.unsqueeze(0)
            if instance.shape[-2:] != label.shape[-2:]:
                instance = torch.nn.functional.interpolate(instance[:, None].float(), size=label.shape[-2:],
                                                           mode="nearest")[:, 0].long()
            return torch.where(instance >= min_instance_id, instance.long(), torch.full_like(instance, -1))
        if training:
            raise ValueError("spd.source is 'instance' but the batch has no instance maps (e.g. CamVid has "
                             "none); fix: set spd.source=label, or use a dataset with instance maps")
        # sampling without an instance map: one region per class of the label map (like the edge channel's
        # fallback to class boundaries); pass instance=MAP for the instance-level descriptor
    valid = (label >= 0) & (label < num_classes)
    return torch.where(valid, label, torch.full_like(label, -1))


@dataclass
class SAFMModelConfig(SPADEModelConfig):
    placement: str = "blocks"         # blocks: SAFM in every norm (ADE20K, COCO) | input: once, then SPADE (Cityscapes)
    shape_hidden: int = 36            # width of pre_seg / pre_dis and of the depthwise-convolved SPD (hard-coded 36)


@dataclass
class SPDConfig:
    """Which regions the Shape-aware Position Descriptor describes, and its cache."""

    source: str = "instance"          # instance: the instance map (official) | label: the label map's classes
    min_instance_id: int = 1          # instance ids below this have no SPD (official: 0; Cityscapes: < 1000)
    cache_mb: float = 512.0           # descriptors of maps seen before, keyed by content; 0 = off


@dataclass
class SegmenterConfig:
    """The segmentation network of the semantic-alignment loss (official ``SegNet`` = the OASIS D's U-Net)."""

    channels: tuple[int, ...] = DISCRIMINATOR_WIDTHS  # encoder widths (official [128,128,256,256,512,512])
    last_channels: int = 64                           # official 64
    spectral: bool = True                             # spectral norm on every conv (official)


@dataclass
class SAFMLossConfig(SPADELossConfig):
    lambda_seg_real: float = 1.0       # G_losses['Real_seg'] (weight 1)
    lambda_seg_fake: float = 1.0       # G_losses['Fake_seg'] (weight 1)
    fake_seg_start: int = 0            # steps before the fake-image term starts (official: after segepoch epochs)
    seg_class_balancing: bool = True   # get_class_balancing (always on officially)
    seg_drop_last_class: bool = False  # official ADE20K quirk: the last class gets weight 0 (target argmax over
                                       # semantic_nc − 73 channels assumes an edge channel ADE20K lacks)


@dataclass
class SAFMSettings:
    model: SAFMModelConfig = field(default_factory=SAFMModelConfig)
    spd: SPDConfig = field(default_factory=SPDConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig(spectral=True, two_stream=True))  # SESAME D, spectralinstance
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    loss: SAFMLossConfig = field(default_factory=SAFMLossConfig)
    optim: TTURConfig = field(default_factory=TTURConfig)  # TTUR: G (+ segmenter) 1e-4, D 4e-4, betas (0, 0.9)
    ema: EMAConfig = field(default_factory=EMAConfig)


class SAFM(SPADE):
    name = "safm"
    Settings = SAFMSettings
    checkpoint_modules = ("generator", "discriminator", "segmenter", "encoder", "generator_ema")
    inference_modules = ("generator", "generator_ema", "encoder")

    def __init__(self, settings: SAFMSettings, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        if settings.spd.source not in SPD_SOURCES:
            raise ValueError(f"spd.source must be one of {', '.join(SPD_SOURCES)}, got {settings.spd.source!r}")
        if settings.model.placement not in PLACEMENTS:
            raise ValueError(f"model.placement must be one of {', '.join(PLACEMENTS)}, "
                             f"got {settings.model.placement!r}")
        super().__init__(settings, spec, image_size, training)
        self.spd_cache = SPDCache(settings.spd.cache_mb)
        self.segmenter = None
        if not training:
            return
        model, seg = settings.model, settings.segmenter
        self.segmenter_classes = spec.input_channels(model.dontcare_channel)  # label_nc (+ don't care)
        segmenter = OASISDiscriminator(self.segmenter_classes, tuple(seg.channels), seg.last_channels, seg.spectral)
        self.segmenter = initialize(segmenter, model.init, model.init_gain)
        # official create_optimizers: G_params += netSeg.parameters() (same lr and betas as G)
        self.optimizers["generator"].add_param_group({"params": list(self.segmenter.parameters())})

    # ------------------------------------------------------------------ pieces
    def build_generator(self) -> SAFMGenerator:
        model, vae = self.settings.model, self.settings.vae
        return SAFMGenerator(self.label_channels + SPD_CHANNELS, self.image_size, model.ngf, model.num_upsampling,
                             model.norm, model.spectral, model.spade_kernel, model.spade_hidden,
                             z_dim=vae.z_dim if vae.enabled else None, placement=model.placement,
                             shape_hidden=model.shape_hidden)

    def regions(self, label: torch.Tensor, instance: torch.Tensor | None, training: bool = False) -> torch.Tensor:
        """(B,H,W) region ids for the SPD, −1 where a pixel belongs to no region."""
        spd = self.settings.spd
        return spd_regions(label, instance, spd.source, spd.min_instance_id, self.spec.num_classes, training)

    def layout_inputs(self) -> dict[str, dict]:
        """The SPD is an input of the exported graph: outlines need a flood fill (``binary_fill_holes``), which has
        no ONNX form; the runtime computes it with :func:`spd_regions` and ``shape_descriptor`` from these facts."""
        spd = self.settings.spd
        return {"spd": {"channels": SPD_CHANNELS, "source": spd.source, "min_instance_id": spd.min_instance_id,
                        "cache_mb": spd.cache_mb,
                        "about": f"shape-aware position descriptor of the {spd.source} map's regions "
                                 f"(labels/shape_context.shape_descriptor)"}}

    def layout(self, label: torch.Tensor, instance: torch.Tensor | None, training: bool = False) -> torch.Tensor:
        """[one-hot (+ don't care) (+ edges), SPD] — G's conditioning; D gets it without the SPD."""
        encoded = super().layout(label, instance, training)
        descriptor = shape_descriptor(self.regions(label, instance, training), self.spd_cache)
        return torch.cat([encoded, descriptor.to(encoded)], dim=1)

    def discriminate(self, layout: torch.Tensor, fake: torch.Tensor, real: torch.Tensor):
        return super().discriminate(layout[:, :-SPD_CHANNELS], fake, real)

    def segmentation_targets(self, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, class-balanced weights) for the segmenter: class c → c, void → the don't-care output
        (or 0 without one), weight 0."""
        loss, classes = self.settings.loss, self.spec.num_classes
        if loss.seg_drop_last_class:
            label = torch.where(label == classes - 1, torch.full_like(label, -1), label)
        weights = class_balance_weights(label, classes, (), count_void=True, balance=loss.seg_class_balancing)
        void_target = classes if self.segmenter_classes > classes else 0
        valid = (label >= 0) & (label < classes)
        return torch.where(valid, label, torch.full_like(label, void_target)), weights

    def extra_generator_losses(self, batch: dict, fake: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        loss = self.settings.loss
        targets, weights = self.segmentation_targets(batch["label"])
        real_logits = self.segmenter(batch["image"].detach())
        losses = {"g_seg_real": loss.lambda_seg_real * balanced_cross_entropy(real_logits, targets, weights)}
        if step >= loss.fake_seg_start:
            fake_logits = self.segmenter(fake)
            losses["g_seg_fake"] = loss.lambda_seg_fake * balanced_cross_entropy(fake_logits, targets, weights)
        return losses

    def extra_state(self) -> dict:
        cache = self.spd_cache
        return {"spd_cache": {"entries": len(cache.entries), "megabytes": round(cache.bytes / 2**20, 1),
                              "hits": cache.hits, "misses": cache.misses}}
