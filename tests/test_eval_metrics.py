"""Evaluation numbers: confusion-matrix scores, Fréchet distance, kernel distance, LPIPS-style diversity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from inverseg.eval.metrics import (
    confusion_matrix,
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    kernel_distance,
    segmentation_scores,
)
from inverseg.eval.segmenter import NO_CLASS

NAMES = ["a", "b", "c", "d"]


# ------------------------------------------------------------------------------------------- segmentation
def test_perfect_prediction_scores_one():
    target = torch.tensor([[0, 1, 2], [2, 255, 0]])
    scores = segmentation_scores(confusion_matrix(target.clone(), target, 4), NAMES)
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0 and scores["mean_accuracy"] == 1.0
    assert scores["per_class_iou"] == {"a": 1.0, "b": 1.0, "c": 1.0, "d": None}  # d absent from both: excluded
    assert scores["classes_counted"] == 3 and scores["pixels"] == 5  # the void pixel is not counted


def test_constructed_confusion_gives_the_hand_computed_values():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 255, 255])
    prediction = torch.tensor([0, 0, 1, NO_CLASS, 1, 1, 1, 2, 0])  # predictions on void pixels do not count
    confusion = confusion_matrix(prediction, target, 4)
    expected = torch.zeros(4, 5, dtype=torch.int64)
    expected[0, 0], expected[0, 1], expected[0, 4] = 2, 1, 1  # one pixel of class a predicted as "no class"
    expected[1, 1] = 2
    expected[2, 1] = 1
    assert torch.equal(confusion, expected)
    scores = segmentation_scores(confusion, NAMES)
    # IoU a = 2 / (4 + 2 − 2); IoU b = 2 / (2 + 4 − 2); IoU c = 0 / (1 + 0 − 0); d absent
    assert scores["per_class_iou"] == {"a": 0.5, "b": 0.5, "c": 0.0, "d": None}
    assert scores["miou"] == pytest.approx(1 / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 7)
    assert scores["mean_accuracy"] == pytest.approx((2 / 4 + 1 + 0) / 3)


def test_class_only_in_prediction_counts_with_iou_zero():
    target = torch.tensor([0, 0, 0, 0])
    prediction = torch.tensor([0, 0, 0, 3])
    scores = segmentation_scores(confusion_matrix(prediction, target, 4), NAMES)
    assert scores["per_class_iou"]["d"] == 0.0
    assert scores["miou"] == pytest.approx((3 / 4 + 0) / 2)


# ------------------------------------------------------------------------------------------- Fréchet
def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(300, 16))
    assert frechet_distance_features(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3.0, size=5), rng.uniform(0.1, 3.0, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_the_sqrtm_formula_for_full_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    cross = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * cross)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_samples_approaches_the_population_value():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, size=(20000, 3))
    y = rng.normal(1.0, 2.0, size=(20000, 3))
    expected = 3 * 1.0 + 3 * (1 + 4 - 2 * 2)  # ||μ1−μ2||² + Σ(σ1² + σ2² − 2σ1σ2)
    assert frechet_distance_features(x, y) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("n1,n2,d", [(20, 30, 64), (40, 25, 8)])
def test_small_sample_route_equals_the_covariance_route(n1, n2, d):
    rng = np.random.default_rng(n1)
    x, y = rng.normal(size=(n1, d)), rng.normal(size=(n2, d)) * 1.3 + 0.2
    assert frechet_distance_features(x, y) == pytest.approx(
        frechet_distance(*gaussian_stats(x), *gaussian_stats(y)), rel=1e-6)  # eigh of singular Σ: ~1e-8


def test_frechet_distance_handles_rank_deficient_covariances():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5  # N < D: singular covariances
    value = frechet_distance_features(x, y)
    assert np.isfinite(value) and value > 64 * 0.25 * 0.5
    mu, sigma = gaussian_stats(x)
    assert mu.shape == (64,) and sigma.shape == (64, 64)


# ------------------------------------------------------------------------------------------- kernel distance
def test_kernel_distance_identical_sets_is_near_zero_and_shifted_sets_positive():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 32))
    same = kernel_distance(x, x.copy(), subsets=5)
    shifted = kernel_distance(x, x + 0.5, subsets=5)
    slightly = kernel_distance(x, x + 0.2, subsets=5)
    other_sample = kernel_distance(x, rng.normal(size=(600, 32)), subsets=5)
    # identical sets: only the O(1/m) term of the cross kernel's diagonal remains
    assert abs(same["mean"]) < 0.05 * shifted["mean"]
    assert abs(other_sample["mean"]) < 0.05 * shifted["mean"]  # unbiased: ≈ 0 for one distribution
    assert shifted["mean"] > slightly["mean"] > 0.05
    assert shifted["subset_size"] == 600 and shifted["subsets"] == 5


def test_kernel_distance_full_subset_value_by_hand():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 2.0]])

    def k(a, b):
        return (a @ b / 2 + 1) ** 3

    kxx = np.mean([k(x[i], x[j]) for i in range(3) for j in range(3) if i != j])
    kyy = np.mean([k(y[i], y[j]) for i in range(3) for j in range(3) if i != j])
    kxy = np.mean([k(x[i], y[j]) for i in range(3) for j in range(3)])
    result = kernel_distance(x, y, subsets=3, subset_size=10)  # subset = everything, in some order
    assert result["subset_size"] == 3
    assert result["mean"] == pytest.approx(kxx + kyy - 2 * kxy) and result["std"] == pytest.approx(0, abs=1e-9)


# ------------------------------------------------------------------------------------------- diversity
class _FakeVGG:
    """Two 'layers': the image itself and its 2×2 average, so the distance can be computed by hand."""

    def __call__(self, x):
        return {"l1": x, "l2": torch.nn.functional.avg_pool2d(x, 2)}


def test_lpips_style_distance_by_hand_and_pairwise_mean():
    from inverseg.eval.diversity import PerceptualDistance

    distance = PerceptualDistance(vgg=_FakeVGG())
    a = torch.zeros(1, 3, 4, 4)
    a[:, 0] = 1.0  # unit vector along channel 0 everywhere
    b = torch.zeros(1, 3, 4, 4)
    b[:, 1] = 2.0  # along channel 1 (normalised to length 1)
    # every pixel: ||e0 − e1||² = 2 in both layers → 2 + 2
    assert float(distance.distance(a, b)) == pytest.approx(4.0)
    assert float(distance.distance(a, a.clone())) == pytest.approx(0.0)
    images = torch.cat([a, a, b])  # pairs: (a,a)=0, (a,b)=4, (a,b)=4
    assert distance.mean_pairwise(images) == pytest.approx(8 / 3)
    with pytest.raises(ValueError):
        distance.mean_pairwise(a)
