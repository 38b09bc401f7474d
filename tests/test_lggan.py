"""LGGAN: paper-preset parameter counts against the official layer list, the grouped class-specific convolution
against a per-class loop, the fusion and the losses, a short training run and CLI + Pipeline use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _gan_scenes import H, W, build, synthetic_overrides, synthetic_pair, toy_label
from inverseg.cli.main import main
from inverseg.labels import get_scheme
from inverseg.models.lggan import LGGANGenerator
from inverseg.nn import count_parameters
from inverseg.pipeline import Pipeline

TINY = ("model.ngf=4", "model.spade_hidden=8", "model.local_blocks=2")


# --------------------------------------------------------------------------------------------- paper presets
def conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def official_generator_parameters(semantic_nc: int, branches: int, classified: int, ngf: int = 64) -> int:
    """Ha0Tang/LGGAN's LGGANGenerator written out layer by layer from generator.py / architecture.py (SPADE's
    SPADEResnetBlock, spectral norm adds no parameters), 'normal' or 'more' upsampling (no up_4)."""
    def spade(channels: int) -> int:  # mlp_shared conv3 → 128, mlp_gamma / mlp_beta conv3 128 → channels
        return conv(semantic_nc, 128) + 2 * conv(128, channels)

    def resblock(fin: int, fout: int) -> int:
        middle = min(fin, fout)
        total = conv(fin, middle) + conv(middle, fout) + spade(fin) + spade(middle)
        return total + (conv(fin, fout, 1, bias=False) + spade(fin) if fin != fout else 0)

    def transposed(cin: int, cout: int) -> int:  # ConvTranspose2d(cin, cout, 3, 2, 1, 1)
        return cin * cout * 9 + cout

    nf = ngf
    fc = conv(semantic_nc, 16 * nf)                                       # built, never called without VAE
    # head_0, G_middle_0/1, up_0 … up_3, conv_img (encoder and local widths are literals in the official file)
    trunk = (resblock(16 * nf, 16 * nf) * 3 + resblock(16 * nf, 8 * nf) + resblock(8 * nf, 4 * nf)
             + resblock(4 * nf, 2 * nf) + resblock(2 * nf, nf) + conv(nf, 3))
    encoder = conv(semantic_nc, 64, 7) + conv(64, 128) + conv(128, 256) + conv(256, 512) + conv(512, 1024)
    local = (9 * 2 * conv(256, 256)                                      # resnet_blocks1…9
             + transposed(256, 128) + transposed(128, 64)                # deconv3_local, deconv4_local
             + conv(3 * branches, 3)                                     # deconv9
             + branches * conv(64, 3, 7)                                 # deconv5_0 … deconv5_{K-1}
             + 64 * classified + classified)                             # fc2
    attention = transposed(256, 128) + transposed(128, 64) + conv(64, 2, 1)
    return fc + trunk + encoder + local + attention


def test_official_layer_list_matches_the_known_cityscapes_total():
    # the figure a model built from the official file reports (computed once from the listing above, checked by hand)
    assert official_generator_parameters(36, 35, 35) == 111_123_495


def test_paper_preset_cityscapes_parameters_and_a_reduced_resolution_forward():
    spec = get_scheme("cityscapes-labelids")
    method, config = build("lggan-cityscapes", (64, 128), spec=spec, training=False)
    generator = method.generator
    assert method.label_channels == 36 and generator.num_branches == 35 and generator.grid == (1, 2)
    official = official_generator_parameters(36, branches=35, classified=35)
    unused_fc = conv(36, 1024)
    assert count_parameters(generator) == official - unused_fc
    assert config.train.batch_size == 8 and config.settings.loss.image_l1 is False
    label = torch.randint(0, 35, (1, 64, 128))
    with torch.no_grad():
        assert method.sample(label, instance=label).shape == (1, 1, 3, 64, 128)
    # the official start conv on request: exactly the official count
    with_fc, _ = build("lggan-cityscapes", (64, 128), "model.unused_start_conv=true", spec=spec)
    assert count_parameters(with_fc.generator) == official


def test_paper_preset_ade20k_parameters_and_forward():
    method, config = build("lggan-ade20k", (64, 64), spec=get_scheme("ade20k"))
    assert method.label_channels == 151 and method.generator.num_branches == 52
    assert method.generator.classifier.out_features == 51 and config.settings.loss.lambda_l1 == 10.0
    official = official_generator_parameters(151, branches=52, classified=51)
    assert count_parameters(method.generator) == official - conv(151, 1024)
    with torch.no_grad():
        assert method.sample(torch.randint(0, 150, (1, 64, 64))).shape == (1, 1, 3, 64, 64)


# --------------------------------------------------------------------------------------------- generator
def tiny_generator(local_classes: int | None = None) -> LGGANGenerator:
    torch.manual_seed(0)
    return LGGANGenerator(cond_channels=5 + 1 + 1, output_size=(32, 32), num_classes=5, dontcare_channel=True,
                          local_classes=local_classes, ngf=4, spade_hidden=8, local_blocks=1).eval()


def tiny_layout(batch: int = 2) -> torch.Tensor:
    label = torch.randint(0, 6, (batch, 32, 32))  # 5 classes + void (index 5 = don't care)
    label[0, :, :8] = 2
    layout = F.one_hot(label, 6).permute(0, 3, 1, 2).float()
    edges = torch.rand(batch, 1, 32, 32).round()
    return torch.cat([layout, edges], 1)


def test_grouped_class_convs_equal_a_per_class_loop():
    """The official code: per class k, pad(F ⊙ M_k) → its own conv7 → tanh; then concatenated in class order."""
    generator = tiny_generator()
    feature = torch.randn(2, 4, 32, 32)
    masks = generator.branch_masks(tiny_layout())
    assert masks.shape == (2, 5, 32, 32)  # class channels only: no branch for don't care or edges
    weight, bias = generator.class_convs.weight, generator.class_convs.bias
    loop = []
    for k in range(5):
        masked = F.pad(feature * masks[:, k:k + 1], (3, 3, 3, 3), mode="reflect")
        loop.append(torch.tanh(F.conv2d(masked, weight[3 * k:3 * k + 3], bias[3 * k:3 * k + 3])))
    with torch.no_grad():
        assert torch.allclose(generator.class_branches(feature, masks), torch.cat(loop, 1), atol=1e-6)
        # classification module: global average pool of F ⊙ M_k, then fc2
        pooled = torch.stack([(feature * masks[:, k:k + 1]).mean((-2, -1)) for k in range(5)], 1)
        assert torch.allclose(generator.class_logits(feature, masks), generator.classifier(pooled), atol=1e-6)


def test_grouped_classes_get_one_other_branch_without_a_classifier_output():
    """ADE20K style: the first K' classes alone, one branch for the sum of the rest and don't care."""
    generator = tiny_generator(local_classes=3)
    layout = tiny_layout()
    masks = generator.branch_masks(layout)
    assert generator.num_branches == 4 and generator.classifier.out_features == 3
    assert torch.equal(masks[:, :3], layout[:, :3]) and torch.equal(masks[:, 3], layout[:, 3:6].sum(1))
    assert generator.class_convs.weight.shape == (4 * 3, 4, 7, 7) and generator.local_fuse.in_channels == 12
    with pytest.raises(ValueError, match="local_classes"):
        LGGANGenerator(7, (32, 32), num_classes=5, local_classes=6)


def test_forward_fuses_local_and_global_with_a_two_way_softmax():
    generator = tiny_generator()
    layout = tiny_layout()
    with torch.no_grad():
        out = generator(layout, details=True)
        assert torch.equal(generator(layout), out.image)
    assert out.class_images.shape == (2, 5, 3, 32, 32) and out.class_logits.shape == (2, 5, 5)
    assert torch.allclose(out.attention.sum(1), torch.ones(2, 32, 32))
    fused = out.attention[:, :1] * out.local_image + out.attention[:, 1:] * out.global_image
    assert torch.allclose(out.image, fused) and out.image.abs().max() <= 1
    assert torch.allclose(out.local_image, torch.tanh(generator.local_fuse(out.class_images.flatten(1, 2))), atol=1e-6)


# --------------------------------------------------------------------------------------------- losses
def test_local_l1_and_class_loss_against_direct_formulas():
    method, _ = build("lggan-cpu", (H, W), *TINY, training=True)
    generator = method.generator
    label = toy_label(2)
    label[1, 18:26, 8:24] = 3  # the car only in sample 0
    layout = method.layout(label, None)
    real = torch.rand(2, 3, H, W) * 2 - 1
    with torch.no_grad():
        out = generator(layout, details=True)
        # L1_Local: Σ_k L1Loss(image_k, real ⊙ M_k), each a mean over B·3·H·W
        direct = sum(F.l1_loss(out.class_images[:, k], real * out.masks[:, k:k + 1]) for k in range(11))
        assert torch.allclose(method.local_l1(out, real), direct, atol=1e-6)
        # classification: CE over the (sample, class) pairs whose class is present
        present = [(b, k) for b in range(2) for k in range(11) if (label[b] == k).any()]
        assert (0, 8) in present and (1, 8) not in present
        ce = [F.cross_entropy(out.class_logits[b, k][None], torch.tensor([k])) for b, k in present]
        assert torch.allclose(method.class_loss(out), torch.stack(ce).mean(), atol=1e-6)
        # official slip: class 27's L1 uses class 26's mask (only with ≥ 28 branches)
        masks = torch.zeros(1, 28, 4, 4)
        masks[:, 26, :2], masks[:, 27, 2:] = 1, 1  # class 26: rows 0–1, class 27: rows 2–3
        blank = type(out)(image=None, global_image=None, local_image=None, class_images=torch.zeros(1, 28, 3, 4, 4),
                          masks=masks, class_logits=None, attention=None)
        real = torch.ones(1, 3, 4, 4)
        real[..., 2:, :] = 3
        assert float(method.local_l1(blank, real)) == pytest.approx(0.5 + 1.5)
        method.settings.loss.official_mask_slip = True
        assert float(method.local_l1(blank, real)) == pytest.approx(0.5 + 0.5)  # class 27 compared on rows 0–1


def test_vae_is_refused_and_sampling_is_deterministic():
    with pytest.raises(ValueError, match="no VAE mode.*fix: set vae.enabled=false"):
        build("lggan-cpu", (H, W), *TINY, "vae.enabled=true")
    method, _ = build("lggan-cpu", (H, W), *TINY)
    method.eval()
    label = toy_label()
    assert torch.equal(method.sample(label), method.sample(label))
    with pytest.raises(ValueError, match="deterministic"):
        method.sample(label, k=2)


def procedural_batch(count: int = 4) -> dict:
    from inverseg.data import DataConfig, open_dataset
    from inverseg.train.trainer import collate

    scenes = open_dataset(DataConfig(dataset="synthetic", size=(H, W), length=count), augment=False)
    return collate([scenes[i] for i in range(count)])


def test_train_step_logs_every_official_term():
    torch.manual_seed(0)
    method, _ = build("lggan-cpu", (H, W), *TINY, "discriminator.ndf=8", "discriminator.num_layers=3",
                      "loss.vgg_weights=null", "loss.image_l1=true", training=True)
    losses = method.train_step(procedural_batch(2), 0)
    assert set(losses) == {"g_gan", "g_feat", "g_vgg", "g_l1", "g_l1_local", "g_class", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in losses.values())


def test_local_terms_fall_when_the_generator_descends_on_them():
    """G alone, 20 Adam steps (lr 2e-2) on 4 fixed scenes: the per-class L1 and the classification loss decrease
    (their gradients reach the class convs, the classifier and the shared local decoder)."""
    torch.manual_seed(0)
    method, _ = build("lggan-cpu", (H, W), *TINY, "loss.lambda_vgg=0", "discriminator.ndf=4",
                      "discriminator.num_layers=2", training=True)
    batch = procedural_batch(4)
    layout = method.layout(batch["label"], batch["instance"], training=True)
    optimiser = torch.optim.Adam(method.generator.parameters(), lr=2e-2, betas=(0.0, 0.9))
    history = []
    for _ in range(20):
        out = method.generator(layout, details=True)
        l1, ce = method.local_l1(out, batch["image"]), method.class_loss(out)
        optimiser.zero_grad()
        (l1 + ce).backward()
        optimiser.step()
        history.append((float(l1.detach()), float(ce.detach())))
    first, last = np.mean(history[:3], 0), np.mean(history[-3:], 0)
    # the classification loss falls slowly from ln 11: the masked means are diluted by the class areas and the
    # classifier starts at Xavier gain 0.02, as officially (about 2 % in these 20 steps)
    assert last[0] < 0.9 * first[0] and last[1] < 0.99 * first[1], (first, last)


def test_train_and_synthesize_through_cli_and_pipeline(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "lggan-cpu", "--out", str(run), "--quiet", *synthetic_overrides(), *TINY]) == 0
    losses = [json.loads(line) for line in (run / "logs" / "losses.jsonl").read_text().splitlines()]
    assert {"g_gan", "g_feat", "g_vgg", "g_l1_local", "g_class", "d_real", "d_fake"} <= set(losses[-1])
    pipe = Pipeline.from_pretrained(run)
    assert getattr(pipe.method, "discriminator", None) is None  # training-only
    label, _ = synthetic_pair(0)
    first, again = pipe(label)[0], pipe(label)[0]
    assert first.size == (W, H) and np.array_equal(np.asarray(first), np.asarray(again))
    # inverseg synthesize on held-out layouts, and --init-from into a new run: no LGGAN-specific code paths
    from PIL import Image

    labels, out = tmp_path / "labels", tmp_path / "out"
    labels.mkdir()
    Image.fromarray(label.astype(np.uint8)).save(labels / "scene.png")
    assert main(["synthesize", "--checkpoint", str(run), "--labels", str(labels), "--out", str(out)]) == 0
    assert Image.open(out / "scene.png").size == (W, H)
    again_run = tmp_path / "again"
    assert main(["train", "--config", "lggan-cpu", "--out", str(again_run), "--quiet", "--init-from", str(run),
                 *synthetic_overrides(1), *TINY, "train.num_samples=0"]) == 0
