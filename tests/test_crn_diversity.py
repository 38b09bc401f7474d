"""CRN diversity collapse (issue 11 §4): random initial output colours and ``model.output_init: centred``.

With slim's Xavier weights the 1×1 output conv turns the positive mean of the LReLU features into a random colour
per output.  Under the per-class min of §3.4 the output that starts nearest wins every class, the others get only
the 0.001 mean term and stay far away.  ``centred`` starts every output at mid-grey.  The training dynamics are
measured by benchmarks/crn_diversity_start.py (docs/methods/crn.md); a unit-sized model does not reproduce them.
"""

from __future__ import annotations

import torch

from inverseg.config import load_run_config
from inverseg.labels.spec import LabelSpec
from inverseg.methods import crn as crn_method
from inverseg.methods.crn import CRN
from inverseg.perception.vgg import VGGFeatures

SPEC = LabelSpec("toy", ("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)), ignore_index=255)


def test_method_centres_on_the_first_step_only(monkeypatch):
    monkeypatch.setattr(crn_method, "build_vgg", lambda config, layers: VGGFeatures("vgg16", layers, "avg", "caffe"))
    overrides = ["data.size=[24,32]", "model.widths=[16,16,8,8]", "model.num_outputs=3", "loss.rebalance_at=5",
                 "loss.window=5"]
    ids = torch.randint(0, 3, (1, 24, 32), generator=torch.Generator().manual_seed(0))
    batch = {"label": ids, "image": torch.rand(1, 3, 24, 32) * 2 - 1, "name": ["x"]}

    official = CRN(load_run_config("crn-cpu", overrides).settings, SPEC, (24, 32))
    torch.manual_seed(0)
    official.generator.reset_parameters()
    start = official.generator(official.encode(ids)).mean((0, 3, 4))
    assert start.abs().max() > 0.1  # a random colour per output: the official Xavier start

    method = CRN(load_run_config("crn-cpu", overrides + ["model.output_init=centred"]).settings, SPEC, (24, 32))
    torch.manual_seed(0)
    method.generator.reset_parameters()
    with torch.no_grad():
        method.generator.to_rgb.bias.zero_()
    method.centre_outputs(method.encode(ids))
    assert method.generator(method.encode(ids)).mean((0, 3, 4)).abs().max() < 1e-5

    resumed = CRN(load_run_config("crn-cpu", overrides + ["model.output_init=centred"]).settings, SPEC, (24, 32))
    bias = resumed.generator.to_rgb.bias.detach().clone()
    resumed.optimizers["generator"].param_groups[0]["lr"] = 0.0  # keep the weights: only the centring can move them
    resumed.train_step(batch, 7)  # a resumed run (step > 0) is not re-centred
    assert torch.equal(resumed.generator.to_rgb.bias, bias)
    fresh = CRN(load_run_config("crn-cpu", overrides + ["model.output_init=centred"]).settings, SPEC, (24, 32))
    fresh.optimizers["generator"].param_groups[0]["lr"] = 0.0
    fresh.train_step(batch, 0)
    assert fresh.generator(fresh.encode(ids)).mean((0, 3, 4)).abs().max() < 1e-5
    loaded = CRN(load_run_config("crn-cpu", overrides + ["model.output_init=centred"]).settings, SPEC, (24, 32))
    loaded.after_init_from({"generator.to_rgb.weight", "generator.to_rgb.bias"})
    bias = loaded.generator.to_rgb.bias.detach().clone()
    loaded.optimizers["generator"].param_groups[0]["lr"] = 0.0
    loaded.train_step(batch, 0)
    assert torch.equal(loaded.generator.to_rgb.bias, bias)  # --init-from's trained output layer is kept
