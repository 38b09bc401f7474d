"""pix2pixHD: paper-preset shapes and parameter counts, local enhancer, feature clusters at test time, the
--niter_fix_global freeze, and a short train → Pipeline run through the CLI on the procedural street scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _gan_scenes import CAR, ROAD, SKY, SPEC, H, W, build, synthetic_overrides, synthetic_pair
from inverseg.cli.main import main
from inverseg.labels import get_scheme
from inverseg.methods.gan import build_discriminator
from inverseg.models.pix2pixhd import LocalEnhancer
from inverseg.nn import count_parameters
from inverseg.pipeline import Pipeline
from inverseg.train import checkpoint as ckpt

def toy_batch(batch: int = 2, seed: int = 0) -> dict:
    """Road below sky, two cars (instances 8000, 8001) per image; images coloured per instance."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.full((batch, H, W), ROAD, dtype=torch.long)
    label[:, :12] = SKY
    instance = label.clone()
    for k, left in enumerate((8, 36)):
        label[:, 18:26, left:left + 16] = CAR
        instance[:, 18:26, left:left + 16] = CAR * 1000 + k
    image = torch.rand(batch, 3, H, W, generator=generator) * 0.2 - 0.1
    image[:, 0] += (instance == CAR * 1000).float() - (instance == CAR * 1000 + 1).float()
    return {"image": image.clamp(-1, 1), "label": label, "instance": instance, "name": ["toy"] * batch}


TINY = ("model.ngf=8", "model.n_downsample_global=2", "model.n_blocks_global=1", "features.nef=4",
        "features.n_downsample=2", "features.n_clusters=3", "discriminator.ndf=8", "discriminator.num_layers=3",
        "loss.vgg_weights=null")


def test_paper_preset_512p_parameters_and_a_reduced_resolution_forward():
    """pix2pixhd-512p as officially (G1 ≈ 183 M parameters, OASIS Table 1), run at 32×64 instead of 512×1024."""
    spec = get_scheme("cityscapes-labelids")
    method, config = build("pix2pixhd-512p", (32, 64), spec=spec)
    assert method.label_channels == 35 + 1  # 35 labelIds + edge map, no void channel
    assert count_parameters(method.generator) == pytest.approx(182.5e6, rel=0.005)
    label = torch.randint(0, 35, (1, 32, 64))
    with torch.no_grad():
        assert method.sample(label, k=1).shape == (1, 1, 3, 32, 64)
    discriminator = build_discriminator(config.settings.discriminator, method.label_channels + 3, "normal", 0.02,
                                        zero_bias=False)
    outputs = discriminator(torch.zeros(1, 39, 32, 64))
    assert len(outputs) == 2 and all(len(scale) == 5 for scale in outputs)  # n_layers_D 3 → 4 hidden + logits


def test_local_enhancer_structure_and_sizes():
    """--netG local: G1 at half resolution with 2·ngf, the local branch adds its features, RGB at full size."""
    model = LocalEnhancer(in_channels=5, ngf=4, n_downsample_global=2, n_blocks_global=1, n_local_enhancers=1,
                          n_blocks_local=1)
    assert model.global_generator.head is None and model.factor == 8
    first = model.global_generator.body[1]
    assert first.out_channels == 8  # ngf · 2^n_local_enhancers
    seen = []
    first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    out = model(torch.rand(1, 5, 32, 48))
    assert out.shape == (1, 3, 32, 48) and seen == [torch.Size([1, 5, 22, 30])]  # 16×24 input + reflection pad 3


@pytest.mark.slow
def test_paper_preset_1024p_parameters_and_a_reduced_resolution_forward():
    spec = get_scheme("cityscapes-labelids")
    method, config = build("pix2pixhd-1024p", (64, 128), spec=spec)
    assert isinstance(method.generator, LocalEnhancer) and config.settings.discriminator.num_scales == 3
    assert count_parameters(method.generator) == pytest.approx(182.86e6, rel=0.005)
    with torch.no_grad():
        assert method.sample(torch.randint(0, 35, (1, 64, 128))).shape == (1, 1, 3, 64, 128)


def test_feature_clusters_choose_the_appearance_at_test_time():
    torch.manual_seed(0)
    method, _ = build("pix2pixhd-cpu", (H, W), *TINY)
    batch = toy_batch()
    found = method.fit_clusters([batch])
    # one sky and one road region per image, two cars per image (each > 1/64 of the image) → ≤ 3 centres per class
    assert found == {"sky": 2, "road": 2, "car": 3}
    car_centres = method.clusters.centers[CAR, :3]
    method.eval()
    label = batch["label"][:1]
    style0, style1 = method.sample(label, style=0), method.sample(label, style=1)
    assert not torch.allclose(style0, style1) and torch.equal(style0, method.sample(label, style=0))
    # style=c gives every car cluster c: the generator input holds exactly that centre on the car pixels
    seen = []
    hook = method.generator.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    method.sample(label, style=2)
    hook.remove()
    features = seen[0][0, -3:]  # G's input: one-hot, void, edge, then the 3 feature channels
    cars_mask = label[0] == CAR
    assert torch.allclose(features[:, cars_mask], car_centres[2][:, None].expand(-1, int(cars_mask.sum())))
    a = method.sample(label, k=3, generator=torch.Generator().manual_seed(1))
    b = method.sample(label, k=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # random cluster per instance, reproducible from the generator
    assert any(not torch.equal(a[:, i], a[:, j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    with pytest.raises(ValueError, match="cluster index 0–2"):
        method.sample(label, style=3)


def test_deterministic_model_refuses_style_and_training_requires_instance_maps():
    method, _ = build("pix2pixhd-cpu", (H, W), *TINY, "features.enabled=false", "loss.lambda_vgg=0", training=True)
    label = toy_batch()["label"][:1]
    with pytest.raises(TypeError, match="features.enabled=true"):
        method.sample(label, style=1)
    with pytest.raises(ValueError, match="deterministic"):
        method.sample(label, k=2)
    batch = toy_batch()
    batch.pop("instance")
    with pytest.raises(ValueError, match="model.instance_edges=false"):
        method.train_step(batch, 0)


def test_fix_global_steps_trains_only_the_local_enhancer_first():
    torch.manual_seed(0)
    method, _ = build("pix2pixhd-1024p", (H, W), "model.ngf=4", "model.n_downsample_global=1",
                      "model.n_blocks_global=1", "model.n_blocks_local=1", "discriminator.ndf=8",
                      "discriminator.num_layers=2", "loss.lambda_vgg=0", "optim.fix_global_steps=2", spec=SPEC,
                      training=True)
    global_before = [p.detach().clone() for p in method.generator.global_generator.parameters()]
    local_before = [p.detach().clone() for p in method.generator.enhancers.parameters()]
    method.train_step(toy_batch(), step=0)
    assert all(torch.equal(a, b) for a, b in zip(global_before, method.generator.global_generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(local_before, method.generator.enhancers.parameters()))
    method.train_step(toy_batch(), step=2)
    assert not all(torch.equal(a, b) for a, b in zip(global_before, method.generator.global_generator.parameters()))


def test_train_and_synthesize_through_cli_and_pipeline(tmp_path):
    run = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith(("discriminator", "loss"))]
    assert main(["train", "--config", "pix2pixhd-cpu", "--out", str(run), "--quiet", *synthetic_overrides(),
                 *tiny, "train.sample_k=2"]) == 0
    losses = [json.loads(line) for line in (run / "logs" / "losses.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and {"g_gan", "g_feat", "g_vgg", "d_real", "d_fake"} <= set(losses[-1])
    assert all(np.isfinite(v) for record in losses for k, v in record.items() if k.startswith(("g_", "d_")))
    checkpoint = ckpt.resolve_checkpoint(run)
    weights = ckpt.load_weights(checkpoint)
    assert {key.split(".")[0] for key in weights} == {"generator", "discriminator", "encoder", "clusters"}
    state = ckpt.read_state(checkpoint)
    assert state["method_state"]["feature_clusters"]["road"] >= 2  # fitted before the checkpoint was written

    pipe = Pipeline.from_pretrained(run)
    assert not hasattr(pipe.method, "discriminator")
    # the report's "params": G + feature encoder (the clusters are buffers; no EMA copy exists at inference)
    assert pipe.method.inference_parameter_count() == sum(
        p.numel() for module in (pipe.method.generator, pipe.method.encoder) for p in module.parameters())
    label, photo = synthetic_pair()
    seed_a, seed_a2, seed_b = pipe(label, seed=1), pipe(label, seed=1), pipe(label, seed=7)
    assert np.array_equal(np.asarray(seed_a[0]), np.asarray(seed_a2[0]))
    assert not np.array_equal(np.asarray(seed_a[0]), np.asarray(seed_b[0]))
    style0, style1 = pipe(label, style=0)[0], pipe(label, style=1)[0]
    assert style0.size == (W, H) and not np.array_equal(np.asarray(style0), np.asarray(style1))
    assert pipe(label, style_image=photo)[0].size == (W, H)  # the official --use_encoded_image
