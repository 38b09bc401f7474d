"""The procedural street scenes: valid maps, textured and varied classes, labels that match the pixels,
determinism, one layout at every resolution, and the dataset's splits, names and transforms."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy import ndimage

from inverseg.data import DataConfig, JointTransform, open_dataset
from inverseg.data.synthetic import (
    BICYCLIST, BUILDING, CAR, PAVEMENT, PEDESTRIAN, ROAD, SKY, THING_CLASSES, TREE, SyntheticStreets, generate_scene,
)
from inverseg.labels.schemes import CAMVID

SEEDS = range(12)


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed, 96, 128) for seed in SEEDS]


@pytest.fixture(scope="module")
def twenty_labels(scenes):
    return [label for _, label, _ in scenes] + [generate_scene(seed, 96, 128)[1] for seed in range(12, 20)]


# ------------------------------------------------------------------------------------------------ maps
def test_shapes_dtypes_and_ids(scenes):
    for image, label, instance in scenes:
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        assert label.shape == (96, 128) and label.dtype == np.int64
        assert instance.shape == (96, 128) and instance.dtype == np.int64
        assert 0 <= label.min() and label.max() <= 10  # CamVid classes, no void
        things = np.isin(label, THING_CLASSES)
        assert np.array_equal(instance[things] // 1000, label[things])  # pix2pixHD: class·1000 + k
        assert np.array_equal(instance[~things], label[~things])  # stuff: the class id


def test_instances_separate_objects_of_one_class(scenes):
    counts = [len(np.unique(instance[label == CAR])) for _, label, instance in scenes]
    assert max(counts) >= 3 and sum(c >= 2 for c in counts) >= 6


@pytest.mark.parametrize("height,width", [(37, 61), (64, 64), (8, 10), (120, 90)])
def test_any_resolution_and_aspect(height, width):
    image, label, instance = generate_scene(4, height, width)
    assert image.shape == (height, width, 3) and label.shape == instance.shape == (height, width)
    assert {ROAD, SKY} <= set(np.unique(label).tolist()) or height < 16


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        generate_scene(0, 0, 10)


# ------------------------------------------------------------------------------------------------ content
@pytest.mark.parametrize("class_id", [SKY, BUILDING, ROAD, TREE, PAVEMENT, CAR])
def test_class_regions_are_textured(scenes, class_id):
    """Within a class the colours vary (texture, shading, markings): mean per-scene std ≥ 10 on 0–255."""
    stds = [image[label == class_id].astype(float).std(0).mean()
            for image, label, _ in scenes if (label == class_id).sum() > 50]
    assert len(stds) >= 6
    assert np.mean(stds) >= 10, f"{CAMVID.class_names[class_id]}: mean per-scene std {np.mean(stds):.1f}"


@pytest.mark.parametrize("class_id", [SKY, BUILDING, ROAD, PAVEMENT, TREE, CAR])
def test_class_colours_vary_between_scenes(scenes, class_id):
    means = np.array([image[label == class_id].astype(float).mean(0)
                      for image, label, _ in scenes if (label == class_id).sum() > 30])
    assert len(means) >= 6
    assert means.std(0).mean() > 8, f"{CAMVID.class_names[class_id]}: scene means barely vary"


def test_every_class_appears_and_street_classes_are_common(twenty_labels):
    present = set(np.unique(np.concatenate([label.ravel() for label in twenty_labels])).tolist())
    assert present == set(range(11))
    for class_id in (ROAD, SKY, BUILDING, PAVEMENT, CAR):
        scenes_with = sum(bool((label == class_id).any()) for label in twenty_labels)
        assert scenes_with >= 16, f"{CAMVID.class_names[class_id]} in only {scenes_with}/20 scenes"
    assert sum(bool(np.isin(label, (PEDESTRIAN, BICYCLIST)).any()) for label in twenty_labels) >= 10


def test_objects_are_drawn_where_labelled(scenes):
    """Inside each sizeable car the image differs from the road right around it."""
    differences = []
    for image, label, instance in scenes:
        for car_id in np.unique(instance[label == CAR]):
            car = instance == car_id
            if car.sum() < 40:
                continue
            ring = ndimage.binary_dilation(car, iterations=3) & ~car & (label == ROAD)
            if ring.sum() < 20:
                continue
            inside, around = image[car].astype(float), image[ring].astype(float)
            differences.append(np.abs(inside.mean(0) - around.mean(0)).max() + abs(inside.std() - around.std()))
    assert len(differences) >= 8
    assert np.median(differences) > 20 and np.mean(np.array(differences) > 8) >= 0.8, differences


def test_boundaries_in_the_label_are_edges_in_the_image(scenes):
    """Label boundaries coincide with image gradients more often than chance: the image draws the layout."""
    ratios = []
    for image, label, _ in scenes:
        grey = image.astype(float).mean(2)
        gradient = np.abs(np.diff(grey, axis=1))
        boundary = np.diff(label, axis=1) != 0
        ratios.append(gradient[boundary].mean() / gradient[~boundary].mean())
    assert np.median(ratios) > 3, ratios


# ------------------------------------------------------------------------------------------------ determinism
def test_deterministic_and_seed_dependent():
    first, again = generate_scene(5, 96, 128), generate_scene(5, 96, 128)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = generate_scene(6, 96, 128)
    assert not np.array_equal(first[1], other[1]) and not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("seed", [3, 11])
def test_same_layout_at_any_resolution(seed):
    small_image, small, _ = generate_scene(seed, 96, 128)
    large_image, large, _ = generate_scene(seed, 192, 256)
    assert (large[1::2, 1::2] == small).mean() > 0.95  # nearest downsampling: only boundary pixels differ
    assert (large[::2, ::2] == small).mean() > 0.95
    pooled = large_image.astype(float).reshape(96, 2, 128, 2, 3).mean((1, 3))
    assert np.abs(pooled - small_image).mean() < 10  # the same picture, not just the same labels


# ------------------------------------------------------------------------------------------------ dataset
def test_dataset_samples_names_and_spec():
    dataset = SyntheticStreets("train", size=(48, 64), length=5)
    assert len(dataset) == 5 and dataset.spec is CAMVID and dataset.has_instances and dataset.problems == []
    sample = dataset[2]
    assert sample["name"] == "synthetic_train_000002"
    assert sample["image"].shape == (3, 48, 64) and sample["image"].dtype == torch.float32
    assert -1.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (48, 64)
    assert sample["instance"].dtype == torch.int64 and sample["instance"].shape == (48, 64)
    assert int(sample["label"].max()) <= 10
    image, label, instance = generate_scene(dataset.scene_seed(2), 48, 64)
    assert np.array_equal(sample["label"].numpy(), label) and np.array_equal(sample["instance"].numpy(), instance)
    assert dataset[-1]["name"] == "synthetic_train_000004"
    with pytest.raises(IndexError):
        dataset[5]


def test_default_lengths_and_bad_arguments():
    assert [len(SyntheticStreets(split)) for split in ("train", "val", "test")] == [2000, 50, 50]
    with pytest.raises(ValueError, match="split"):
        SyntheticStreets("validation")
    with pytest.raises(ValueError, match="length"):
        SyntheticStreets("test", length=200_000)


def test_splits_and_dataset_seeds_never_share_a_layout():
    seeds = {split: {SyntheticStreets(split, length=2000 if split == "train" else 50).scene_seed(i)
                     for i in range(2000 if split == "train" else 50)} for split in ("train", "val", "test")}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["val"] & seeds["test"])
    other = {SyntheticStreets("train", seed=1).scene_seed(i) for i in range(2000)}
    assert not (other & seeds["train"]) and not (other & seeds["val"])
    train, val = SyntheticStreets("train", size=(48, 64)), SyntheticStreets("val", size=(48, 64))
    assert not torch.equal(train[0]["label"], val[0]["label"])


def test_flip_transform_is_reproducible_and_changes_with_the_epoch():
    """Flips draw from (seed, epoch, index); a JointTransform without a size still flips (scenes are at size)."""
    references = [SyntheticStreets(size=(24, 32), length=6)[i]["label"] for i in range(6)]
    flipped = SyntheticStreets(size=(24, 32), length=6, transform=JointTransform(flip=True))

    def pattern() -> list[bool]:
        labels = [flipped[i]["label"] for i in range(6)]
        assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(labels, references))
        return [not torch.equal(a, b) for a, b in zip(labels, references)]

    first = pattern()
    assert first == pattern() and any(first) and not all(first)
    patterns = []
    for epoch in (1, 2):
        flipped.set_epoch(epoch)
        patterns.append(pattern())
    assert any(p != first for p in patterns)


def test_open_dataset_builds_synthetic_streets():
    dataset = open_dataset(DataConfig(dataset="synthetic", size=(48, 64), length=3), split="val", augment=False)
    assert isinstance(dataset, SyntheticStreets) and len(dataset) == 3 and dataset.split == "val"
    assert dataset[0]["name"] == "synthetic_val_000000" and dataset[0]["image"].shape == (3, 48, 64)
