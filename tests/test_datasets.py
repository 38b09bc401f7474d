"""Every dataset layout, built as tiny PIL fixtures, read through open_dataset; problems; joint transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (
    H, W, blocks, build_ade20k, build_camvid, build_cityscapes, build_cmp, build_flat, build_folder,
    cityscapes_instance, flat_instance, image_for, save_index, save_rgb,
)
from inverseg.data import DataConfig, DatasetError, JointTransform, open_dataset
from inverseg.data.layouts import CMP_VAL_EVERY, get_layout
from inverseg.labels import LabelError
from inverseg.labels.schemes import CITYSCAPES, CAMVID
from inverseg.utils.images import to_uint8


def config(kind: str, root, **kwargs) -> DataConfig:
    kwargs.setdefault("size", None)
    return DataConfig(dataset=kind, path=str(root), **kwargs)


def check_image(sample: dict, height: int = H, width: int = W) -> None:
    image = sample["image"]
    assert image.dtype == torch.float32 and image.shape == (3, height, width)
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0


def check_label(sample: dict, expected: np.ndarray) -> None:
    assert sample["label"].dtype == torch.int64
    assert sample["label"].shape == expected.shape
    assert sample["label"].tolist() == expected.tolist()


def assert_pixels_match_raw(sample: dict, raw: np.ndarray, tolerance: int = 0) -> None:
    """The image was written as image_for(raw): decoded pixels must still encode the raw label values."""
    difference = np.abs(to_uint8(sample["image"]).astype(int) - image_for(raw).astype(int))
    assert difference.max() <= tolerance, difference.max()


# ---------------------------------------------------------------------------------------------- layouts
def test_camvid_layout(tmp_path):
    raws = build_camvid(tmp_path, {"train": 3, "val": 2})
    dataset = open_dataset(config("camvid", tmp_path))
    assert len(dataset) == 3 and dataset.spec is CAMVID and not dataset.has_instances
    for index, raw in enumerate(raws["train"]):
        sample = dataset[index]
        check_image(sample)
        check_label(sample, raw)  # values 0–11 kept (11 = void)
        assert_pixels_match_raw(sample, raw)
        assert sample["name"] == f"train{index:03d}" and "instance" not in sample
    assert 11 in dataset[2]["label"].unique().tolist()  # void kept as 11
    val = open_dataset(config("camvid", tmp_path), split="val")
    assert len(val) == 2 and [val[i]["name"] for i in range(2)] == ["val000", "val001"]
    check_label(val[1], raws["val"][1])


def test_cmp_layout_shifts_values_and_splits(tmp_path):
    raws = build_cmp(tmp_path, count=12)
    dataset = open_dataset(config("cmp", tmp_path))  # default split: all
    assert len(dataset) == 12
    sample = dataset[0]
    check_image(sample)
    check_label(sample, raws[0] - 1)
    assert sample["name"] == "cmp_b0001"
    assert_pixels_match_raw(sample, raws[0], tolerance=40)  # JPEG: close, not exact
    val = open_dataset(config("cmp", tmp_path, split="val"))
    train = open_dataset(config("cmp", tmp_path, split="train"))
    assert CMP_VAL_EVERY == 10
    assert [p.name for p in val.pairs] == ["cmp_b0001", "cmp_b0011"]
    assert len(train) == 10 and not {p.name for p in train.pairs} & {p.name for p in val.pairs}


def test_cmp_without_base_folder(tmp_path):
    build_cmp(tmp_path, count=2)
    assert len(open_dataset(config("cmp", tmp_path / "base"))) == 2


def test_cityscapes_official_tree(tmp_path):
    raws = build_cityscapes(tmp_path)
    dataset = open_dataset(config("cityscapes", tmp_path))
    assert len(dataset) == 2 and dataset.has_instances  # *_gtFine_color.png are not labels
    names = [dataset[i]["name"] for i in range(2)]
    assert names == ["aachen_000000_000019", "bochum_000000_000313"]
    for index, name in enumerate(names):
        sample = dataset[index]
        check_image(sample)
        lut = np.array(CITYSCAPES.raw_to_id)
        check_label(sample, lut[raws[name]])
        assert sample["instance"].dtype == torch.int64
        assert sample["instance"].tolist() == cityscapes_instance(raws[name]).tolist()  # 26000/26001 kept
        assert_pixels_match_raw(sample, raws[name])
    assert set(dataset[0]["label"].unique().tolist()) == {0, 13, 255, 18}
    assert {26000, 26001} <= set(dataset[0]["instance"].unique().tolist())


def test_cityscapes_scheme_override_keeps_label_ids(tmp_path):
    raws = build_cityscapes(tmp_path)
    dataset = open_dataset(config("cityscapes", tmp_path, scheme="cityscapes-labelids"))
    assert dataset.spec.num_classes == 35
    check_label(dataset[0], raws["aachen_000000_000019"])


def test_cityscapes_val_split_is_separate(tmp_path):
    build_cityscapes(tmp_path)
    build_cityscapes(tmp_path, names=("frankfurt_000000_000294",), split="val")
    val = open_dataset(config("cityscapes", tmp_path), split="val")
    assert [p.name for p in val.pairs] == ["frankfurt_000000_000294"]


def test_cityscapes_flat_pix2pixhd_layout(tmp_path):
    names = ("aachen_000000_000019", "aachen_000001_000019")
    raws = build_flat(tmp_path, names, lambda i: blocks([7, 26, 0, 24 + i]), image_suffix="_leftImg8bit",
                      label_suffix="_gtFine_labelIds", inst_suffix="_gtFine_instanceIds")
    dataset = open_dataset(config("cityscapes", tmp_path))
    assert len(dataset) == 2 and dataset.has_instances
    lut = np.array(CITYSCAPES.raw_to_id)
    for index, name in enumerate(names):
        sample = dataset[index]
        assert sample["name"] == name
        check_image(sample)
        check_label(sample, lut[raws[name]])
        assert sample["instance"].tolist() == flat_instance(raws[name], index).tolist()
    assert set(dataset[1]["label"].unique().tolist()) == {0, 13, 255, 12}


def test_cityscapes_flat_layout_with_plain_names(tmp_path):
    raws = build_flat(tmp_path, ("x1", "x2"), lambda i: blocks([7, 8]), instances=False)
    dataset = open_dataset(config("cityscapes", tmp_path))
    assert len(dataset) == 2 and not dataset.has_instances and "instance" not in dataset[0]
    check_label(dataset[0], np.array(CITYSCAPES.raw_to_id)[raws["x1"]])


def test_ade20k_layout(tmp_path):
    raws = build_ade20k(tmp_path, count=2)
    build_ade20k(tmp_path, count=1, split="validation")
    dataset = open_dataset(config("ade20k", tmp_path))
    assert len(dataset) == 2
    sample = dataset[1]
    check_image(sample)
    expected = np.where(raws[1] == 0, 255, raws[1] - 1)
    check_label(sample, expected)
    assert set(sample["label"].unique().tolist()) == {255, 0, 149, 75}
    assert sample["name"] == "ADE_train_00000002"
    assert len(open_dataset(config("ade20k", tmp_path), split="val")) == 1


def test_ade20k_instance_masks_are_read_from_the_green_channel(tmp_path):
    """Places Challenge 2017 instance masks (annotations_instance/: R = category, G = instance id), which SAFM's
    official ADE20K training reads (channel 1) for its shape descriptor."""
    raws = build_ade20k(tmp_path, count=2)
    assert "instance" not in open_dataset(config("ade20k", tmp_path))[0]  # optional: absent → no instance maps
    folder = tmp_path / "ADEChallengeData2016" / "annotations_instance" / "training"
    folder.mkdir(parents=True)
    expected = []
    for index, raw in enumerate(raws):
        rgb = np.zeros((*raw.shape, 3), np.uint8)
        rgb[..., 0] = raw % 100                       # category
        rgb[..., 1] = (raw == 75 + index) * (index + 3)  # one instance per image
        Image.fromarray(rgb).save(folder / f"ADE_train_{index + 1:08d}.png")
        expected.append(rgb[..., 1])
    dataset = open_dataset(config("ade20k", tmp_path))
    assert dataset.has_instances
    for index in range(2):
        np.testing.assert_array_equal(dataset[index]["instance"].numpy(), expected[index])


def test_a_colour_instance_map_without_a_channel_is_a_clear_error(tmp_path):
    from inverseg.data.base import DatasetError, read_instance

    path = tmp_path / "inst.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(path)
    with pytest.raises(DatasetError, match="inst.png: instance map has 3 colour channels; fix"):
        read_instance(path)
    assert read_instance(path, channel=1).shape == (4, 5)


def test_cocostuff_layout_with_instances(tmp_path):
    names = ("000000000139", "000000000285", "000000000632")
    raws = build_flat(tmp_path, names, lambda i: blocks([0, 181, 255, 40 + i]))
    dataset = open_dataset(config("cocostuff", tmp_path))
    assert len(dataset) == 3 and dataset.spec.num_classes == 182 and dataset.has_instances
    for index, name in enumerate(names):
        sample = dataset[index]
        assert sample["name"] == name
        check_image(sample)
        check_label(sample, raws[name])
        assert sample["instance"].tolist() == flat_instance(raws[name], index).tolist()
        assert int(sample["instance"].max()) == 255 * 100 + index + 1  # 16-bit ids survive


def test_cocostuff_without_instances(tmp_path):
    build_flat(tmp_path, ("a",), lambda i: blocks([3, 4]), instances=False)
    dataset = open_dataset(config("cocostuff", tmp_path))
    assert not dataset.has_instances and "instance" not in dataset[0]


def test_folder_index_pngs(tmp_path):
    raws = build_folder(tmp_path, count=2, values=(0, 1, 2, 255))
    dataset = open_dataset(config("folder", tmp_path))
    assert len(dataset) == 2
    assert dataset.spec.class_names == ("class_0", "class_1", "class_2") and dataset.spec.ignore_index == 255
    sample = dataset[1]
    check_image(sample)
    check_label(sample, raws[1])
    assert sample["name"] == "scene1"
    assert_pixels_match_raw(sample, raws[1])


def test_folder_with_split_subfolder_and_instances(tmp_path):
    raws = build_folder(tmp_path / "val", count=1, values=(0, 4))
    build_folder(tmp_path / "train", count=3, values=(0, 1))
    save_index(tmp_path / "val" / "instances" / "scene0.png", raws[0] + 100)
    val = open_dataset(config("folder", tmp_path, split="val"))
    assert len(val) == 1 and val.spec.num_classes == 5 and val.has_instances
    assert val[0]["instance"].tolist() == (raws[0] + 100).tolist()
    assert len(open_dataset(config("folder", tmp_path))) == 3


COLOUR_TSV = "# id\tname\tcolor\n0\tvoid\t0,0,0\n1\troad\t128,64,128\n2\tcar\t0,0,142\n5\ttree\t107,142,35\n"
COLOURS = {0: (0, 0, 0), 1: (128, 64, 128), 2: (0, 0, 142), 5: (107, 142, 35)}


def build_colour_folder(root, palette_name: str | None = "classes.tsv") -> np.ndarray:
    raw = blocks([1, 2, 5, 0])
    colour = np.zeros((H, W, 3), dtype=np.uint8)
    for value, rgb in COLOURS.items():
        colour[raw == value] = rgb
    save_rgb(root / "labels" / "street.png", colour)
    save_rgb(root / "images" / "street.jpg", image_for(raw))
    if palette_name:
        (root / palette_name).write_text(COLOUR_TSV, encoding="utf-8")
    return raw


def test_folder_colour_pngs_with_palette_file(tmp_path):
    build_colour_folder(tmp_path, palette_name=None)
    palette = tmp_path / "elsewhere.tsv"
    palette.write_text(COLOUR_TSV, encoding="utf-8")
    dataset = open_dataset(config("folder", tmp_path, palette=str(palette)))
    assert dataset.spec.class_names == ("road", "car", "tree") and dataset.spec.ignore_index == 255
    check_label(dataset[0], blocks([0, 1, 2, 255]))  # ids 1, 2, 5 → 0, 1, 2; void 0 → 255
    assert dataset[0]["name"] == "street"
    explicit = open_dataset(config("folder", tmp_path, palette=str(palette), ignore_id=5))
    assert explicit.spec.class_names == ("void", "road", "car")
    check_label(explicit[0], blocks([1, 2, 255, 0]))


def test_folder_finds_classes_tsv_automatically(tmp_path):
    build_colour_folder(tmp_path)
    dataset = open_dataset(config("folder", tmp_path))
    assert dataset.spec.class_names == ("road", "car", "tree")
    check_label(dataset[0], blocks([0, 1, 2, 255]))


def test_folder_classes_tsv_with_index_pngs(tmp_path):
    (tmp_path / "classes.tsv").write_text(COLOUR_TSV, encoding="utf-8")
    build_folder(tmp_path, count=1, values=(5, 1, 0, 2))
    dataset = open_dataset(config("folder", tmp_path))
    check_label(dataset[0], blocks([2, 0, 255, 1]))


def test_folder_colour_pngs_without_palette_is_a_label_error(tmp_path):
    build_colour_folder(tmp_path, palette_name=None)
    with pytest.raises(LabelError, match=r"street.png: is a colour \(RGB\) label image.*--palette"):
        dataset = open_dataset(config("folder", tmp_path))
        dataset[0]


def test_folder_colour_png_with_unknown_colour(tmp_path):
    build_colour_folder(tmp_path)
    colour = np.asarray(Image.open(tmp_path / "labels" / "street.png")).copy()
    colour[:2, :5] = (9, 9, 9)
    save_rgb(tmp_path / "labels" / "street.png", colour)
    dataset = open_dataset(config("folder", tmp_path))
    with pytest.raises(LabelError) as info:
        dataset[0]
    message = str(info.value)
    assert "street.png" in message and "(9,9,9) (10 px)" in message and "classes.tsv" in message


def test_label_only_folder(tmp_path):
    raws = build_folder(tmp_path, count=3, values=(0, 3), with_images=False)
    dataset = open_dataset(config("folder", tmp_path))
    assert len(dataset) == 3 and all(p.image is None for p in dataset.pairs)
    sample = dataset[2]
    check_image(sample)
    assert torch.equal(sample["image"], torch.full((3, H, W), -1.0))
    check_label(sample, raws[2])
    assert sample["name"] == "scene2" and dataset.spec.num_classes == 4


# ---------------------------------------------------------------------------------------------- problems
def test_missing_partners_strict_and_skip(tmp_path):
    build_camvid(tmp_path, {"train": 3})
    save_rgb(tmp_path / "train" / "lonely_image.png", np.zeros((H, W, 3), np.uint8))
    save_index(tmp_path / "trainannot" / "lonely_label.png", np.zeros((H, W)))
    with pytest.raises(DatasetError) as info:
        open_dataset(config("camvid", tmp_path))
    message = str(info.value)
    assert "lonely_image.png: no label file for this image (missing partner)" in message
    assert "and 1 more problems" in message and "\n" not in message
    dataset = open_dataset(config("camvid", tmp_path, on_problem="skip"))
    assert len(dataset) == 3
    assert len(dataset.problems) == 2
    assert "lonely_image.png: no label file" in dataset.problems[0]
    assert "lonely_label.png: no image file for this label (missing partner)" in dataset.problems[1]


def test_cityscapes_missing_partner_names_the_real_file(tmp_path):
    build_cityscapes(tmp_path)
    (tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError) as info:
        open_dataset(config("cityscapes", tmp_path))
    assert "bochum_000000_000313_leftImg8bit.png: no label file for this image" in str(info.value)
    dataset = open_dataset(config("cityscapes", tmp_path, on_problem="skip"))
    assert [p.name for p in dataset.pairs] == ["aachen_000000_000019"]


def test_size_mismatch(tmp_path):
    build_camvid(tmp_path, {"train": 3})
    save_rgb(tmp_path / "train" / "train001.png", np.zeros((H - 4, W, 3), np.uint8))
    dataset = open_dataset(config("camvid", tmp_path))  # found when the sample is read
    with pytest.raises(DatasetError) as info:
        dataset[1]
    message = str(info.value)
    assert "train001.png: image is 32×20 but label train001.png is 32×24" in message
    skipping = open_dataset(config("camvid", tmp_path, on_problem="skip"))
    assert skipping[1]["name"] == "train002"  # replaced by the next good sample
    assert len(skipping.problems) == 1 and "train001.png: image is 32×20" in skipping.problems[0]
    assert skipping.check() == skipping.problems[:1]


def test_undecodable_image(tmp_path):
    build_camvid(tmp_path, {"train": 2})
    (tmp_path / "train" / "train000.png").write_bytes(b"this is not a png at all")
    dataset = open_dataset(config("camvid", tmp_path))
    with pytest.raises(DatasetError, match=r"train000.png: cannot decode image"):
        dataset[0]
    skipping = open_dataset(config("camvid", tmp_path, on_problem="skip"))
    assert skipping[0]["name"] == "train001"
    assert len(skipping.problems) == 1 and "train000.png: cannot decode image" in skipping.problems[0]


@pytest.mark.parametrize("kind", ["camvid", "folder"])
def test_undecodable_label(tmp_path, kind):
    if kind == "camvid":
        build_camvid(tmp_path, {"train": 2})
        bad = tmp_path / "trainannot" / "train000.png"
    else:
        build_folder(tmp_path, count=2)
        bad = tmp_path / "labels" / "scene0.png"
    bad.write_bytes(b"\x89PNG garbage")
    dataset = open_dataset(config(kind, tmp_path))
    with pytest.raises(DatasetError) as info:
        dataset[0]
    assert f"{bad}: cannot decode label" in str(info.value)
    skipping = open_dataset(config(kind, tmp_path, on_problem="skip"))
    assert skipping[0]["name"] == skipping.pairs[1].name
    assert len(skipping.problems) == 1 and str(bad) in skipping.problems[0]
    assert len(skipping.check()) == 1


def test_bad_label_value_strict_and_skip(tmp_path):
    raws = build_camvid(tmp_path, {"train": 3})
    raw = raws["train"][2].copy()
    raw[:3, :5] = 200  # 15 px
    save_index(tmp_path / "trainannot" / "train002.png", raw)
    dataset = open_dataset(config("camvid", tmp_path))
    dataset[0]
    with pytest.raises(LabelError) as info:
        dataset[2]
    message = str(info.value)
    assert message.startswith(str(tmp_path / "trainannot" / "train002.png") + ": ")
    assert "200 (15 px)" in message and "class ids 0–10 and void 11" in message
    skipping = open_dataset(config("camvid", tmp_path, on_problem="skip"))
    assert skipping[2]["name"] == "train000"  # wraps around to the next good sample
    assert len(skipping.problems) == 1 and "200 (15 px)" in skipping.problems[0]


def test_cmp_value_zero_is_reported(tmp_path):
    raws = build_cmp(tmp_path, count=2)
    raw = raws[1].copy()
    raw[0, 0] = 0
    save_index(tmp_path / "base" / "cmp_b0002.png", raw, mode="P")
    dataset = open_dataset(config("cmp", tmp_path))
    with pytest.raises(LabelError, match=r"cmp_b0002.png: label values 0 \(1 px\).*file values 1–12"):
        dataset[1]


@pytest.mark.parametrize("kind", ["camvid", "cmp", "cityscapes", "ade20k", "cocostuff", "folder"])
def test_empty_dataset(tmp_path, kind):
    with pytest.raises(DatasetError, match="expected|no image/label pairs"):
        open_dataset(config(kind, tmp_path))
    with pytest.raises(DatasetError, match="no image/label pairs found"):
        open_dataset(config(kind, tmp_path, on_problem="skip"))


def test_empty_camvid_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(DatasetError, match=r"no image/label pairs found; fix: check the path"):
        open_dataset(config("camvid", tmp_path))


def test_open_dataset_argument_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere: dataset folder does not exist; set data.path=FOLDER"):
        open_dataset(config("camvid", tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"does not exist \(relative to .+\); set bank.data.path=FOLDER"):
        open_dataset(config("camvid", Path("no/such/folder")), setting="bank.data.path")
    with pytest.raises(DatasetError, match="needs a path"):
        open_dataset(DataConfig(dataset="camvid"))
    with pytest.raises(DatasetError, match="split 'bogus' is not one of train, val, test"):
        open_dataset(config("camvid", tmp_path, split="bogus"))
    with pytest.raises(KeyError, match="unknown dataset kind 'kitti'"):
        open_dataset(config("kitti", tmp_path))
    with pytest.raises(ValueError, match="on_problem"):
        build_camvid(tmp_path, {"train": 1})
        open_dataset(config("camvid", tmp_path, on_problem="ignore"))
    assert get_layout("cmp").default_split == "all"


# ---------------------------------------------------------------------------------------------- transforms
def two_class_pair(height: int = H, width: int = W):
    label = np.full((height, width), 3, dtype=np.int64)
    label[: height // 2, : width // 3] = 200
    label[height - 5:, width - 7:] = 200
    return image_for(label), label


@pytest.mark.parametrize("size", [(17, 23), (48, 64), (10, 10), (7, 41)])
def test_resize_keeps_labels_nearest(size):
    image, label = two_class_pair()
    instance = np.where(label == 200, 26001, 7)
    out_image, out_label, out_instance = JointTransform(size=size)(image, label, instance, None)
    assert out_image.shape == (*size, 3) and out_image.dtype == np.uint8
    assert out_label.shape == size and out_label.dtype == label.dtype
    assert set(np.unique(out_label).tolist()) == {3, 200}  # no in-between values
    assert set(np.unique(out_instance).tolist()) == {7, 26001}
    assert np.array_equal(out_instance == 26001, out_label == 200)


def test_short_side_resize_and_none_resize():
    image, label = two_class_pair()
    out_image, out_label, _ = JointTransform(size=(12, 12), resize="short")(image, label, None, None)
    assert out_image.shape == (12, 12, 3) and out_label.shape == (12, 12)
    _, cropped, _ = JointTransform(size=(10, 12), resize="none")(image, label, None, None)
    assert np.array_equal(cropped, label[7:17, 10:22])  # centre crop
    with pytest.raises(ValueError, match="smaller than the crop"):
        JointTransform(size=(30, 30), resize="none")(image, label, None, None)
    with pytest.raises(ValueError, match="resize must be"):
        JointTransform(resize="stretch")
    with pytest.raises(ValueError, match="crop must be"):
        JointTransform(crop="top")


def random_label(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 11, size=(6, 8))
    return np.kron(coarse, np.ones((4, 4), dtype=np.int64))  # 24×32 blocks, not mirror-symmetric


def test_random_crop_and_flip_are_reproducible_and_aligned():
    label = random_label()
    image = image_for(label)
    instance = label * 1000 + 1
    transform = JointTransform(size=(16, 16), resize="none", crop="random", flip=True)
    outputs = []
    for epoch in range(6):
        rng = lambda: np.random.default_rng([0, epoch, 5])  # noqa: E731
        first = transform(image, label, instance, rng())
        second = transform(image, label, instance, rng())
        for a, b in zip(first, second):
            assert np.array_equal(a, b)
        out_image, out_label, out_instance = first
        assert np.array_equal(out_image, image_for(out_label))  # image and label stay aligned
        assert np.array_equal(out_instance, out_label * 1000 + 1)
        outputs.append(out_label)
    assert any(not np.array_equal(outputs[0], other) for other in outputs[1:])
    flipped = [o for o in outputs if not any(np.array_equal(o, label[t:t + 16, s:s + 16])
                                             for t in range(9) for s in range(17))]
    assert flipped, "no epoch flipped the sample"


def test_dataset_augmentation_is_deterministic_per_seed_epoch_index(tmp_path):
    raw = random_label()
    for index in range(3):
        save_rgb(tmp_path / "train" / f"f{index}.png", image_for(raw))
        save_index(tmp_path / "trainannot" / f"f{index}.png", raw)
    cfg = config("camvid", tmp_path, size=(16, 16), resize="none", crop="random", flip=True, seed=1)
    dataset, twin = open_dataset(cfg), open_dataset(cfg)
    assert torch.equal(dataset[1]["label"], twin[1]["label"])
    assert torch.equal(dataset[1]["image"], twin[1]["image"])
    labels_by_epoch = []
    for epoch in range(4):
        dataset.set_epoch(epoch)
        sample = dataset[1]
        assert torch.equal(sample["label"], dataset[1]["label"])
        assert np.array_equal(to_uint8(sample["image"]), image_for(sample["label"].numpy()))
        labels_by_epoch.append(sample["label"])
    assert any(not torch.equal(labels_by_epoch[0], other) for other in labels_by_epoch[1:])
    # same files, same epoch: different indices get different crops
    assert not all(torch.equal(dataset[0]["label"], dataset[i]["label"]) for i in (1, 2))
    # augment=False: centre crop, no flip, whatever the epoch
    plain = open_dataset(cfg, augment=False)
    plain.set_epoch(3)
    assert plain[0]["label"].tolist() == raw[4:20, 8:24].tolist()


def test_dataset_resize_with_jitter_keeps_alignment(tmp_path):
    build_cityscapes(tmp_path)
    cfg = config("cityscapes", tmp_path, size=(12, 16), crop="random", flip=True, scale_jitter=0.5)
    dataset = open_dataset(cfg)
    lut = np.array(CITYSCAPES.raw_to_id)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        assert sample["image"].shape == (3, 12, 16) and sample["label"].shape == (12, 16)
        instance = sample["instance"].numpy()
        label_ids = np.where(instance >= 1000, instance // 1000, instance)
        assert np.array_equal(lut[label_ids], sample["label"].numpy())
        assert set(sample["label"].unique().tolist()) <= {0, 13, 255, 18}
        # colours encode the raw labelId; away from stripe borders the resized image still matches it
        expected = image_for(label_ids).astype(int)
        close = np.abs(to_uint8(sample["image"]).astype(int) - expected).max(axis=2) <= 12
        assert close.mean() > 0.6

