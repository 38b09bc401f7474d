"""``inverseg data check`` and ``inverseg data preview`` on tiny fixtures, and on ../shared/data when present."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import H, W, build_camvid, build_cmp, save_index, save_rgb
from inverseg.cli.main import main
from inverseg.data import DataConfig, open_dataset
from inverseg.labels.schemes import CAMVID


def run_json(capsys, *argv) -> tuple[int, dict]:
    status = main(["data", "check", *map(str, argv), "--json"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # one JSON object, nothing else on stdout
    return status, json.loads(lines[0])


def test_check_clean_fixture(tmp_path, capsys):
    build_camvid(tmp_path, {"train": 3, "val": 2})
    status, report = run_json(capsys, tmp_path, "--dataset", "camvid")
    assert status == 0
    assert report["pairs"] == 3 and report["num_classes"] == 11 and report["problems"] == []
    assert report["classes_present"] == list(range(11))  # 0–11 written; 11 is void, not a class
    assert report["split"] == "train" and report["scheme"] == "camvid" and report["has_instances"] is False
    assert report["void_fraction"] == pytest.approx(1 / 12, abs=1e-4)
    assert sum(report["pixel_fraction"].values()) + report["void_fraction"] == pytest.approx(1.0, abs=1e-3)
    status, report = run_json(capsys, tmp_path, "--dataset", "camvid", "--split", "val")
    assert status == 0 and report["pairs"] == 2 and report["classes_present"] == [0, 1, 2, 3, 4, 5, 6, 7]


def test_check_text_output(tmp_path, capsys):
    build_cmp(tmp_path, count=2)
    assert main(["data", "check", str(tmp_path), "--dataset", "cmp"]) == 0
    out = capsys.readouterr().out
    assert "(cmp, split all): 2 pairs, 12 classes" in out and out.strip().endswith("no problems")


def test_check_stray_label_value(tmp_path, capsys):
    raws = build_camvid(tmp_path, {"train": 3})
    raw = raws["train"][1].copy()
    raw.flat[:200] = 200  # exactly 200 px of value 200
    bad = save_index(tmp_path / "trainannot" / "train001.png", raw)
    status, report = run_json(capsys, tmp_path, "--dataset", "camvid")
    assert status == 1
    assert report["pairs"] == 2 and len(report["problems"]) == 1
    problem = report["problems"][0]
    assert problem.startswith(f"{bad}: ") and "200 (200 px)" in problem and "\n" not in problem
    assert main(["data", "check", str(tmp_path), "--dataset", "camvid"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line for line in lines if line.startswith("problem: ")] == [f"problem: {problem}"]


def test_check_missing_partner(tmp_path, capsys):
    build_camvid(tmp_path, {"train": 2})
    (tmp_path / "trainannot" / "train000.png").unlink()
    status, report = run_json(capsys, tmp_path, "--dataset", "camvid")
    assert status == 1 and report["pairs"] == 1
    assert report["problems"] == [f"{tmp_path / 'train' / 'train000.png'}: no label file for this image "
                                  f"(missing partner)"]


def test_check_reports_size_mismatch_and_undecodable(tmp_path, capsys):
    build_camvid(tmp_path, {"train": 3})
    save_rgb(tmp_path / "train" / "train000.png", np.zeros((H, W + 2, 3), np.uint8))
    (tmp_path / "trainannot" / "train002.png").write_bytes(b"not an image")
    status, report = run_json(capsys, tmp_path, "--dataset", "camvid")
    assert status == 1 and report["pairs"] == 1 and len(report["problems"]) == 2
    assert "train000.png: image is 34×24 but label train000.png is 32×24" in report["problems"][0]
    assert f"{tmp_path / 'trainannot' / 'train002.png'}: cannot decode label" in report["problems"][1]


def test_check_empty_or_missing_dataset(tmp_path, capsys):
    status, report = run_json(capsys, tmp_path, "--dataset", "ade20k")
    assert status == 1 and report["pairs"] == 0 and report["num_classes"] is None
    assert len(report["problems"]) == 1 and "no image/label pairs found" in report["problems"][0]
    status, report = run_json(capsys, tmp_path / "absent", "--dataset", "camvid")
    assert status == 1 and "does not exist" in report["problems"][0]


def test_check_rejects_unknown_kind(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "check", str(tmp_path), "--dataset", "synthetic"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_preview_writes_grid_of_expected_layout(tmp_path, capsys):
    build_camvid(tmp_path / "data", {"train": 3})
    out = tmp_path / "out" / "preview.png"
    status = main(["data", "preview", str(tmp_path / "data"), "--dataset", "camvid", "--out", str(out),
                   "--n", "2", "--height", "48"])
    assert status == 0
    assert f"wrote {out} (2 pairs from 3" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.mode == "RGB"
        grid = np.asarray(image)
    tile_w = W * 48 // H  # 64
    pad, title = 4, 14
    assert grid.shape == (title + 2 * 48 + 3 * pad, 2 * tile_w + 3 * pad, 3)
    # first row, label column: the coloured label of train000 (stripes of CamVid classes 0, 1, 2, 3)
    top = title + pad
    label_tile = grid[top: top + 48, pad: pad + tile_w]
    for column, class_id in zip((8, 24, 40, 56), (0, 1, 2, 3)):
        assert tuple(label_tile[24, column]) == CAMVID.colors[class_id]
    image_tile = grid[top: top + 48, 2 * pad + tile_w: 2 * pad + 2 * tile_w]
    assert not np.array_equal(image_tile, label_tile)


def test_preview_of_a_folder_needs_a_kind(tmp_path, capsys):
    build_camvid(tmp_path, {"train": 1})
    assert main(["data", "preview", str(tmp_path), "--out", str(tmp_path / "p.png")]) == 2
    assert "pass --dataset KIND" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.shared_data
@pytest.mark.parametrize("split, pairs", [("train", 367), ("val", 101)])
def test_check_real_camvid(shared_data, capsys, split, pairs):
    status, report = run_json(capsys, shared_data / "camvid", "--dataset", "camvid", "--split", split)
    assert report["problems"] == [] and status == 0
    assert report["pairs"] == pairs and report["split"] == split and report["num_classes"] == 11
    assert report["classes_present"] == list(range(11))
    assert 0.0 < report["void_fraction"] < 0.2


@pytest.mark.shared_data
def test_check_real_cmp(shared_data, capsys):
    status, report = run_json(capsys, shared_data / "cmp_facade", "--dataset", "cmp")
    assert report["problems"] == [] and status == 0
    assert report["pairs"] == 378 and report["split"] == "all" and report["num_classes"] == 12
    assert report["classes_present"] == list(range(12)) and report["void_fraction"] == 0.0


@pytest.mark.shared_data
@pytest.mark.parametrize("kind, folder, split, num_classes, void",
                         [("camvid", "camvid", "val", 11, 11), ("cmp", "cmp_facade", "all", 12, 255)])
def test_open_real_samples(shared_data, kind, folder, split, num_classes, void):
    dataset = open_dataset(DataConfig(dataset=kind, path=str(shared_data / folder), split=split, size=(96, 128)))
    assert dataset.spec.num_classes == num_classes
    for index in (0, len(dataset) // 2, len(dataset) - 1):
        sample = dataset[index]
        assert sample["image"].shape == (3, 96, 128) and sample["label"].shape == (96, 128)
        assert sample["label"].dtype == torch.int64
        assert -1.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
        assert float(sample["image"].std()) > 0.05  # a photo, not a blank tile
        values = set(sample["label"].unique().tolist())
        assert values <= set(range(num_classes)) | {void}
        assert len(values - {void}) >= 2
        assert sample["name"] == dataset.pairs[index].name
