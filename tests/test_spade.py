"""SPADE: paper-preset shapes and parameter counts, upsampling modes, the VAE encoder, style-image / seed
conditioning, EMA loading, and a short train → Pipeline run through the CLI on the procedural street scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from _gan_scenes import CAR, SPEC, H, W, build, synthetic_overrides, synthetic_pair, toy_label
from inverseg.config import load_run_config
from inverseg.cli.main import main
from inverseg.labels import get_scheme
from inverseg.models.spade import SPADEGenerator, StyleEncoder, start_grid
from inverseg.nn import count_parameters
from inverseg.pipeline import Pipeline
from inverseg.train import checkpoint as ckpt

TINY = ("model.ngf=4", "model.spade_hidden=8", "vae.nf=4", f"vae.input_size=[{H},{W}]", "vae.num_layers=5",
        "vae.z_dim=8", "discriminator.ndf=8", "discriminator.num_layers=3", "loss.vgg_weights=null")


def test_paper_preset_cityscapes_parameters_and_a_reduced_resolution_forward():
    """spade-cityscapes as officially ('more': 4×8 start grid at 256×512; ≈93 M parameters), run at 64×128."""
    spec = get_scheme("cityscapes-labelids")
    method, config = build("spade-cityscapes", (64, 128), spec=spec)
    assert method.label_channels == 35 + 1  # labelIds + edges, no don't-care channel
    assert start_grid((256, 512), "more") == (4, 8) and method.generator.grid == (1, 2)
    assert count_parameters(method.generator) == pytest.approx(93.05e6, rel=0.005)
    assert config.settings.optim.lr_generator == 1e-4 and config.settings.optim.lr_discriminator == 4e-4
    with torch.no_grad():
        assert method.sample(torch.randint(0, 35, (1, 64, 128))).shape == (1, 1, 3, 64, 128)


@pytest.mark.slow
@pytest.mark.parametrize("preset, scheme, channels, millions", [
    ("spade-ade20k", "ade20k", 151, 96.49), ("spade-coco", "cocostuff", 184, 97.48)])  # COCO: "97.5 million"
def test_paper_presets_ade20k_and_coco(preset, scheme, channels, millions):
    method, _ = build(preset, (64, 64), spec=get_scheme(scheme))
    assert method.label_channels == channels and method.generator.grid == (2, 2)  # 8×8 at 256×256
    assert count_parameters(method.generator) == pytest.approx(millions * 1e6, rel=0.002)
    with torch.no_grad():
        assert method.sample(torch.randint(0, 150, (1, 64, 64))).shape == (1, 1, 3, 64, 64)


@pytest.mark.parametrize("mode, ups", [("normal", 5), ("more", 6), ("most", 7)])
def test_upsampling_modes(mode, ups):
    size = (2**ups, 2 * 2**ups)
    generator = SPADEGenerator(cond_channels=3, output_size=size, ngf=4, num_upsampling=mode, spade_hidden=8)
    assert generator.grid == (1, 2) and len(generator.up_blocks) == 4 + (mode == "most")
    assert generator(torch.rand(1, 3, *size)).shape == (1, 3, *size)
    with pytest.raises(ValueError, match="multiple of"):
        SPADEGenerator(3, (96, 100), ngf=4, num_upsampling=mode)


def test_vae_encoder_sizes():
    official = StyleEncoder()  # 256×256, six convs → 512·4·4 → 256
    assert official.grid == (4, 4) and official.fc_mu.in_features == 512 * 16 and official.fc_mu.out_features == 256
    small = StyleEncoder(nf=4, z_dim=8, input_size=(96, 128), num_layers=5)
    mu, logvar = small(torch.rand(2, 3, 40, 50))  # any input size: resized to input_size first
    assert small.grid == (3, 4) and mu.shape == logvar.shape == (2, 8)


def test_style_image_and_seed_conditioning():
    torch.manual_seed(0)
    method, _ = build("spade-cpu", (H, W), *TINY)
    method.eval()
    label = toy_label()
    style_a, style_b = torch.rand(1, 3, H, W) * 2 - 1, -torch.rand(1, 3, H, W)
    seeded = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = method.sample(label, generator=seeded(0), style_image=style_a)
    assert torch.equal(a, method.sample(label, generator=seeded(0), style_image=style_a))  # same image, same seed
    assert not torch.allclose(a, method.sample(label, generator=seeded(0), style_image=style_b))
    free = method.sample(label, k=2, generator=seeded(3))
    assert not torch.allclose(free[:, 0], free[:, 1])  # different z → different images
    assert not torch.allclose(free, method.sample(label, k=2, generator=seeded(4)))
    method.settings.vae.style_z = "mean"  # z = μ: the same photo always gives the same image
    assert torch.equal(method.sample(label, generator=seeded(1), style_image=style_a),
                       method.sample(label, generator=seeded(2), style_image=style_a))


def test_deterministic_spade_refuses_style_and_k():
    method, _ = build("spade-cityscapes", (H, W), "model.ngf=4", "model.spade_hidden=8", "model.num_upsampling=normal",
                      spec=SPEC)
    with pytest.raises(TypeError, match="vae.enabled=true"):
        method.sample(toy_label(), style_image=torch.zeros(1, 3, H, W))
    with pytest.raises(ValueError, match="deterministic"):
        method.sample(toy_label(), k=2)


def test_camvid_cpu_preset_follows_the_official_default_without_vae():
    """Issue 11 §3: spade-camvid-cpu is the official default generator — no VAE, the start grid is a 3×3 conv of the
    downsampled layout (official ``SPADEGenerator.fc``) — so a layout alone decides the image; the VAE variant, whose
    start grid is Linear(z) and independent of the layout, is the separate spade-camvid-cpu-vae."""
    method, config = build("spade-camvid-cpu", (H, W), *TINY)
    assert not config.settings.vae.enabled and method.encoder is None and config.train.sample_k == 1
    assert isinstance(method.generator.fc, nn.Conv2d) and method.generator.fc.in_channels == method.label_channels
    method.eval()
    other = toy_label()
    other[:, 12:] = CAR
    first = method.sample(toy_label())
    assert torch.equal(first, method.sample(toy_label())) and not torch.equal(first, method.sample(other))

    vae, config = build("spade-camvid-cpu-vae", (H, W), *TINY)
    assert config.settings.vae.enabled and vae.encoder is not None and config.train.sample_k == 3
    assert isinstance(vae.generator.fc, nn.Linear) and vae.generator.fc.in_features == config.settings.vae.z_dim
    assert config.data == load_run_config("spade-camvid-cpu").data  # only the VAE differs


def test_train_step_logs_every_term_and_updates_both_networks():
    torch.manual_seed(0)
    method, _ = build("spade-cpu", (H, W), *TINY, "model.instance_edges=false", "loss.lambda_vgg=0", training=True)
    batch = {"image": torch.rand(2, 3, H, W) * 2 - 1, "label": toy_label(2)}
    g_before = [p.detach().clone() for p in method.generator.parameters()]
    d_before = [p.detach().clone() for p in method.discriminator.parameters()]
    losses = method.train_step(batch, 0)
    assert set(losses) == {"g_gan", "g_feat", "g_kld", "d_real", "d_fake"}  # (VGG off here; on in the CLI test)
    assert losses["g_kld"] > 0 and all(np.isfinite(v) for v in losses.values())
    assert not all(torch.equal(a, b) for a, b in zip(g_before, method.generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, method.discriminator.parameters()))
    assert all(p.requires_grad for p in method.discriminator.parameters())  # unfrozen after the G step


def test_train_and_synthesize_through_cli_and_pipeline(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "spade-cpu", "--out", str(run), "--quiet", *synthetic_overrides(), *TINY,
                 "ema.decay=0.9", "ema.recalibrate_batches=2", "train.sample_k=2"]) == 0
    losses = [json.loads(line) for line in (run / "logs" / "losses.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and {"g_gan", "g_feat", "g_vgg", "g_kld", "d_real", "d_fake"} <= set(losses[-1])
    weights = ckpt.load_weights(ckpt.resolve_checkpoint(run))
    assert {key.split(".")[0] for key in weights} == {"generator", "discriminator", "encoder", "generator_ema"}

    pipe = Pipeline.from_pretrained(run)  # EMA weights are loaded into the generator
    for key, value in pipe.method.generator.state_dict().items():
        assert torch.equal(value, weights[f"generator_ema.{key}"]), key
    raw = Pipeline.from_pretrained(run, use_ema=False)
    assert any(not torch.equal(v, weights[f"generator_ema.{k}"]) for k, v in raw.method.generator.state_dict().items())

    label, photo = synthetic_pair(0)
    _, other = synthetic_pair(1)
    first, again = pipe(label, seed=5, style_image=photo)[0], pipe(label, seed=5, style_image=photo)[0]
    assert first.size == (W, H) and np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(pipe(label, seed=5, style_image=other)[0]))
    assert not np.array_equal(np.asarray(pipe(label, seed=1)[0]), np.asarray(pipe(label, seed=2)[0]))
    assert len(pipe(label, k=3, seed=0)) == 3
    assert Image.open(run / "samples" / "step_0000002.png").size[0] > 2 * W


def test_ema_spectral_norm_is_renormalised_for_the_adversarial_family_too():
    """SPADE/pix2pixHD/SESAME's optional EMA: copied u, v belong to the live W, not the averaged one (issue 11 §2)."""
    from torch.nn.utils import parametrize

    from inverseg.nn import largest_singular_value

    torch.manual_seed(0)
    method, _ = build("spade-cpu", (H, W), *TINY, "ema.decay=0.5", "optim.lr_generator=0.01",
                      "model.instance_edges=false", "vae.enabled=false", training=True)
    batch = {"image": torch.rand(2, 3, H, W) * 2 - 1, "label": toy_label(2)}
    for step in range(3):
        method.train_step(batch, step)
    method.before_checkpoint(lambda count: iter(()))
    method.generator_ema.eval()
    sigmas = [largest_singular_value(m.weight) for m in method.generator_ema.modules()
              if parametrize.is_parametrized(m, "weight")]
    assert sigmas and all(abs(s - 1) < 0.01 for s in sigmas), (min(sigmas), max(sigmas))
