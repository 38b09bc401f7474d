"""CRN colour cast (issue 11 §4): the optional region-colour term and what it converges to.

An under-trained CRN paints flat-ish regions; L1 on pixels fits them the per-pixel *median* colour, which for
skewed photo colours (bright highlights) is darker than the mean.  ``loss.colour_term`` adds an L1 between the
mean colours of each class region, whose minimiser is the region mean.  Measured on CamVid (docs/methods/crn.md
"Colour cast"): balanced like the other terms it is too weak against the VGG terms to remove the cast.
"""

from __future__ import annotations

import pytest
import torch

from inverseg.config import load_run_config
from inverseg.labels.spec import LabelSpec
from inverseg.losses import DiversityLoss, LambdaBalancer, PerceptualLoss
from inverseg.losses.perceptual import COLOUR, region_colour_map
from inverseg.methods import crn as crn_method
from inverseg.methods.crn import CRN
from inverseg.perception.vgg import VGGFeatures

SPEC = LabelSpec("toy", ("a", "b"), ((255, 0, 0), (0, 0, 255)), ignore_index=255)


def no_features(x):
    return {}


def test_region_colour_map_hand_computed():
    # 1 sample, k = 1, 1×4 image: class a = first 3 pixels, class b = last one.
    label = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]).view(1, 2, 1, 4)
    difference = torch.zeros(1, 1, 3, 1, 4)
    difference[0, 0, 0] = torch.tensor([0.3, -0.3, 0.6, 0.2])  # red: region a mean 0.2, region b 0.2
    difference[0, 0, 2] = torch.tensor([0.0, 0.0, -0.3, 0.0])  # blue: region a mean −0.1
    colour = region_colour_map(difference, label)
    # a: mean_c |(0.2, 0, −0.1)| = 0.1;  b: mean_c |(0.2, 0, 0)| = 0.2/3
    torch.testing.assert_close(colour, torch.tensor([0.1, 0.1, 0.1, 0.2 / 3]).view(1, 1, 1, 4))


def test_colour_term_is_a_balanced_term_and_needs_the_layout():
    balancer = LambdaBalancer(("pixel", COLOUR), mode="fixed")
    loss = PerceptualLoss(no_features, layers=(), balancer=balancer, colour_term=True)
    assert loss.term_names == ("pixel", COLOUR)
    reference = torch.zeros(1, 3, 2, 2)
    image = torch.tensor([[0.5, -0.5], [0.5, -0.5]]).expand(1, 3, 2, 2)  # texture with zero mean difference
    label = SPEC.one_hot(torch.zeros(1, 2, 2, dtype=torch.long), void_channel=True)
    total, logs = loss(image, reference, label=label)
    assert float(logs["unweighted/colour"]) == 0.0  # right mean colour: no colour error, only pixel error
    torch.testing.assert_close(logs["unweighted/pixel"], torch.tensor(0.5 * 127.5))
    with pytest.raises(ValueError, match="needs the layout"):
        loss(image, reference)


def fit_flat_colour(terms: tuple[str, ...], steps: int = 400) -> torch.Tensor:
    """One flat colour per class fitted to a skewed photo (mostly dark, a few bright pixels) → 0–255 colour."""
    torch.manual_seed(0)
    reference = torch.full((1, 3, 8, 8), -0.6)
    reference[..., :2, :] = 1.0  # a quarter of the pixels are bright highlights: mean > median
    label = SPEC.one_hot(torch.zeros(1, 8, 8, dtype=torch.long), void_channel=True)
    loss = PerceptualLoss(no_features, layers=(), pixel_term="pixel" in terms,
                          balancer=LambdaBalancer(terms, mode="fixed"), colour_term=COLOUR in terms)
    colour = torch.zeros(1, 3, 1, 1, requires_grad=True)
    optimiser = torch.optim.Adam([colour], lr=0.02)
    for _ in range(steps):
        total, _ = loss(colour.expand(1, 3, 8, 8), reference, label=label)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    return (colour.detach().flatten() + 1) * 127.5


def test_pixel_l1_fits_the_median_but_the_colour_term_the_mean():
    mean = ((0.25 * 1.0 + 0.75 * -0.6) + 1) * 127.5  # 102
    median = (-0.6 + 1) * 127.5  # 51
    assert (fit_flat_colour(("pixel",)) - median).abs().max() < 3  # the faithful loss: 51 levels too dark
    assert (fit_flat_colour(("pixel", COLOUR)) - mean).abs().max() < 3


def test_diversity_loss_uses_the_colour_term_per_class():
    balancer = LambdaBalancer(("pixel", COLOUR), mode="fixed", initial_weights=(0.0, 1.0))
    perceptual = PerceptualLoss(no_features, layers=(), balancer=balancer, pixel_scale=1.0, colour_term=True).eval()
    label = SPEC.one_hot(torch.tensor([[[0, 1]]]), void_channel=True)  # (1, 3, 1, 2): a | b, void empty
    reference = torch.zeros(1, 3, 1, 2)
    outputs = torch.stack([torch.tensor([[[0.0, 0.4]]]).expand(3, 1, 2),
                           torch.tensor([[[0.2, 0.0]]]).expand(3, 1, 2)])[None]  # (1, k=2, 3, 1, 2)
    total, logs = DiversityLoss(perceptual)(outputs, reference, label)
    # class a: output 0 exact; class b: output 1 exact → the best-of-k colour error is 0
    assert float(total) == 0.0
    assert float(logs["selected_fraction/0"]) == 0.5


def test_crn_method_trains_with_the_colour_term(monkeypatch):
    # a random VGG16: the wiring is under test, not the weights
    monkeypatch.setattr(crn_method, "build_vgg", lambda config, layers: VGGFeatures("vgg16", layers, "avg", "caffe"))
    config = load_run_config("crn-cpu", ["data.size=[24,32]", "model.widths=[16,16,8,8]",
                                         "loss.colour_term=true", "loss.rebalance_at=2", "loss.window=2"])
    method = CRN(config.settings, SPEC, (24, 32))
    assert method.balancer.term_names[-1] == COLOUR
    ids = torch.randint(0, 2, (1, 24, 32), generator=torch.Generator().manual_seed(0))
    batch = {"label": ids, "image": torch.rand(1, 3, 24, 32) * 2 - 1, "name": ["x"]}
    for step in range(3):
        logs = method.train_step(batch, step)
    assert "w_colour" in logs and bool(method.balancer.rebalanced)
    with pytest.raises(ValueError, match="colour_term"):
        CRN(load_run_config("crn-cpu", ["data.size=[24,32]", "model.widths=[16,16,8,8]",
                                        "loss.colour_term=true", "loss.balance=official-crn-256p"]).settings,
            SPEC, (24, 32))


def test_final_layer_boost_stays_on_conv5_2_with_the_colour_term():
    from inverseg.methods.crn import PerceptualConfig, build_balancer

    config = PerceptualConfig(balance="once", rebalance_at=1, window=1, final_layer_boost=10.0, colour_term=True)
    balancer = build_balancer(config, ("pixel", "relu1_2", "relu5_2", COLOUR))
    balancer.observe(torch.ones(4))
    assert balancer.weights.tolist() == [1.0, 1.0, 10.0, 1.0]
