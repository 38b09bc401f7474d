"""Shared adversarial parts: PatchGAN depth naming, GAN objectives (hand-computed), feature matching, spectral norm,
KL, SPADE layer/block, instance-wise pooling, EMA + batch-norm recalibration, k-means, the VGG loss weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inverseg.losses.adversarial import AdversarialLoss, feature_matching_loss, kl_divergence
from inverseg.losses.vgg import PIX2PIXHD_VGG_WEIGHTS, VGGLoss
from inverseg.nn import (
    SPADE,
    MultiScaleDiscriminator,
    PatchDiscriminator,
    SPADEResBlock,
    initialize,
    instance_average_pool,
    largest_singular_value,
    make_ema,
    num_layers_from_pix2pixhd,
    num_layers_from_spade,
    recalibrate_batch_norm,
    segment_index,
    segment_mean,
    spectral_norm,
    update_ema,
)
from inverseg.utils.kmeans import kmeans

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.5, 1.0])


# ------------------------------------------------------------------------------------------ discriminator
def test_pix2pixhd_and_spade_depth_flags_build_the_same_patchgan():
    assert num_layers_from_pix2pixhd(3) == num_layers_from_spade(4) == 4
    d = PatchDiscriminator(in_channels=5, ndf=64, num_layers=4)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (2, 2) for c in convs)
    outputs = d(torch.randn(1, 5, 64, 64))
    # conv4 pad 2: s2 → ⌊(h+4−4)/2⌋+1, s1 → h+1
    assert [tuple(o.shape[1:]) for o in outputs] == [(64, 33, 33), (128, 17, 17), (256, 9, 9), (512, 10, 10),
                                                      (1, 11, 11)]


def test_multiscale_discriminator_downsamples_by_avgpool_without_padding_counts():
    d = MultiScaleDiscriminator(in_channels=4, num_scales=3, ndf=8, num_layers=2, norm="instance", spectral=True)
    seen = []
    for scale in d.scales:
        scale.groups[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.rand(2, 4, 32, 48)
    results = d(x)
    assert len(results) == 3 and all(len(r) == 3 for r in results)
    assert [tuple(s.shape[-2:]) for s in seen] == [(32, 48), (16, 24), (8, 12)]
    expected = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert torch.allclose(seen[1], expected)
    # border cell averages only the 4 real pixels of its 3×3 window (count_include_pad=False)
    assert torch.allclose(expected[..., 0, 0], x[..., :2, :2].mean((-2, -1)))


# ------------------------------------------------------------------------------------------ objectives
def test_hinge_values_and_signs():
    loss = AdversarialLoss("hinge")
    d_real, d_fake = loss.discriminator(REAL, FAKE)
    assert d_real.item() == pytest.approx((0 + 0.5 + 2.0) / 3)  # mean(max(0, 1 − x))
    assert d_fake.item() == pytest.approx((0 + 1.5 + 2.0) / 3)  # mean(max(0, 1 + x))
    assert loss.generator(FAKE).item() == pytest.approx(-(-2.0 + 0.5 + 1.0) / 3)
    # confident, correct D → zero loss; G's loss falls as its logits rise
    assert loss.discriminator(torch.tensor([3.0]), torch.tensor([-3.0]))[0].item() == 0.0
    assert loss.generator(torch.tensor([5.0])) < loss.generator(torch.tensor([1.0]))


def test_least_squares_values_and_signs():
    loss = AdversarialLoss("ls")
    d_real, d_fake = loss.discriminator(REAL, FAKE)
    assert d_real.item() == pytest.approx((1.0 + 0.25 + 4.0) / 3)  # mean((x − 1)²)
    assert d_fake.item() == pytest.approx((4.0 + 0.25 + 1.0) / 3)  # mean(x²)
    assert loss.generator(FAKE).item() == pytest.approx((9.0 + 0.25 + 0.0) / 3)
    assert loss.discriminator(torch.ones(3), torch.zeros(3))[0].item() == 0.0


def test_bce_values_and_non_saturating_generator():
    loss = AdversarialLoss("bce")
    d_real, d_fake = loss.discriminator(REAL, FAKE)
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    assert d_real.item() == pytest.approx((softplus(-2.0) + softplus(-0.5) + softplus(1.0)) / 3, rel=1e-6)
    assert d_fake.item() == pytest.approx((softplus(-2.0) + softplus(0.5) + softplus(1.0)) / 3, rel=1e-6)
    assert loss.generator(FAKE).item() == pytest.approx((softplus(2.0) + softplus(-0.5) + softplus(-1.0)) / 3,
                                                        rel=1e-6)
    # = BCE on sigmoid(x) with target 1 (pix2pixHD --no_lsgan)
    assert d_real.item() == pytest.approx(F.binary_cross_entropy(torch.sigmoid(REAL), torch.ones(3)).item(), rel=1e-6)


def test_multiscale_reduction_sum_vs_mean_uses_the_last_output_of_each_scale():
    scales = [[torch.full((1, 4), 9.0), torch.tensor([[1.0]])], [torch.zeros(1, 2), torch.tensor([[3.0]])]]
    summed = AdversarialLoss("ls", "sum").generator(scales).item()
    averaged = AdversarialLoss("ls", "mean").generator(scales).item()
    assert summed == pytest.approx(0.0 + 4.0) and averaged == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------ feature matching, KL
def test_feature_matching_is_zero_on_identical_features_and_weighted_per_repo():
    features = [[torch.randn(1, 4, 5, 5), torch.randn(1, 8, 3, 3), torch.randn(1, 1, 2, 2)] for _ in range(2)]
    assert feature_matching_loss(features, [[f.clone() for f in s] for s in features]).item() == 0.0
    shifted = [[f + 1.0 for f in s] for s in features]  # every hidden L1 term = 1
    # 2 scales × 2 hidden outputs; spade: λ/num_D per term → 10/2 · 4 = 20
    assert feature_matching_loss(shifted, features, 10.0, "spade").item() == pytest.approx(20.0)
    # pix2pixhd: × 4/(n_layers_D+1) with n_layers_D+1 = 2 hidden outputs → 40
    assert feature_matching_loss(shifted, features, 10.0, "pix2pixhd").item() == pytest.approx(40.0)


def test_feature_matching_detaches_real_features():
    fake = [[torch.zeros(1, 2, requires_grad=True), torch.zeros(1, 1)]]
    real = [[torch.ones(1, 2, requires_grad=True), torch.zeros(1, 1)]]
    feature_matching_loss(fake, real).backward()
    assert fake[0][0].grad is not None and real[0][0].grad is None


def test_kl_divergence_zero_at_the_prior_and_hand_value():
    assert kl_divergence(torch.zeros(2, 8), torch.zeros(2, 8)).item() == 0.0
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # −½ Σ (1 + logσ² − μ² − σ²): first dim ½, second −½(1 + ln2 − 2) = ½ − ½ln2
    assert kl_divergence(mu, logvar).item() == pytest.approx(1.0 - 0.5 * math.log(2.0))
    assert kl_divergence(mu.repeat(4, 1), logvar.repeat(4, 1), "mean").item() == pytest.approx(1.0 - 0.5 * math.log(2))


# ------------------------------------------------------------------------------------------ spectral norm, init
def test_spectral_norm_keeps_the_largest_singular_value_near_one():
    torch.manual_seed(0)
    conv = spectral_norm(nn.Conv2d(8, 16, 3))
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(7.0)
    conv.train()
    for _ in range(30):  # one power iteration per training forward
        conv(torch.randn(1, 8, 6, 6))
    assert largest_singular_value(conv.weight) == pytest.approx(1.0, abs=0.02)
    assert largest_singular_value(conv.parametrizations.weight.original) > 3.0


def test_initialize_schemes_reach_spectrally_normalised_layers():
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Conv2d(64, 64, 3)), nn.Conv2d(64, 64, 3), nn.BatchNorm2d(4))
    initialize(model, "normal", 0.02, zero_bias=True)
    raw = model[0].parametrizations.weight.original
    assert raw.std().item() == pytest.approx(0.02, rel=0.05)
    assert model[1].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model[1].bias.abs().max().item() == 0.0
    assert largest_singular_value(model[0].weight) == pytest.approx(1.0, abs=0.05)  # u, v re-estimated
    keep = nn.Conv2d(4, 4, 3)
    bias = keep.bias.detach().clone()
    initialize(keep, "xavier", 0.02, zero_bias=False)  # pix2pixHD leaves biases at PyTorch's default
    assert torch.equal(keep.bias, bias)


# ------------------------------------------------------------------------------------------ SPADE
def test_spade_layer_modulates_a_parameter_free_norm_with_any_conditioning_map():
    torch.manual_seed(0)
    layer = SPADE(channels=6, cond_channels=5, norm="instance")  # e.g. 3 classes + 2 noise channels (OASIS)
    x, cond = torch.randn(2, 6, 8, 8), torch.randn(2, 5, 4, 4)
    with torch.no_grad():
        for conv in (layer.gamma, layer.beta):
            conv.weight.zero_()
            conv.bias.zero_()
    assert torch.allclose(layer(x, cond), F.instance_norm(x), atol=1e-5)
    with torch.no_grad():
        layer.gamma.bias.fill_(1.0)  # γ = 1 → ×2
        layer.beta.bias.fill_(0.5)
    assert torch.allclose(layer(x, cond), 2 * F.instance_norm(x) + 0.5, atol=1e-5)
    assert len(layer.shared[0].weight) == 128 and layer.shared[0].kernel_size == (3, 3)


def test_spade_resblock_learned_shortcut_and_spectral_norm():
    block = SPADEResBlock(32, 16, cond_channels=3, norm="batch", spectral=True)
    assert block.learned_shortcut and block.conv_s.bias is None and block.conv_0.out_channels == 16
    assert hasattr(block.conv_0, "parametrizations") and not hasattr(block.norm_0.gamma, "parametrizations")
    assert block(torch.randn(2, 32, 4, 4), torch.rand(2, 3, 16, 16)).shape == (2, 16, 4, 4)
    same = SPADEResBlock(16, 16, cond_channels=3, spectral=False)
    assert not same.learned_shortcut and not hasattr(same.conv_0, "parametrizations")


# ------------------------------------------------------------------------------------------ instance pooling
def test_instance_average_pooling_exact_values():
    features = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).view(2, 2, 2, 3)  # (B=2, F=2, H=2, W=3)
    instance = torch.tensor([[[26001, 26001, 7], [26002, 7, 7]],
                             [[7, 7, 7], [26001, 26001, 26001]]])  # same ids in both images, pooled separately
    pooled = instance_average_pool(features, instance)
    # image 0, channel 0 = [[0,1,2],[3,4,5]]: car 1 → (0+1)/2, road → (2+4+5)/3, car 2 → 3
    assert torch.equal(pooled[0, 0], torch.tensor([[0.5, 0.5, 11 / 3], [3.0, 11 / 3, 11 / 3]]))
    # channel 1 = [[6,7,8],[9,10,11]]
    assert torch.equal(pooled[0, 1], torch.tensor([[6.5, 6.5, 29 / 3], [9.0, 29 / 3, 29 / 3]]))
    # image 1, channel 0 = [[12,13,14],[15,16,17]]: road 13, car 16
    assert pooled[1, 0].tolist() == [[13.0, 13.0, 13.0], [16.0, 16.0, 16.0]]
    index, keys = segment_index(instance)
    assert keys.tolist() == [[0, 7, 7], [0, 26001, 26001], [0, 26002, 26002], [1, 7, 7], [1, 26001, 26001]]
    _, counts = segment_mean(features, index, len(keys))
    assert counts.tolist() == [3, 2, 1, 3, 3]


def test_instance_pooling_splits_ids_that_span_classes_and_is_differentiable():
    features = torch.tensor([[[[1.0, 3.0, 5.0, 7.0]]]], requires_grad=True)
    instance = torch.zeros(1, 1, 4, dtype=torch.long)  # one id …
    label = torch.tensor([[[0, 0, 1, 1]]])               # … over two classes → two segments
    pooled = instance_average_pool(features, instance, label)
    assert pooled.flatten().tolist() == [2.0, 2.0, 6.0, 6.0]
    pooled.sum().backward()
    assert features.grad.flatten().tolist() == [1.0, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------ EMA
def test_ema_update_averages_parameters_and_copies_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = make_ema(model)
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, model, decay=0.9)
    for old, new, live in zip(before, ema.parameters(), model.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * live)
    assert torch.equal(ema[1].running_mean, torch.full((2,), 3.0))
    update_ema(ema, model, decay=0.5, buffers="average")
    assert torch.equal(ema[1].running_mean, torch.full((2,), 3.0))


def test_recalibrate_batch_norm_recomputes_exact_statistics_only_in_bn_layers():
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Conv2d(1, 2, 1)), nn.BatchNorm2d(2)).eval()
    u_before = model[0].parametrizations.weight[0]._u.clone()
    batches = [torch.randn(4, 1, 3, 3) + 5.0 for _ in range(3)]
    used = recalibrate_batch_norm(model, lambda net, batch: net(batch), batches)
    assert used == 3 and not model.training and not model[1].training
    with torch.no_grad():
        activations = torch.cat([model[0](b) for b in batches])
    assert torch.allclose(model[1].running_mean, activations.mean((0, 2, 3)), atol=1e-5)
    assert torch.equal(model[0].parametrizations.weight[0]._u, u_before)  # spectral norm untouched
    assert model[1].momentum == 0.1  # restored


# ------------------------------------------------------------------------------------------ k-means, VGG loss
def test_kmeans_is_deterministic_and_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(30, 3, generator=generator) * 0.05 + c for c in (-2.0, 0.0, 2.0)])
    centres, assignment, _ = kmeans(points, 3, seed=0)
    assert sorted(round(float(c), 1) for c in centres.mean(1)) == [-2.0, 0.0, 2.0]
    assert len(assignment.unique()) == 3
    again, _, _ = kmeans(points, 3, seed=0)
    assert torch.equal(centres, again)
    assert kmeans(points[:2], 10)[0].shape == (2, 3)  # k capped at N


def test_vgg_loss_uses_the_pix2pixhd_layer_weights():
    class Fake(nn.Module):
        def forward(self, x):
            return {f"relu{i}_1": x * 0 + x.mean() * i for i in range(1, 6)}
    loss = VGGLoss(Fake())
    fake, real = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    # |Δ| of layer i = i → Σ w_i · i
    assert loss(fake, real).item() == pytest.approx(sum(w * i for i, w in enumerate(PIX2PIXHD_VGG_WEIGHTS, 1)))
    assert PIX2PIXHD_VGG_WEIGHTS == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


@pytest.mark.parametrize("kind", ["hinge", "ls"])
def test_one_discriminator_step_lowers_its_loss_on_a_fixed_batch(kind):
    torch.manual_seed(0)
    d = initialize(MultiScaleDiscriminator(in_channels=4, num_scales=2, ndf=8, num_layers=3, spectral=True),
                   "xavier", 0.02)
    optimizer = torch.optim.Adam(d.parameters(), lr=4e-4, betas=(0.0, 0.9))
    objective = AdversarialLoss(kind)
    real, fake = torch.rand(2, 4, 16, 16), torch.rand(2, 4, 16, 16) * 0.2

    def loss() -> torch.Tensor:
        d_real, d_fake = objective.discriminator(d(real), d(fake))
        return d_real + d_fake

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert loss().item() < before.item()
