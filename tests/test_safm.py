"""SAFM: the Shape-aware Position Descriptor (vectorised vs direct, hand-computed cases, outlines, cache), the
conditional depthwise convolution, SAFM layers, the two-stream discriminator, paper-preset parameter counts
against the official architecture, the semantic-alignment loss, and short training runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from _gan_scenes import SPEC, H, W, build, synthetic_overrides, synthetic_pair, toy_label
from _spd_direct import spd as direct_spd
from inverseg.cli.main import main
from inverseg.labels import get_scheme
from inverseg.labels.shape_context import SPDCache, outer_outline, shape_counts, shape_descriptor
from inverseg.nn import SAFM, ShapeConditioning, TwoStreamPatchDiscriminator, conditional_depthwise_conv
from inverseg.nn import count_parameters
from inverseg.pipeline import Pipeline

TINY = ("model.ngf=4", "model.spade_hidden=8", "model.shape_hidden=4", "vae.nf=4", f"vae.input_size=[{H},{W}]",
        "vae.num_layers=5", "vae.z_dim=8", "segmenter.channels=[8,8,8]", "segmenter.last_channels=4")


# --------------------------------------------------------------------------------------------- SPD
def random_region_maps(count: int, seed: int = 0):
    """Small maps with what breaks shape code: noise, blobs with holes and islands, one-pixel regions, void."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = (int(v) for v in rng.integers(3, 13, 2))
        kind = index % 3
        if kind == 0:
            yield rng.integers(-1, 4, (height, width))
        elif kind == 1:
            yield (ndimage.gaussian_filter(rng.random((height, width)), 1.3) * 9).astype(int) - 2
        else:
            ring = np.zeros((height, width), int)
            ring[1:-1, 1:-1] = 1
            ring[2:-2, 2:-2] = 2  # a hole in region 1 …
            ring[height // 2, width // 2] = 1  # … with an island of region 1 inside it
            yield ring


def test_spd_vectorised_equals_the_direct_pair_by_pair_computation():
    for regions in random_region_maps(36):
        expected = direct_spd(regions)
        got = shape_descriptor(torch.from_numpy(regions)).numpy()
        np.testing.assert_array_equal(got, expected)


def test_spd_hand_computed_two_pixel_region():
    """Region (0,0)-(0,1): both pixels are outline; max r = 1, so the neighbour is at r_n = 2 (outermost ring 1)
    and the pixel itself at r = 0 (ring 6) with angle π (−0.0 column difference, as officially)."""
    regions = torch.tensor([[0, 0, -1]])
    descriptor = shape_descriptor(regions)
    ring6_sector6 = 5 * 12 + 6
    left, right = descriptor[:, 0, 0], descriptor[:, 0, 1]
    assert left[ring6_sector6] == right[ring6_sector6] == 0.5
    assert left[0] == 0.5   # neighbour to the right: Δcol = +1 → θ = 0 → sector 0, ring 1
    assert right[6] == 0.5  # neighbour to the left: θ = π → sector 6, ring 1
    assert descriptor[:, 0, 2].abs().sum() == 0  # no region: all zero
    assert shape_descriptor(torch.tensor([[3]])).abs().sum() == 0  # one-pixel region: 0/0 counts nowhere (official)


def test_outline_ignores_holes_and_islands_inside_them():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    mask[2:5, 2:5] = False  # hole
    mask[3, 3] = True       # island in the hole
    outline = outer_outline(mask)
    expected = np.zeros_like(mask)
    expected[1:6, 1:6] = True
    expected[2:5, 2:5] = False
    np.testing.assert_array_equal(outline, expected)
    edge = np.ones((3, 4), bool)  # touching the image border: the border pixels are outline
    np.testing.assert_array_equal(outer_outline(edge), ~np.pad(np.ones((1, 2), bool), 1, constant_values=False))


def test_spd_is_normalised_inside_regions_and_zero_outside():
    label = toy_label(2)
    regions = torch.where(label == SPEC.ignore_index, torch.full_like(label, -1), label)
    descriptor = shape_descriptor(regions)
    assert descriptor.shape == (2, 72, H, W)
    totals = descriptor.sum(1)
    assert torch.allclose(totals[regions >= 0], torch.ones(()))
    assert torch.all(totals[regions < 0] == 0)


def test_spd_cache_hits_by_content_and_a_flip_is_a_new_entry():
    label = toy_label()[0]
    label[20:24, 30:50] = 8  # an asymmetric second car, so that the flip differs
    regions = torch.where(label == SPEC.ignore_index, torch.full_like(label, -1), label)
    cache = SPDCache(max_megabytes=8)
    first = shape_descriptor(regions, cache)
    assert (cache.hits, cache.misses) == (0, 1)
    assert torch.equal(shape_descriptor(regions.clone(), cache), first) and cache.hits == 1
    flipped = regions.flip(-1)
    from_cache = shape_descriptor(flipped, cache)
    assert cache.misses == 2 and torch.equal(from_cache, shape_descriptor(flipped))
    assert not torch.equal(from_cache, first.flip(-1))  # a flip is not a mirrored copy (angles change bins)
    tiny = SPDCache(max_megabytes=0.0001)  # smaller than one entry: nothing is kept
    shape_descriptor(regions, tiny)
    shape_descriptor(regions, tiny)
    assert tiny.hits == 0 and not tiny.entries


def test_spd_counts_match_a_large_map_chunked():
    """Regions larger than one chunk of pairs give the same counts as the unchunked computation."""
    from inverseg.labels import shape_context

    regions = torch.zeros(40, 60, dtype=torch.long)
    regions[10:30, 5:50] = 1
    whole = shape_counts(regions)
    original = shape_context.PAIRS_PER_CHUNK
    try:
        shape_context.PAIRS_PER_CHUNK = 1000
        assert torch.equal(shape_counts(regions), whole)
    finally:
        shape_context.PAIRS_PER_CHUNK = original


# --------------------------------------------------------------------------------------------- layers
def test_conditional_depthwise_conv_equals_a_direct_loop_and_a_grouped_conv():
    torch.manual_seed(0)
    x, kernels = torch.randn(2, 3, 5, 6), torch.randn(2, 27, 5, 6)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    direct = torch.zeros_like(x)
    for n in range(2):
        for c in range(3):
            for i in range(5):
                for j in range(6):
                    taps = padded[n, c, i:i + 3, j:j + 3].reshape(-1)
                    direct[n, c, i, j] = (taps * kernels[n, c * 9:(c + 1) * 9, i, j]).sum()
    assert torch.allclose(conditional_depthwise_conv(x, kernels), direct, atol=1e-5)
    weight = torch.randn(3, 1, 3, 3)  # the same kernel everywhere = an ordinary depthwise convolution
    constant = weight.reshape(1, 27, 1, 1).expand(2, 27, 5, 6)
    grouped = torch.nn.functional.conv2d(x, weight, padding=1, groups=3)
    assert torch.allclose(conditional_depthwise_conv(x, constant), grouped, atol=1e-5)
    with pytest.raises(ValueError, match="must have shape"):
        conditional_depthwise_conv(x, kernels[:, :9])


def test_safm_layer_modulates_with_shape_and_matches_its_parts():
    torch.manual_seed(0)
    layer = SAFM(channels=8, cond_channels=5 + 72, norm="batch", kernel_size=3, hidden=16, shape_hidden=6).eval()
    x = torch.randn(2, 8, 12, 16)
    layout = torch.zeros(2, 5, 24, 32)
    layout[:, 1] = 1
    spd_a = torch.rand(2, 72, 24, 32)
    spd_b = torch.rand(2, 72, 24, 32)
    out_a = layer(x, torch.cat([layout, spd_a], 1))
    assert out_a.shape == x.shape
    assert not torch.allclose(out_a, layer(x, torch.cat([layout, spd_b], 1)))  # shape changes the modulation
    # the computation spelled out: nearest resize → shape conditioning → SPADE head
    cond = torch.nn.functional.interpolate(torch.cat([layout, spd_a], 1), size=(12, 16), mode="nearest")
    conditioned = layer.shape(cond)
    assert conditioned.shape[1] == 5 + 72 + 6 and torch.equal(conditioned[:, :77], cond)
    hidden = layer.shared(conditioned)
    assert torch.allclose(out_a, layer.norm(x) * (1 + layer.gamma(hidden)) + layer.beta(hidden), atol=1e-6)
    # the convolved SPD depends on the semantics through the predicted kernels
    other_layout = torch.roll(cond[:, :5], 1, dims=1)
    shifted = layer.shape(torch.cat([other_layout, cond[:, 5:]], 1))
    assert not torch.allclose(shifted[:, 77:], conditioned[:, 77:])
    with pytest.raises(ValueError, match="72 SPD channels"):
        SAFM(8, 72)


def test_two_stream_discriminator_fuses_semantics_only_at_the_end():
    torch.manual_seed(0)
    disc = TwoStreamPatchDiscriminator(in_channels=5 + 3, ndf=8, num_layers=4, spectral=True).eval()
    image, semantics = torch.randn(1, 3, 32, 32), torch.rand(1, 5, 32, 32)
    outputs = disc(torch.cat([semantics, image], 1))
    assert [o.shape[1] for o in outputs] == [8, 16, 32, 64, 1]
    changed = disc(torch.cat([torch.rand(1, 5, 32, 32), image], 1))
    assert all(torch.equal(a, b) for a, b in zip(outputs[:-1], changed[:-1]))  # image features: image only
    assert not torch.allclose(outputs[-1], changed[-1])
    features = outputs[-2]
    fused = features + features * disc.semantic(semantics).sum(1, keepdim=True)
    assert torch.allclose(outputs[-1], disc.output(fused), atol=1e-6)
    body = sum(16 * a * b for a, b in ((8, 16), (16, 32), (32, 64)))  # normalised convs: no bias
    assert count_parameters(disc) == (16 * 5 * 8 + 8) + (16 * 3 * 8 + 8) + 2 * body + (16 * 64 + 1)


# --------------------------------------------------------------------------------------------- paper presets
def conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def official_generator_parameters(semantic_nc: int, ngf: int = 64, cityscapes: bool = False) -> int:
    """Parameter count of cszy98/SAFM's SAFMGenerator, written out from generator.py / architecture.py /
    normalization.py (incl. DepthConv's unused batch norms, 2 × 36 parameters each)."""
    shape_stage = conv(36, 36) + 2 * (conv(36, 36) + conv(36, 36 * 9)) + 2 * 72  # + pre_seg / pre_dis below

    def norm(channels: int) -> int:
        if cityscapes:  # SPADE with mlp_shared on semantic_nc + 36
            return conv(semantic_nc + 36, 128) + 2 * conv(128, channels)
        return (conv(semantic_nc - 72, 36) + conv(72, 36) + shape_stage - conv(36, 36) + conv(semantic_nc + 36, 128)
                + 2 * conv(128, channels))

    def block(fin: int, fout: int) -> int:
        middle = min(fin, fout)
        total = conv(fin, middle) + conv(middle, fout) + norm(fin) + norm(middle)
        return total + (conv(fin, fout, 1, bias=False) + norm(fin) if fin != fout else 0)

    widths = [16 * ngf, 16 * ngf, 16 * ngf, 16 * ngf, 8 * ngf, 4 * ngf, 2 * ngf, ngf]
    total = conv(semantic_nc, 16 * ngf) + sum(block(a, b) for a, b in zip(widths[:-1], widths[1:])) + conv(ngf, 3)
    if cityscapes:  # generator-level pre_seg (36 → 36), pre_dis (72 → 36) and the depthwise kernel heads
        total += conv(36, 36) + conv(72, 36) + shape_stage - conv(36, 36)
    return total


def shape_modules(module: torch.nn.Module) -> int:
    return sum(isinstance(m, ShapeConditioning) for m in module.modules())


def test_paper_preset_cityscapes_parameters_and_a_reduced_resolution_forward():
    method, config = build("safm-cityscapes", (64, 128), spec=get_scheme("cityscapes-labelids"))
    assert method.label_channels == 36 and config.settings.model.placement == "input"
    official = official_generator_parameters(35 + 1 + 72, cityscapes=True)
    assert shape_modules(method.generator) == 1
    assert count_parameters(method.generator) + 144 == official  # without the unused DepthConv batch norms
    assert config.settings.spd.min_instance_id == 1000 and config.train.batch_size == 4
    label = torch.randint(0, 35, (1, 64, 128))
    instance = label * 1000 + (torch.arange(128) // 32)  # four "instances" per class
    with torch.no_grad():
        assert method.sample(label, instance=instance).shape == (1, 1, 3, 64, 128)


@pytest.mark.slow
@pytest.mark.parametrize("preset, scheme, semantic_nc", [("safm-ade20k", "ade20k", 151 + 72),
                                                         ("safm-coco", "cocostuff", 184 + 72)])
def test_paper_presets_ade20k_and_coco(preset, scheme, semantic_nc):
    method, config = build(preset, (64, 64), spec=get_scheme(scheme))
    assert method.label_channels + 72 == semantic_nc and config.settings.model.placement == "blocks"
    blocks = shape_modules(method.generator)
    assert blocks == 2 * 7 + 4  # two SAFM layers per ResBlk, three with a learned shortcut (4 of the 7)
    assert count_parameters(method.generator) + 144 * blocks == official_generator_parameters(semantic_nc)
    with torch.no_grad():
        assert method.sample(torch.randint(0, 150, (1, 64, 64))).shape == (1, 1, 3, 64, 64)


# --------------------------------------------------------------------------------------------- recipe
def test_discriminator_and_segmenter_see_no_spd_and_losses_are_logged():
    torch.manual_seed(0)
    method, _ = build("safm-cpu", (H, W), *TINY, "discriminator.ndf=8", "discriminator.num_layers=3",
                      "loss.lambda_vgg=0", "loss.fake_seg_start=1", training=True)
    assert method.discriminator.scales[0].semantic[0][0].in_channels == method.label_channels  # 11 + void + edge
    assert method.segmenter.classifier.out_channels == 12  # 11 classes + don't care
    label = toy_label(2)
    instance = torch.where(label == 8, 8000, label)
    batch = {"image": torch.rand(2, 3, H, W) * 2 - 1, "label": label, "instance": instance}
    seg_before = [p.detach().clone() for p in method.segmenter.parameters()]
    first = method.train_step(batch, 0)
    assert set(first) == {"g_gan", "g_feat", "g_kld", "g_seg_real", "d_real", "d_fake"}  # fake term not yet
    second = method.train_step(batch, 1)
    assert "g_seg_fake" in second and all(np.isfinite(v) for v in second.values())
    assert not all(torch.equal(a, b) for a, b in zip(seg_before, method.segmenter.parameters()))
    method.settings.model.instance_edges = False  # (the edge channel would complain first)
    with pytest.raises(ValueError, match="no instance maps.*fix: set spd.source=label"):
        method.layout(label, None, training=True)


def test_segmentation_targets_and_balanced_weights():
    method, _ = build("safm-cpu", (H, W), *TINY, training=True)
    label = torch.tensor([[[0, 0, 0, 3], [3, 3, 11, 11]]])  # 3 × class 0, 3 × class 3, 2 × void
    targets, weights = method.segmentation_targets(label)
    assert targets.tolist() == [[[0, 0, 0, 3], [3, 3, 11, 11]]]  # void → the don't-care output (index 11)
    expected = 8 / (2 * 3)  # B·H·W / (K · count_c), K = 2 classes present
    assert torch.allclose(weights, torch.tensor([[[expected] * 4, [expected] * 2 + [0.0, 0.0]]]))
    method.settings.loss.seg_drop_last_class = True  # ADE20K quirk: the last class (10) gets weight 0
    _, weights = method.segmentation_targets(torch.tensor([[[10, 0]]]))
    assert weights.tolist() == [[[0.0, 2.0]]]  # B·H·W = 2 pixels, one class present once


def test_sampling_derives_the_spd_from_the_label_or_a_given_instance_map():
    method, _ = build("safm-cpu", (H, W), *TINY, "vae.enabled=false")
    method.eval()
    label = toy_label()
    regions = method.regions(label, None)
    assert torch.equal(regions, torch.where(label == SPEC.ignore_index, torch.full_like(label, -1), label))
    instance = torch.where(label == 8, 8001, label)
    assert torch.equal(method.regions(label, instance), torch.where(instance >= 1000, instance, -1))
    assert not torch.equal(method.sample(label), method.sample(label, instance=instance))
    with pytest.raises(ValueError, match="spd.source must be"):
        build("safm-cpu", (H, W), *TINY, "spd.source=instances")


def test_short_training_run_on_procedural_scenes_lowers_the_losses():
    """30 steps on 4 fixed procedural scenes (≈ 12 CPU-s): the segmentation network learns the real images and
    G its VGG and feature-matching terms (a 10× learning rate, as only the direction is checked)."""
    from inverseg.data import DataConfig, open_dataset
    from inverseg.train.trainer import collate

    torch.manual_seed(0)
    method, _ = build("safm-cpu", (H, W), *TINY, "model.ngf=8", "discriminator.ndf=8", "discriminator.num_layers=3",
                      "segmenter.channels=[16,16,16]", "segmenter.last_channels=16", "loss.vgg_weights=null",
                      "loss.fake_seg_start=0", "optim.lr_generator=2e-3", training=True)
    scenes = open_dataset(DataConfig(dataset="synthetic", size=(H, W), length=4), augment=False)
    batch = collate([scenes[i] for i in range(4)])
    history = [method.train_step(batch, step) for step in range(30)]

    def mean(key: str, part: slice) -> float:
        return float(np.mean([losses[key] for losses in history[part]]))

    for key in ("g_seg_real", "g_vgg", "g_feat"):
        assert mean(key, slice(-4, None)) < 0.8 * mean(key, slice(0, 4)), key


def test_train_and_synthesize_through_cli_and_pipeline(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "safm-cpu", "--out", str(run), "--quiet", *synthetic_overrides(), *TINY,
                 "loss.fake_seg_start=1", "train.sample_k=2"]) == 0
    losses = [json.loads(line) for line in (run / "logs" / "losses.jsonl").read_text().splitlines()]
    assert {"g_seg_real", "g_seg_fake", "g_vgg", "g_kld"} <= set(losses[-1])
    state = json.loads((run / "checkpoints" / "step_0000002" / "state.json").read_text())
    assert state["method_state"]["spd_cache"]["misses"] >= 4
    pipe = Pipeline.from_pretrained(run)
    assert pipe.method.segmenter is None  # training-only
    label, photo = synthetic_pair(0)
    first, again = pipe(label, seed=3, style_image=photo)[0], pipe(label, seed=3, style_image=photo)[0]
    assert first.size == (W, H) and np.array_equal(np.asarray(first), np.asarray(again))
    assert len(pipe(label, k=3, seed=0)) == 3
