"""``inverseg evaluate`` / ``compare`` end to end on a tiny colour-coded dataset with a scripted colour segmenter
(so the segmentation numbers are known exactly), and ``evaluate --checkpoint`` on a real tiny CRN run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from inverseg import paths
from inverseg.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

COLOURS = {0: (200, 40, 40), 1: (40, 200, 40), 2: (40, 40, 200), 255: (128, 128, 128)}
H, W = 24, 32
BOX = 8  # the blue box is BOX×BOX pixels


def layout(index: int) -> np.ndarray:
    """Rows 0–1 void; left half red, right half green; an 8×8 blue box in the red half (position varies)."""
    label = np.zeros((H, W), np.uint8)
    label[:, W // 2:] = 1
    top, left = 4 + index % 3 * 4, 2 + index % 2 * 4
    label[top:top + BOX, left:left + BOX] = 2
    label[:2] = 255
    return label


def paint(label: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-12, 12, size=(H, W, 3))
    table = np.zeros((256, 3), np.int64)
    for value, colour in COLOURS.items():
        table[value] = colour
    return np.clip(table[label] + noise, 0, 255).astype(np.uint8)


class ColourSegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("colours", torch.tensor([COLOURS[i] for i in range(3)], dtype=torch.float32) / 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, None] - self.colours[None, :, :, None, None]) ** 2).sum(2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Dataset (train 4 / val 4), a colour segmenter JSON, and a cache with the offline weights linked in."""
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    for split in ("train", "val"):
        for index in range(4):
            label = layout(index + (10 if split == "train" else 0))
            (data / split / "images").mkdir(parents=True, exist_ok=True)
            (data / split / "labels").mkdir(parents=True, exist_ok=True)
            Image.fromarray(paint(label, index + (10 if split == "train" else 0))).save(
                data / split / "images" / f"{split}_{index}.png")
            Image.fromarray(label).save(data / split / "labels" / f"{split}_{index}.png")
    (data / "classes.tsv").write_text("0\tred\t200,40,40\n1\tgreen\t40,200,40\n2\tblue\t40,40,200\n"
                                      "255\tvoid\t128,128,128\n")
    torch.jit.script(ColourSegmenter()).save(str(root / "colour.pt"))
    (root / "colour.json").write_text(json.dumps({"name": "colour segmenter", "model": "colour.pt",
                                                   "num_outputs": 3}))
    cache = root / "cache"
    cache.mkdir()
    (cache / "weights").symlink_to(paths.weights_dir().resolve(), target_is_directory=True)
    return root


@pytest.fixture()
def env(world, monkeypatch, tmp_path):
    monkeypatch.setenv("INVERSEG_CACHE", str(world / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no FID Inception file: FD-MobileNetV2
    return world


def evaluate(*args: str) -> int:
    return main(["evaluate", *map(str, args)])


def generated_folder(world: Path, name: str, wrong_box: bool = False, k: int = 1) -> Path:
    """Generated images for the val layouts: the real photos, or with the blue box painted green."""
    folder = world / name
    folder.mkdir(exist_ok=True)
    for index in range(4):
        label = layout(index)
        if wrong_box:
            label = np.where(label == 2, 1, label).astype(np.uint8)
        for sample in range(k):
            image = paint(label, index + 100 * sample) if k > 1 else \
                np.asarray(Image.open(world / "data" / "val" / "images" / f"val_{index}.png"))
            if wrong_box and k == 1:
                image = paint(label, index)
            suffix = f"_{sample}" if k > 1 else ""
            Image.fromarray(image).save(folder / f"val_{index}{suffix}.png")
    return folder


def test_evaluate_images_real_copies_score_perfectly_and_write_reports(env, capsys):
    images = generated_folder(env, "copies")
    out = env / "results" / "copies.json"
    status = evaluate("--images", images, "--labels", env / "data" / "val" / "labels", "--dataset", "folder",
                      "--data", env / "data", "--evaluator", env / "colour.json", "--json", out, "--name", "copies")
    assert status == 0
    result = json.loads(out.read_text())
    segmentation = result["metrics"]["segmentation"]
    assert segmentation["generated"]["miou"] == 1.0 and segmentation["real"]["miou"] == 1.0
    assert segmentation["generated"]["pixels"] == 4 * (H - 2) * W  # void rows excluded
    frechet = result["metrics"]["frechet"]
    assert frechet["name"] == "FD-MobileNetV2" and frechet["generated_vs_real"] == pytest.approx(0, abs=1e-3)
    assert frechet["real_reference_vs_real"] > 0.1 and frechet["reference_split"] == "train"
    assert result["metrics"]["kernel"]["name"] == "KD-MobileNetV2" and result["metrics"]["diversity"] is None
    protocol = result["protocol"]
    assert protocol["resolution"] == [H, W] and protocol["label_resize"] == "nearest"
    assert protocol["ignore_index"] == 255 and protocol["id_mapping"] == "identity"
    assert protocol["evaluator"]["kind"] == "torchscript" and len(protocol["evaluator"]["sha256"]) == 64
    assert protocol["feature_extractor"]["name"] == "mobilenet_v2"
    assert protocol["num_images"] == {"generated": 4, "real": 4, "real_reference": 4}
    for key in ("markdown", "html", "iou_chart", "samples"):
        assert Path(result["report"][key]).is_file()
    markdown = Path(result["report"]["markdown"]).read_text()
    assert "| mIoU ↑ | 1.000 | 1.000 |" in markdown and "FD-MobileNetV2" in markdown and "FID" not in markdown
    assert "copies_iou.png" in markdown and "ignore id 255 excluded" in markdown
    assert "<table>" in Path(result["report"]["html"]).read_text()
    assert Image.open(result["report"]["iou_chart"]).size[0] > 300
    assert "mIoU 1.000" in capsys.readouterr().out
    # the real statistics were cached and are reused
    assert len(list((env / "cache" / "stats").glob("*.npz"))) == 2
    evaluate("--images", images, "--labels", env / "data" / "val" / "labels", "--dataset", "folder",
             "--data", env / "data", "--evaluator", env / "colour.json", "--json", env / "results" / "again.json")
    assert json.loads((env / "results" / "again.json").read_text())["protocol"]["real_stats"] == "cached"


def test_evaluate_images_with_a_wrong_class_and_k_samples(env):
    images = generated_folder(env, "wrong", wrong_box=True, k=2)
    out = env / "results" / "wrong.json"
    assert evaluate("--images", images, "--labels", env / "data" / "val" / "labels", "--dataset", "folder",
                    "--data", env / "data", "--evaluator", env / "colour.json", "--json", out, "--k", "2",
                    "--name", "wrong") == 0
    result = json.loads(out.read_text())
    generated = result["metrics"]["segmentation"]["generated"]
    red, green, blue = ((H - 2) * W // 2 - BOX * BOX) * 4, (H - 2) * W // 2 * 4, BOX * BOX * 4
    assert generated["per_class_iou"] == {"red": 1.0, "green": pytest.approx(green / (green + blue)), "blue": 0.0}
    assert generated["miou"] == pytest.approx((1 + green / (green + blue)) / 3)
    assert generated["pixel_accuracy"] == pytest.approx((red + green) / (red + green + blue))
    assert result["metrics"]["segmentation"]["real"]["miou"] == 1.0
    assert result["metrics"]["frechet"]["generated_vs_real"] > 0.1
    diversity = result["metrics"]["diversity"]
    assert diversity["k"] == 2 and diversity["layouts"] == 4 and diversity["mean"] > 0
    assert diversity["name"].startswith("LPIPS-style, unweighted")
    assert result["protocol"]["samples_per_layout"] == 2


def test_compare_prints_one_table(env, capsys):
    results = env / "results"
    if not (results / "copies.json").is_file() or not (results / "wrong.json").is_file():
        pytest.skip("needs the two evaluations above")
    capsys.readouterr()
    assert main(["compare", str(results / "copies.json"), str(results / "wrong.json")]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["method", "params"] and "FD-MobileNetV2↓" in lines[0]
    copies = next(line for line in lines if line.startswith("copies"))
    wrong = next(line for line in lines if line.startswith("wrong"))
    assert "100.0" in copies and f"{100 * json.loads((results / 'wrong.json').read_text())['summary']['miou_generated']:.1f}" \
        in wrong
    assert "WARNING" not in text and "evaluator sha256" in text
    assert main(["compare", str(results / "copies.json"), str(results / "wrong.json"), "--markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("| method | params |") and "|---|---:|" in markdown
    other = json.loads((results / "wrong.json").read_text())
    other["summary"]["evaluator_sha256"] = "f" * 64
    (results / "other.json").write_text(json.dumps(other))
    main(["compare", str(results / "copies.json"), str(results / "other.json")])
    assert "WARNING: different evaluators" in capsys.readouterr().out


def test_evaluate_without_an_evaluator_says_how_to_train_one(env, capsys):
    images = generated_folder(env, "copies")
    status = evaluate("--images", images, "--labels", env / "data" / "val" / "labels", "--dataset", "folder",
                      "--data", env / "data", "--json", env / "results" / "none.json")
    error = capsys.readouterr().err
    assert status == 2 and len(error.strip().splitlines()) == 1
    assert f"inverseg evaluator train --dataset folder --data {env / 'data'} --size {H}x{W}" in error
    assert str(env / "cache" / "evaluators") in error


def test_evaluate_images_name_mismatch_is_one_line(env, capsys, tmp_path):
    folder = tmp_path / "typo"
    shutil.copytree(generated_folder(env, "copies"), folder)
    (folder / "val_0.png").rename(folder / "vall_0.png")
    assert evaluate("--images", folder, "--labels", env / "data" / "val" / "labels", "--dataset", "folder",
                    "--data", env / "data", "--evaluator", env / "colour.json") == 2
    assert "match no label file" in capsys.readouterr().err


def test_evaluate_checkpoint_of_a_real_tiny_crn_run(env, capsys, tmp_path):
    from inverseg.config import apply_overrides, build_run_config, read_preset
    from inverseg.train import Trainer

    config = build_run_config(apply_overrides(read_preset("crn-cpu"), [
        "data.dataset=folder", f"data.path={env / 'data'}", f"data.size=[{H},{W}]", "model.widths=[8,8,8]",
        "model.base_grid=[6,8]", "loss.layers=[relu1_2,relu2_2]", "train.minutes=null", "train.steps=3",
        "train.checkpoint_every=3", "train.sample_every=0", "train.num_samples=0", "train.tensorboard=false",
    ]), preset="tiny")
    run = tmp_path / "run"
    Trainer(config, run, show_progress=False).fit()
    status = evaluate("--checkpoint", run, "--dataset", "folder", "--data", env / "data", "--evaluator",
                      env / "colour.json")
    assert status == 0, capsys.readouterr().err
    result = json.loads((run / "eval" / "eval_val.json").read_text())
    source = result["source"]
    assert source["kind"] == "checkpoint" and source["method"] == "crn" and source["step"] == 3
    assert source["name"] == "run" and source["parameters"] == sum(
        p.numel() for p in __import__("inverseg.pipeline", fromlist=["Pipeline"]).Pipeline.from_pretrained(run)
        .method.generator.parameters())
    assert result["protocol"]["num_images"]["generated"] == 4 and result["protocol"]["generated_size"] == [H, W]
    assert (run / "eval" / "eval_val.md").is_file() and (run / "eval" / "eval_val_samples.png").is_file()
    state = json.loads(next((run / "checkpoints").glob("step_*/state.json")).read_text())
    cpu_seconds = state["cpu_seconds"]
    assert source["train_cpu_seconds"] == cpu_seconds > 0
    # which perception network and weights file the run trained with, as resolved (issue 11 §5)
    assert source["perception"] == state["perception"]
    vgg = source["perception"]["perceptual.extractor"]
    assert vgg["requested"] == "VGG19" and vgg["network"] in ("VGG16", "VGG19") and len(vgg["sha256"]) == 64
    assert result["summary"]["perception"] == f"perceptual.extractor: {vgg['summary']}"
    assert f"| perception network in training | perceptual.extractor: {vgg['summary']} |" in \
        (run / "eval" / "eval_val.md").read_text()
    capsys.readouterr()
    assert main(["compare", str(run), "--markdown"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| method | params | steps | train CPU-min |")
    assert table[2].startswith(f"| run | ") and f"| 3 | {cpu_seconds / 60:.1f} |" in table[2]
    assert f"perception networks in training: run — perceptual.extractor: {vgg['summary']}  " in table
    # the report keeps its sample tiles; --figure puts runs side by side: layout | run | run | real
    tiles = result["report"]["sample_tiles"]
    assert tiles["names"] and all((Path(tiles["folder"]) / f"{name}_{kind}.png").is_file()
                                  for name in tiles["names"] for kind in ("layout", "generated", "real"))
    figure = tmp_path / "figure.png"
    assert main(["compare", str(run), str(run), "--figure", str(figure), "--rows", "2"]) == 0
    width, height = Image.open(figure).size
    rows = min(2, len(tiles["names"]))
    assert height == 14 + rows * 96 + (rows + 1) * 4  # title line + rows of 96-px tiles + padding
    assert width == 4 * round(96 * W / H) + 5 * 4  # four columns
    # a single-output CRN cannot give k = 2 samples: one line, no traceback
    assert evaluate("--checkpoint", run, "--dataset", "folder", "--data", env / "data", "--evaluator",
                    env / "colour.json", "--k", "2") == 2
    assert "num_outputs" in capsys.readouterr().err


def test_perception_summary_says_what_a_run_trained_with():
    from inverseg.eval.evaluate import perception_summary

    record = {"summary": "VGG16 (HED-offline) in place of VGG19; vgg16-caffe-offline.safetensors sha256 82d5086214d8"}
    assert perception_summary({"perceptual.extractor": record}) == f"perceptual.extractor: {record['summary']}"
    assert perception_summary({}) == "none (no perception network in training)"
    assert perception_summary(None).startswith("not recorded")
    assert perception_summary(None, "images").startswith("unknown")


# ------------------------------------------------------------------------------------------- real CamVid
@pytest.mark.shared_data
def test_evaluator_training_on_real_camvid_runs(shared_data, tmp_path):
    from inverseg.data import DataConfig
    from inverseg.eval.train_segmenter import EvaluatorTrainConfig, train_evaluator

    config = EvaluatorTrainConfig(size=(96, 128), minutes=None, steps=2, batch_size=2, threads=None, input_scale=1.0)
    summary = train_evaluator(DataConfig(dataset="camvid", path=str(shared_data / "camvid")), tmp_path / "ev",
                              config, show_progress=False, backbone_weights=None)
    document = json.loads((tmp_path / "ev" / "evaluator.json").read_text())
    assert summary["validation"]["images"] == 101 and document["training"]["train_images"] == 367
    assert document["protocol"]["ignore_index"] == 11 and document["size"] == [96, 128]
    weights = dict(zip(document["spec"]["class_names"], document["training"]["class_weights"]))
    assert weights["pole"] > 1 > weights["road"]  # rare thin classes weigh more than road


@pytest.mark.shared_data
@pytest.mark.slow
def test_cached_camvid_evaluator_on_real_validation_images(shared_data, tmp_path, capsys):
    """The documented CamVid evaluator (if trained into the cache): real photos scored as 'generated' images
    give FD 0 to themselves, the real-image mIoU twice, and that mIoU is at least 0.5."""
    from inverseg.eval.paths import default_evaluator_dir

    evaluator = default_evaluator_dir("camvid", (96, 128))
    if not (evaluator / "evaluator.json").is_file():
        pytest.skip(f"no CamVid evaluator in {evaluator}")
    camvid = shared_data / "camvid"
    out = tmp_path / "real.json"
    assert evaluate("--images", camvid / "val", "--labels", camvid / "valannot", "--dataset", "camvid",
                    "--data", camvid, "--json", out, "--name", "real val", "--extractor", "mobilenet_v2") == 0
    result = json.loads(out.read_text())
    segmentation = result["metrics"]["segmentation"]
    assert segmentation["generated"] == segmentation["real"] and segmentation["real"]["miou"] >= 0.5
    assert result["metrics"]["frechet"]["generated_vs_real"] == pytest.approx(0, abs=1e-3)
    assert result["metrics"]["frechet"]["real_reference_vs_real"] > 1
    assert result["protocol"]["num_images"] == {"generated": 101, "real": 101, "real_reference": 367}
