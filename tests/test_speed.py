"""Issue 13's faster paths compute what the plain ones do: the spectral-norm parametrisation with the one-dot-product
backward, Adam's fused/foreach kernels (``optim.adam``), the SPADE block's single resize of its condition, the
optimiser kernel surviving a resume, and ``train.malloc``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from _gan_scenes import SPEC, H, W, build, toy_label
from inverseg.config import load_run_config
from inverseg.methods.gan import TTURConfig, adam
from inverseg.nn.layers import SpectralNorm, spectral_norm
from inverseg.nn.spade import SPADEResBlock
from inverseg.train.checkpoint import flatten_optimizers, unflatten_optimizers
from inverseg.utils.malloc import set_malloc

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny networks of the three recipes the issue compares (spectral norm in SPADE's G and D and in OASIS's G and D)
RECIPES = {
    "spade": ("spade-cpu", "model.ngf=4", "model.spade_hidden=8", "vae.nf=4", f"vae.input_size=[{H},{W}]",
              "vae.num_layers=5", "vae.z_dim=8", "discriminator.ndf=8", "discriminator.num_layers=3",
              "loss.vgg_weights=null", "model.instance_edges=false"),
    "pix2pixhd": ("pix2pixhd-cpu", "model.ngf=8", "model.n_downsample_global=2", "model.n_blocks_global=1",
                  "features.enabled=false", "discriminator.ndf=8", "discriminator.num_layers=3",
                  "loss.vgg_weights=null", "model.instance_edges=false"),
    "oasis": ("oasis-cpu", "model.ngf=4", "model.spade_hidden=8", "model.z_dim=8",
              "discriminator.channels=[8,8,16,16,16]", "discriminator.last_channels=8", "ema.decay=0.9"),
}


def conv_pair() -> tuple[nn.Conv2d, nn.Conv2d]:
    """The same conv (weights and power-iteration vectors) under torch's spectral norm and under ours."""
    torch.manual_seed(0)
    plain = torch_spectral_norm(nn.Conv2d(16, 32, 3, padding=1))
    torch.manual_seed(0)
    ours = spectral_norm(nn.Conv2d(16, 32, 3, padding=1))
    return plain, ours


def test_spectral_norm_same_forward_buffers_keys_and_gradient_bit_for_bit():
    plain, ours = conv_pair()
    assert isinstance(ours.parametrizations.weight[0], SpectralNorm)
    assert list(ours.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 16, 8, 8)
    outputs = [conv(x) for conv in (plain, ours)]
    assert torch.equal(outputs[0], outputs[1])  # power iteration included
    assert torch.equal(ours.parametrizations.weight[0]._u, plain.parametrizations.weight[0]._u)
    for output in outputs:
        (output ** 2).mean().backward()
    assert torch.equal(ours.parametrizations.weight.original.grad, plain.parametrizations.weight.original.grad)
    assert torch.equal(ours.bias.grad, plain.bias.grad)
    plain.eval(), ours.eval()  # eval mode and no_grad: torch's own forward
    with torch.no_grad():
        assert torch.equal(plain(x), ours(x))


def test_spectral_norm_weight_used_by_three_forwards_gradient_within_rounding():
    """Several forwards before one backward (OASIS's D step: fake, real, LabelMix): autograd adds the per-use terms
    in its own order, so the sum is only reassociated."""
    plain, ours = conv_pair()
    inputs = torch.randn(3, 1, 16, 8, 8)
    for conv in (plain, ours):
        sum((conv(x) ** 2).mean() for x in inputs).backward()
    grads = [conv.parametrizations.weight.original.grad for conv in (plain, ours)]
    assert not torch.equal(grads[0], grads[1])  # (so this test shows what the tolerance is for)
    assert (grads[1] - grads[0]).abs().max() <= 1e-6 * grads[0].abs().max()  # rounding of the largest entries


def test_adam_kernels_foreach_bit_identical_fused_within_rounding_and_bad_name():
    torch.manual_seed(0)
    start = [torch.randn(64, 32, 3, 3) * 0.02, torch.randn(32)]
    results = {}
    for kernel in ("loop", "foreach", "fused"):
        params = [nn.Parameter(p.clone()) for p in start]
        optimizer = adam(params, 1e-3, TTURConfig(betas=(0.0, 0.9), adam=kernel))
        generator = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator)
            optimizer.step()
        results[kernel] = params
    for loop, foreach, fused in zip(results["loop"], results["foreach"], results["fused"]):
        assert torch.equal(loop, foreach)
        torch.testing.assert_close(fused, loop, rtol=1e-6, atol=1e-8)
        assert (loop - start[0 if loop.dim() == 4 else 1]).abs().max() > 1e-3  # the steps moved them
    assert adam([nn.Parameter(torch.ones(1))], 1e-3, TTURConfig()).defaults["fused"] is True  # the default
    with pytest.raises(ValueError, match="optim.adam must be one of loop, foreach, fused, got 'fast'"):
        adam([nn.Parameter(torch.ones(1))], 1e-3, TTURConfig(adam="fast"))


def train_steps(recipe: str, steps: int, plain_spectral_norm: bool, *overrides: str, monkeypatch) -> dict:
    """Build a tiny method, take ``steps`` train steps on one toy batch; → its state dict and the losses."""
    preset, *settings = RECIPES[recipe]
    with monkeypatch.context() as patch:
        if plain_spectral_norm:  # before issue 13: autograd through torch's parametrisation
            patch.setattr(SpectralNorm, "forward", _SpectralNorm.forward)
        torch.manual_seed(0)
        method, _ = build(preset, (H, W), *settings, *overrides, training=True)
        method.train()
        generator = torch.Generator().manual_seed(0)
        batch = {"label": toy_label(2), "image": torch.rand(2, 3, H, W, generator=generator) * 2 - 1}
        losses = [method.train_step(batch, step) for step in range(steps)]
    return {key: value.detach().clone() for key, value in method.state_dict().items()}, losses


def differing(a: dict, b: dict, prefix: str = "", tolerance: float = 1e-6) -> tuple[int, int]:
    """(elements differing by more than ``tolerance``, elements) over the floating-point entries under ``prefix``."""
    keys = [key for key in a if key.startswith(prefix) and a[key].is_floating_point()]
    return (sum(int(((a[k].double() - b[k].double()).abs() > tolerance).sum()) for k in keys),
            sum(a[k].numel() for k in keys))


@pytest.mark.parametrize("recipe", ["spade", "pix2pixhd"])
def test_three_steps_bit_identical_with_the_plain_spectral_norm_and_loop_adam(recipe, monkeypatch):
    """SPADE uses each spectrally normalised weight once per backward: the new backward changes no bit."""
    plain, plain_losses = train_steps(recipe, 3, True, "optim.adam=loop", monkeypatch=monkeypatch)
    faster, losses = train_steps(recipe, 3, False, "optim.adam=loop", monkeypatch=monkeypatch)
    assert plain.keys() == faster.keys() and losses == plain_losses
    assert all(torch.equal(plain[key], faster[key]) for key in plain)


def test_oasis_step_generator_bit_identical_discriminator_within_rounding(monkeypatch):
    """OASIS's D step runs D three times before one backward: its gradient is summed in another order (≤ 2e-7
    relative), and Adam turns the sign of a gradient that is ~0 into ±lr, so a few D weights differ by ≤ 2·lr."""
    plain, plain_losses = train_steps("oasis", 1, True, "optim.adam=loop", monkeypatch=monkeypatch)
    faster, losses = train_steps("oasis", 1, False, "optim.adam=loop", monkeypatch=monkeypatch)
    assert losses == plain_losses
    assert all(torch.equal(plain[key], faster[key]) for key in plain if key.startswith("generator."))
    bad, total = differing(plain, faster, "discriminator.")
    assert bad < 1e-3 * total
    assert max(float((plain[k] - faster[k]).abs().max()) for k in plain if k.startswith("discriminator.")) <= 8e-4


@pytest.mark.parametrize("recipe", ["spade", "pix2pixhd"])
def test_three_steps_fused_adam_within_rounding(recipe, monkeypatch):
    """The fused kernel rounds the update differently; where a gradient is rounding noise around 0 (e.g.
    pix2pixHD's conv biases before instance norm), Adam makes that noise ±lr, as a different thread count would:
    under 1 % of G's and D's entries move by more than 1e-6, none by more than 3 steps × 2·lr."""
    loop, loop_losses = train_steps(recipe, 3, False, "optim.adam=loop", monkeypatch=monkeypatch)
    fused, losses = train_steps(recipe, 3, False, monkeypatch=monkeypatch)  # the default kernel
    assert losses[0] == loop_losses[0]  # the first step's losses come before any update
    torch.manual_seed(0)
    method, config = build(RECIPES[recipe][0], (H, W), *RECIPES[recipe][1:], training=True)
    start = method.state_dict()
    for prefix in ("generator.", "discriminator."):
        bad, total = differing(loop, fused, prefix)
        assert bad < 0.01 * total
        assert differing(loop, start, prefix)[0] > 0.3 * total  # the three steps moved most entries
    lr = max(config.settings.optim.lr_generator, config.settings.optim.lr_discriminator)
    parameters = {name for name, _ in method.named_parameters()}
    assert max(float((loop[k] - fused[k]).abs().max()) for k in parameters) <= 3 * 2 * lr


def test_spade_block_resizes_its_condition_once_with_the_same_output(monkeypatch):
    torch.manual_seed(0)
    block = SPADEResBlock(8, 4, 5, norm="batch", spectral=False, hidden=6)
    x, cond = torch.randn(2, 8, 6, 8), torch.rand(2, 5, 24, 32)
    calls = []
    original = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, "interpolate", lambda *a, **k: calls.append(1) or original(*a, **k))
    output = block(x, cond)
    assert len(calls) == 1  # three modulations (the shortcut's too), one resize
    monkeypatch.setattr(torch.nn.functional, "interpolate", original)
    # the pre-issue-13 block: every modulation resized the full-resolution condition itself
    shortcut = block.conv_s(block.norm_s(x, cond))
    dx = block.conv_0(nn.functional.leaky_relu(block.norm_0(x, cond), 0.2))
    dx = block.conv_1(nn.functional.leaky_relu(block.norm_1(dx, cond), 0.2))
    assert torch.equal(output, shortcut + dx)


def test_resume_keeps_the_configured_adam_kernel():
    params = [nn.Parameter(torch.randn(4, 4))]
    written = adam(params, 1e-3, TTURConfig(adam="loop"))
    params[0].grad = torch.ones(4, 4)
    written.step()
    tensors, info = flatten_optimizers({"generator": written})
    resumed = adam(params, 1e-3, TTURConfig(adam="fused"))
    unflatten_optimizers({"generator": resumed}, tensors, info)
    assert resumed.param_groups[0]["fused"] is True and resumed.param_groups[0]["foreach"] is None
    assert torch.equal(resumed.state[params[0]]["exp_avg"], written.state[params[0]]["exp_avg"])
    resumed.step()  # the fused kernel accepts the restored state


def test_malloc_option():
    assert load_run_config("spade-cpu").train.malloc == "default"
    assert set_malloc("default") is False
    assert set_malloc("retain") is True  # glibc (the test machine)
    with pytest.raises(ValueError, match="train.malloc must be one of default, retain, got 'huge'"):
        set_malloc("huge")
