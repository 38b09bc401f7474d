"""pix2pixHD (Wang et al., CVPR 2018): the recipe.

Networks (``models/pix2pixhd.py``): the global generator G1, optionally the local enhancer G2 (§3.2), the
instance-wise feature encoder E with per-class k-means clusters (§3.4), and the shared multi-scale PatchGAN
(``nn/discriminator.py``).  Objective (§3.2 eq. 6, official code): LSGAN + λ_FM · feature matching + λ_VGG · VGG
loss; D minimises 0.5·(real + fake).  One ``train_step`` = one G update, then one D update on the *same* fake
(detached) and real forward, as the official ``train.py`` does.

Generator input: one-hot of all classes [+ void channel] [+ instance-boundary edge map (§3.3)] [+ E's
instance-pooled features].  The official code has no void handling — every Cityscapes labelId is an input class;
here a spec's void pixels are all-zero unless ``model.void_channel`` gives them their own channel (which is the
same as treating void as one more class).

Appearance control (§3.4): after training, E encodes every training image, keeps one feature per instance with
an area above ``features.min_area`` of the image (official: > 0.5·H·W/32), and k-means (k = 10) clusters them per
class.  At test time each instance takes a random cluster centre (``pipe(label, seed=…)``), or cluster ``style``
for every instance (``pipe(label, style=3)``) or per class (``style={"car": 3, 8: 1}``; the other classes
random), or the features of an aligned photo (``style_image``, the
official ``--use_encoded_image``).  The clusters are refitted whenever a checkpoint is saved
(``features.cluster_at: checkpoint``; the official ``encode_features.py`` is a separate run) or on demand with
:meth:`Pix2PixHD.fit_clusters`.

Official defaults (implementations.md §3): Adam lr 2e-4, betas (0.5, 0.999), batch 1, 100 epochs + 100 epochs of
linear decay to 0 (schedule kind linear, decay_start 0.5); num_D 2 (3 at 1024p), n_layers_D 3, ndf 64, ngf 64
(32 with the local enhancer), λ_feat = 10 for both FM and VGG.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from ..labels import LabelSpec
from ..models.pix2pixhd import FeatureClusters, FeatureEncoder, build_generator
from ..nn.layers import check_divisible, initialize
from ..nn.pooling import broadcast_segments, segment_index
from .base import InferenceControls
from .gan import DiscriminatorConfig, EMAConfig, GANMethod, TTURConfig, encode_layout, set_requires_grad


@dataclass
class Pix2PixHDModelConfig:
    """Generator and input encoding (official option names in comments)."""

    ngf: int = 64                  # --ngf (32 with --netG local)
    n_downsample_global: int = 4   # --n_downsample_global
    n_blocks_global: int = 9       # --n_blocks_global
    n_local_enhancers: int = 0     # 0: --netG global; 1: --netG local (1024p)
    n_blocks_local: int = 3        # --n_blocks_local
    norm: str = "instance"         # --norm instance | batch
    padding: str = "reflect"       # reflect | replicate | zero
    void_channel: bool = False     # official: none (every id is a class); true gives void its own input channel
    instance_edges: bool = True    # not --no_instance: the edge map of the instance ids is one more input channel
    init: str = "normal"           # weights_init: N(0, 0.02) for conv weights, BN scale N(1, 0.02)
    init_gain: float = 0.02
    # --load_pretrain (G1 from a 512p run): `inverseg train --init-from` (docs/methods/pix2pixhd.md)


@dataclass
class FeatureConfig:
    """Instance-wise feature encoder E and its clusters (§3.4; --instance_feat, encode_features.py)."""

    enabled: bool = False          # official 512p/1024p scripts: off; *_feat.sh scripts: on
    feat_num: int = 3              # --feat_num
    nef: int = 16                  # --nef
    n_downsample: int = 4          # --n_downsample_E
    n_clusters: int = 10           # --n_clusters
    min_area: float = 1 / 64       # keep instances covering > this fraction of the image (0.5·H·W/32)
    cluster_at: str = "checkpoint"  # checkpoint: refit before every save | manual: only fit_clusters()
    max_images: int | None = None  # images encoded for clustering (None: the whole training split)
    seed: int = 0                  # k-means seed (scikit-learn random_state=0 officially)


@dataclass
class Pix2PixHDLossConfig:
    gan_mode: str = "ls"                 # LSGAN (--no_lsgan → bce)
    scale_reduction: str = "sum"         # GANLoss sums over the D scales
    d_loss_weight: float = 0.5           # loss_D = 0.5·(D_fake + D_real)
    lambda_feat: float = 10.0            # --lambda_feat (feature matching)
    feat_weighting: str = "pix2pixhd"    # λ·4/(n_layers_D+1)/num_D (spade: λ/num_D)
    lambda_vgg: float = 10.0             # official: the same --lambda_feat scales the VGG loss
    vgg_backbone: str = "auto"           # auto | vgg19 | vgg16 (auto: VGG19 file if present, else offline VGG16)
    vgg_weights: str | None = "auto"     # auto | path | null (random weights: tests only)
    vgg_input_convention: str = "legacy"  # legacy ([-1,1] as officially) | caffe | imagenet | auto
    d_fake: str = "reuse"                # reuse: D sees the fake of this step's G forward | regenerate (SPADE)


@dataclass
class Pix2PixHDOptimConfig(TTURConfig):
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    fix_global_steps: int = 0  # --niter_fix_global (in steps): train only the local enhancer first


@dataclass
class Pix2PixHDSettings:
    model: Pix2PixHDModelConfig = field(default_factory=Pix2PixHDModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)  # n_layers_D 3 = num_layers 4
    loss: Pix2PixHDLossConfig = field(default_factory=Pix2PixHDLossConfig)
    optim: Pix2PixHDOptimConfig = field(default_factory=Pix2PixHDOptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)


class Pix2PixHD(GANMethod):
    name = "pix2pixhd"
    export_graph = "pix2pixhd"
    Settings = Pix2PixHDSettings
    checkpoint_modules = ("generator", "discriminator", "encoder", "clusters", "generator_ema")
    inference_modules = ("generator", "generator_ema", "encoder", "clusters")

    def __init__(self, settings: Pix2PixHDSettings, spec: LabelSpec, image_size: tuple[int, int],
                 training: bool = True):
        super().__init__(settings, spec, image_size, training)
        model, features = settings.model, settings.features
        self.label_channels = spec.input_channels(model.void_channel) + int(model.instance_edges)
        generator = build_generator(self.label_channels + (features.feat_num if features.enabled else 0), model.ngf,
                                    model.n_downsample_global, model.n_blocks_global, model.n_local_enhancers,
                                    model.n_blocks_local, model.norm, model.padding)
        self.generator = initialize(generator, model.init, model.init_gain, zero_bias=False)
        check_divisible(self.image_size, self.generator.factor, "pix2pixHD's generator")
        self.encoder, self.clusters = None, None
        if features.enabled:
            encoder = FeatureEncoder(features.feat_num, features.nef, features.n_downsample, model.norm)
            self.encoder = initialize(encoder, model.init, model.init_gain, zero_bias=False)
            check_divisible(self.image_size, self.encoder.factor, "pix2pixHD's feature encoder")
            self.clusters = FeatureClusters(spec.num_classes + 1, features.n_clusters, features.feat_num)
        if not training:
            return
        self.setup_training_parts(self.label_channels + 3, zero_bias=False)

    # ------------------------------------------------------------------ inputs
    def layout(self, label: torch.Tensor, instance: torch.Tensor | None, training: bool = False) -> torch.Tensor:
        model = self.settings.model
        return encode_layout(self.spec, label, model.void_channel, model.instance_edges, instance,
                             require_instance=training)

    @staticmethod
    def segments(label: torch.Tensor, instance: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooling regions: instances (per class) — or, without instance maps, the class regions of each image."""
        if instance is None:
            return segment_index(label, label)
        instance = torch.as_tensor(instance, device=label.device)
        instance = instance.unsqueeze(0) if instance.dim() == 2 else instance
        if instance.shape[-2:] != label.shape[-2:]:
            instance = torch.nn.functional.interpolate(instance[:, None].float(), size=label.shape[-2:],
                                                       mode="nearest")[:, 0].long()
        return segment_index(instance.expand_as(label), label)

    def _cluster_index(self, value) -> int:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"style must be a cluster index (int) or a mapping class → cluster, got {value!r}")
        value = operator.index(value)
        if not 0 <= value < self.settings.features.n_clusters:
            raise ValueError(f"style must be a cluster index 0–{self.settings.features.n_clusters - 1}, got {value}")
        return value

    def _segment_styles(self, styles: dict, rows: torch.Tensor) -> torch.Tensor:
        """{class id or name: cluster} → one cluster per segment (−1: random) for ``FeatureClusters.choose``."""
        per_row = torch.full((self.spec.num_classes + 1,), -1, dtype=torch.long)
        for key, cluster in styles.items():
            if isinstance(key, str) and not key.lstrip("-").isdigit():
                if key not in self.spec.class_names:
                    raise ValueError(f"style: no class named {key!r}; classes: {', '.join(self.spec.class_names)}")
                key = self.spec.class_names.index(key)
            class_id = int(key)
            if not 0 <= class_id < self.spec.num_classes:
                raise ValueError(f"style: class {class_id} is not one of 0–{self.spec.num_classes - 1}")
            per_row[class_id] = self._cluster_index(cluster)
        return per_row.to(rows.device)[rows]

    def cluster_row(self, classes: torch.Tensor) -> torch.Tensor:
        """Class ids → rows of the cluster table; void (and anything outside the classes) → the last row."""
        valid = (classes >= 0) & (classes < self.spec.num_classes)
        return torch.where(valid, classes, torch.full_like(classes, self.spec.num_classes))

    def freeze_global(self, step: int) -> None:
        """--niter_fix_global: G1 gets no gradients (so Adam skips it) for the first fix_global_steps steps."""
        if self.settings.model.n_local_enhancers and self.settings.optim.fix_global_steps:
            set_requires_grad(self.generator.global_generator, step >= self.settings.optim.fix_global_steps)

    def generate(self, generator, layout: torch.Tensor, batch: dict) -> torch.Tensor:
        """G(layout [+ E(real image) pooled per instance]) — the training-time generator input."""
        if self.encoder is None:
            return generator(layout)
        index, keys = self.segments(batch["label"], batch.get("instance"))
        return generator(torch.cat([layout, self.encoder(batch["image"], index, len(keys))], dim=1))

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        loss = self.settings.loss
        self.freeze_global(step)
        real = batch["image"]
        layout = self.layout(batch["label"], batch.get("instance"), training=True)
        fake = self.generate(self.generator, layout, batch)

        # D on the real image once: its logits train D, its detached features are the FM targets
        set_requires_grad(self.discriminator, True)
        pred_real = self.discriminator(torch.cat([layout, real], dim=1))

        # generator update (D frozen while G's loss flows through it)
        set_requires_grad(self.discriminator, False)
        pred_fake = self.discriminator(torch.cat([layout, fake], dim=1))
        g_losses = self.generator_losses(pred_fake, pred_real, fake, real)
        self.optimizer_step("generator", sum(g_losses.values()))
        self.update_ema()

        # discriminator update
        set_requires_grad(self.discriminator, True)
        fake_for_d = self.discriminator_fake(fake, lambda: self.generate(self.generator, layout, batch))
        pred_fake_d = self.discriminator(torch.cat([layout, fake_for_d], dim=1))
        d_real, d_fake = self.adversarial.discriminator(pred_real, pred_fake_d)
        self.optimizer_step("discriminator", loss.d_loss_weight * (d_real + d_fake))
        return self.floats({**g_losses, "d_real": d_real, "d_fake": d_fake})

    def recalibration_forward(self, generator, batch: dict) -> None:
        self.generate(generator, self.layout(batch["label"], batch.get("instance")), batch)

    # ------------------------------------------------------------------ feature clusters (§3.4)
    @torch.no_grad()
    def fit_clusters(self, batches) -> dict[str, int]:
        """Encode training images, keep one feature per large enough instance, k-means per class.

        ``batches`` yields training batches (dicts with image, label [, instance]).  Returns the number of
        clusters found per class name.  Under torchrun only rank 0 encodes and clusters, over the same batches as
        a single-process run (the Trainer's are the whole split in a seeded order, not the rank's shard), and
        broadcasts the centres: gathering the ranks' shards instead would change the k-means input order and the
        ``max_images`` cut, so the clusters would depend on the number of processes.
        """
        if self.encoder is None:
            raise RuntimeError("this pix2pixHD has no feature encoder (features.enabled=false)")
        self.on_main_rank(self.clusters, lambda: self._encode_and_cluster(batches))
        return {self.spec.class_name(row) if row < self.spec.num_classes else "void": count
                for row, count in enumerate(self.clusters.counts.tolist()) if count}

    def _encode_and_cluster(self, batches) -> None:
        features = self.settings.features
        mode = self.encoder.training
        self.encoder.eval()
        per_class: dict[int, list[torch.Tensor]] = defaultdict(list)
        seen = 0
        for batch in batches:
            label, image = batch["label"], batch["image"]
            index, keys = self.segments(label, batch.get("instance"))
            means, counts = self.encoder.segment_features(image, index, len(keys))
            keep = counts.float() > features.min_area * label.shape[-2] * label.shape[-1]
            rows = self.cluster_row(keys[:, 2])
            for row in rows[keep].unique().tolist():
                per_class[row].append(means[keep & (rows == row)].cpu())
            seen += label.shape[0]
            if features.max_images is not None and seen >= features.max_images:
                break
        self.encoder.train(mode)
        self.clusters.fit({row: torch.cat(chunks) for row, chunks in per_class.items()}, seed=features.seed)

    def before_checkpoint(self, batches) -> None:
        super().before_checkpoint(batches)
        if self.encoder is not None and self.settings.features.cluster_at == "checkpoint":
            self.fit_clusters(batches(10**9))
        elif self.encoder is not None and self.settings.features.cluster_at != "manual":
            raise ValueError(f"features.cluster_at must be 'checkpoint' or 'manual', "
                             f"got {self.settings.features.cluster_at!r}")

    def before_sampling(self, batches) -> None:
        """A gallery before the first checkpoint would have no clusters: fit them once then."""
        super().before_sampling(batches)
        if (self.encoder is not None and self.settings.features.cluster_at == "checkpoint"
                and int(self.clusters.counts.sum()) == 0):
            self.fit_clusters(batches(10**9))

    def extra_state(self) -> dict:
        if self.clusters is None:
            return {}
        counts = self.clusters.counts.tolist()
        return {"feature_clusters": {self.spec.class_name(i) if i < self.spec.num_classes else "void": n
                                     for i, n in enumerate(counts) if n}}

    # ------------------------------------------------------------------ inference
    def inference_controls(self) -> InferenceControls:
        """With the feature encoder: a style photo, a chosen cluster per class, and random clusters per seed —
        different images only when some class has more than one fitted cluster."""
        if self.encoder is None:
            return InferenceControls()
        varied = int(self.clusters.counts.max()) > 1
        return InferenceControls(max_k=None if varied else 1, style_image=True,
                                 clusters=self.settings.features.n_clusters)

    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               style: int | None = None, style_image: torch.Tensor | None = None,
               instance: torch.Tensor | None = None, **unknown) -> torch.Tensor:
        """(B,H,W) ids → (B,k,3,H,W).  ``style``: a cluster index for every instance, or a mapping class (id or
        name) → cluster index (other classes random); ``style_image``: encode this photo (aligned with the label);
        neither: a random cluster per instance (drawn from ``generator``)."""
        if unknown:
            raise TypeError(f"pix2pixHD takes style=CLUSTER, style_image=IMAGE or instance=MAP; "
                            f"got {', '.join(unknown)}")
        net = self.sampling_generator()
        layout = self.layout(label, instance)
        if self.encoder is None:
            if style is not None or style_image is not None:
                raise TypeError("this pix2pixHD was trained without the instance-wise feature encoder "
                                "(features.enabled=false), so it has no style; fix: train with features.enabled=true")
            if k > 1:
                raise ValueError("this pix2pixHD is deterministic (features.enabled=false): ask for k=1, or train "
                                 "with features.enabled=true for k different appearances")
            return net(layout).clamp(-1.0, 1.0)[:, None]
        index, keys = self.segments(label, instance)
        rows = self.cluster_row(keys[:, 2])
        if style is not None:
            style = self._segment_styles(style, rows) if isinstance(style, dict) else self._cluster_index(style)
        outputs = []
        for _ in range(k):
            if style_image is not None:
                image = style_image.to(layout)
                if image.shape[-2:] != label.shape[-2:]:
                    image = torch.nn.functional.interpolate(image, size=label.shape[-2:], mode="bilinear",
                                                            align_corners=False)
                features = self.encoder(image.expand(label.shape[0], -1, -1, -1), index, len(keys))
            else:
                features = broadcast_segments(self.clusters.choose(rows, style, generator).to(layout), index)
            outputs.append(net(torch.cat([layout, features], dim=1)))
        return torch.stack(outputs, dim=1).clamp(-1.0, 1.0)
