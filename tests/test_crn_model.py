"""CRNGenerator (paper §3.2): module widths and resolutions, label/feature routing, presets, parameter counts."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inverseg.models.crn import CRN_PRESETS, CRNGenerator, build_crn


def expected_parameters(in_channels: int, widths: list[int], num_outputs: int) -> int:
    """Paper §3.2 by formula: per module two bias-free 3×3 convs + two per-channel layer-norm affines."""
    total, previous = 0, 0
    for width in widths:
        total += 9 * (in_channels + previous) * width + 9 * width * width + 2 * 2 * width
        previous = width
    return total + previous * 3 * num_outputs + 3 * num_outputs  # 1×1 conv to RGB with bias


def one_hot_label(channels: int, size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, channels, (batch, *size), generator=generator)
    return F.one_hot(ids, channels).permute(0, 3, 1, 2).float()


def record_convs(model: CRNGenerator) -> tuple[list, list]:
    """Hooks recording (input shape, output shape) of every module's two convolutions."""
    records: list = []
    handles = []
    for index, module in enumerate(model.refine):
        for name in ("conv1", "conv2"):
            def hook(_module, inputs, output, index=index, name=name):
                records.append((index, name, tuple(inputs[0].shape), tuple(output.shape)))
            handles.append(getattr(module, name).register_forward_hook(hook))
    return records, handles


def check_module_shapes(model: CRNGenerator, records: list) -> None:
    assert len(records) == 2 * len(model.widths)
    for index, width in enumerate(model.widths):
        height, width_px = model.resolution(index)
        conv1 = next(r for r in records if r[:2] == (index, "conv1"))
        conv2 = next(r for r in records if r[:2] == (index, "conv2"))
        in_channels = model.in_channels + (model.widths[index - 1] if index else 0)
        assert conv1[2] == (1, in_channels, height, width_px)
        assert conv1[3] == (1, width, height, width_px)
        assert conv2[2] == (1, width, height, width_px) and conv2[3] == (1, width, height, width_px)


# ---------------------------------------------------------------------------------------------------------
# Small model: structure and routing
# ---------------------------------------------------------------------------------------------------------
def test_structure_matches_paper_module():
    model = CRNGenerator(5, [16, 8, 4], base_grid=(2, 3), num_outputs=2)
    assert model.output_size == (8, 12)
    assert model.resolutions == [(2, 3), (4, 6), (8, 12)]
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    for module in model.refine:
        assert module.conv1.kernel_size == (3, 3) and module.conv1.bias is None
        assert module.conv2.kernel_size == (3, 3) and module.conv2.bias is None
        for norm in (module.norm1, module.norm2):  # layer norm over (C, H, W), per-channel affine
            assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 1 and norm.affine
    assert model.to_rgb.kernel_size == (1, 1) and model.to_rgb.bias is not None
    assert model.to_rgb.out_channels == 6
    assert model.num_parameters() == expected_parameters(5, [16, 8, 4], 2)


def test_xavier_init_like_slim():
    model = CRNGenerator(5, [16, 8], base_grid=(2, 2))
    for conv in [m for m in model.modules() if isinstance(m, nn.Conv2d)]:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.8 * bound
        if conv.bias is not None:
            assert torch.all(conv.bias == 0)


def test_label_is_area_downsampled_and_features_bilinear_upsampled():
    torch.manual_seed(0)
    model = CRNGenerator(4, [6, 5, 3], base_grid=(2, 3))
    label = one_hot_label(4, model.output_size)
    inputs, outputs = {}, {}
    for index, module in enumerate(model.refine):
        module.conv1.register_forward_hook(lambda m, i, o, index=index: inputs.__setitem__(index, i[0]))
        module.register_forward_hook(lambda m, i, o, index=index: outputs.__setitem__(index, o))
    model(label)
    # Module 0: only the layout, as soft class fractions (resize_area), so each pixel's channels sum to 1.
    expected0 = F.adaptive_avg_pool2d(label, (2, 3))
    torch.testing.assert_close(inputs[0], expected0)
    assert 0 < inputs[0].max() <= 1 and torch.allclose(inputs[0].sum(1), torch.ones(1, 2, 3))
    for index in (1, 2):
        size = model.resolution(index)
        upsampled = F.interpolate(outputs[index - 1], size=size, mode="bilinear", align_corners=True)
        torch.testing.assert_close(inputs[index][:, : model.widths[index - 1]], upsampled)
        torch.testing.assert_close(inputs[index][:, model.widths[index - 1]:], F.adaptive_avg_pool2d(label, size))


def test_outputs_are_consecutive_rgb_triples_and_unclamped():
    torch.manual_seed(0)
    model = CRNGenerator(3, [8, 4], base_grid=(2, 2), num_outputs=3)
    captured = {}
    model.to_rgb.register_forward_hook(lambda m, i, o: captured.setdefault("rgb", o))
    with torch.no_grad():
        model.to_rgb.bias.fill_(5.0)  # linear output: nothing squashes or clamps it
        out = model(one_hot_label(3, model.output_size, batch=2))
    assert out.shape == (2, 3, 3, 4, 4)
    for u in range(3):  # output u is channels 3u … 3u+2 (not the official [R×k, G×k, B×k] packing)
        torch.testing.assert_close(out[:, u], captured["rgb"][:, 3 * u: 3 * u + 3])
    assert out.max() > 1.0


def test_rejects_wrong_size_and_channels():
    model = CRNGenerator(4, [8, 4], base_grid=(2, 3))
    with pytest.raises(ValueError, match="4×6"):
        model(torch.zeros(1, 4, 8, 12))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        model(torch.zeros(1, 5, 4, 6))
    with pytest.raises(ValueError, match="unknown CRN preset"):
        build_crn("crn-2048p")


def test_cpu_preset_trains():
    torch.manual_seed(0)
    model = build_crn("crn-cpu", num_outputs=2)
    assert model.output_size == (96, 128) and model.in_channels == 12 and len(model.widths) == 6
    assert 4_500_000 <= model.num_parameters() <= 5_500_000
    records, handles = record_convs(model)
    out = model(one_hot_label(12, (96, 128)))
    for handle in handles:
        handle.remove()
    check_module_shapes(model, records)
    assert out.shape == (1, 2, 3, 96, 128) and torch.isfinite(out).all()
    out.abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------
# Paper presets
# ---------------------------------------------------------------------------------------------------------
PAPER_WIDTHS = {  # paper §3.2: 1024 for modules 0–4, 512 for 5–6, 128 for 7, 32 for 8
    "crn-256p": [1024] * 5 + [512] * 2,
    "crn-512p": [1024] * 5 + [512] * 2 + [128],
    "crn-1024p": [1024] * 5 + [512] * 2 + [128, 32],
}


@pytest.mark.parametrize("name", list(PAPER_WIDTHS))
def test_paper_preset_widths_and_parameter_counts(name):
    assert list(CRN_PRESETS[name]["widths"]) == PAPER_WIDTHS[name]
    for k in (1, 9):  # 9 = the diversity variant of demo_256p.py
        model = build_crn(name, num_outputs=k)
        assert model.in_channels == 20 and model.base_grid == (4, 8)
        assert model.num_parameters() == expected_parameters(20, PAPER_WIDTHS[name], k)
    height = 256 * 2 ** (len(PAPER_WIDTHS[name]) - 7)
    assert model.output_size == (height, 2 * height)


def _full_forward(name: str) -> float:
    torch.manual_seed(0)
    model = build_crn(name).eval()
    records, handles = record_convs(model)
    label = one_hot_label(20, model.output_size)
    with torch.no_grad():
        start = time.perf_counter()
        out = model(label)
        elapsed = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    check_module_shapes(model, records)
    assert out.shape == (1, 1, 3, *model.output_size) and torch.isfinite(out).all()
    print(f"{name} forward at {model.output_size}: {elapsed:.1f} s")
    return elapsed


# Full-resolution forwards (no_grad, batch 1) on 2 CPU cores: 256p ≈ 18–26 s, 512p ≈ 29 s, 1024p ≈ 30 s
# (≈ 5 GB peak RSS).  1024p stays under the 60 s limit for the default run.
def test_crn_256p_full_forward():
    _full_forward("crn-256p")


def test_crn_512p_full_forward():
    _full_forward("crn-512p")


def test_crn_1024p_full_forward():
    _full_forward("crn-1024p")
