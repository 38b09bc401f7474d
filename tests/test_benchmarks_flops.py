"""The inference report's yardsticks (benchmarks/_common.py): the FLOP count of a forward, from hand-computed
multiply-adds and against torch's own counter, and the matmul roofline."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import count_flops, matmul_gflops  # noqa: E402

from inverseg.models.crn import CRNGenerator  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
                         nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def test_count_flops_hand_computed_and_hooks_removed():
    net, x = tiny_net(), torch.zeros(2, 3, 8, 8)
    with torch.inference_mode(), count_flops(net) as tally:
        net(x)
    macs = (2 * 8 * 8 * 8 * 3 * 9      # conv: 1024 outputs × 3 inputs × 3×3
            + 2 * 8 * 4 * 4 * 4 * 9    # grouped, stride 2: 256 outputs × 8/2 inputs × 3×3
            + 2 * 8 * 4 * 4 * 4 * 16   # transposed: 256 inputs × 4 outputs × 4×4
            + 2 * 10 * 256)            # linear: 20 outputs × 256 inputs
    assert macs == 58368
    assert tally["flops"] == 2 * macs
    net(x)  # outside the block: no hook left behind
    assert tally["flops"] == 2 * macs
    assert all(not layer._forward_hooks for layer in net.modules())


@pytest.mark.parametrize("build", [tiny_net, lambda: CRNGenerator(5, (8, 6, 4), base_grid=(2, 3), num_outputs=2)])
def test_count_flops_matches_torch_flop_counter(build):
    """Layers torch counts by its aten ops (conv, addmm) and we count by module shapes agree exactly; CRN's area
    resizes, bilinear upsampling and layer norms are in neither."""
    torch.manual_seed(0)
    net = build()
    x = torch.rand(1, 5, 8, 12) if isinstance(net, CRNGenerator) else torch.rand(1, 3, 8, 8)
    torch_counter = FlopCounterMode(display=False)
    with torch.no_grad(), torch_counter:
        net(x)
    with torch.no_grad(), count_flops(net) as tally:
        net(x)
    assert tally["flops"] == torch_counter.get_total_flops() > 0


def test_matmul_gflops_positive_at_a_tiny_size():
    wall, cpu = matmul_gflops(size=64, reps=2)
    assert math.isfinite(wall) and math.isfinite(cpu)
    assert wall > 0 and cpu > 0
