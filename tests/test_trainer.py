"""The shared Trainer, checkpoints, exact resume, configs and the inference Pipeline (with a tiny real CRN)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import COLOURS, colour_dataset
from inverseg.cli.main import main
from inverseg.config import ConfigError, ScheduleConfig, apply_overrides, build_run_config, load_run_config, \
    preset_names, read_preset
from inverseg.labels import LabelError
from inverseg.pipeline import Pipeline
from inverseg.train import Trainer
from inverseg.train import checkpoint as ckpt

def make_folder_dataset(root: Path, count: int = 6, seed: int = 0) -> Path:
    """24×32 scenes of three colour-coded classes (a 3-module CRN from 6×8 fits), with their palette."""
    colour_dataset(root, count, seed, square=8, top_range=12, left=4, noise=20)
    (root / "classes.tsv").write_text("0\tred\t200,40,40\n1\tgreen\t40,200,40\n2\tblue\t40,40,200\n")
    return root


def tiny_overrides(data_root: Path) -> list[str]:
    """crn-cpu → a 3-module CRN at 24×32 on the folder dataset, 4 steps (λ rebalanced at the last one)."""
    return [
        "data.dataset=folder", f"data.path={data_root}", "data.size=[24,32]",
        "model.widths=[16,16,16]", "model.base_grid=[6,8]", "loss.layers=[relu1_2,relu2_2]",
        "loss.rebalance_at=4", "loss.window=2", "train.minutes=null", "train.steps=4", "train.log_every=1",
        "train.checkpoint_every=2", "train.sample_every=2", "train.num_samples=2", "train.tensorboard=false",
    ]


def tiny_config(data_root: Path, *overrides: str):
    return build_run_config(apply_overrides(read_preset("crn-cpu"), [*tiny_overrides(data_root), *overrides]),
                            preset="tiny")


@pytest.fixture()
def dataset_root(tmp_path):
    return make_folder_dataset(tmp_path / "data")


def read_losses(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logs" / "losses.jsonl").read_text().splitlines()]


def test_training_writes_run_directory(tmp_path, dataset_root):
    run = tmp_path / "run"
    summary = Trainer(tiny_config(dataset_root), run, show_progress=False).fit()
    assert summary["step"] == 4 and summary["stop_reason"] == "steps"
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_0000002", "step_0000004"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    html = (run / "samples" / "index.html").read_text()
    assert "step_0000004.png" in html and "step_0000002.png" in html
    grid = np.asarray(Image.open(run / "samples" / "step_0000004.png"))
    assert grid.shape[0] > 2 * 24  # two fixed validation layouts, one row each
    losses = read_losses(run)
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in losses)
    state = ckpt.read_state(ckpt.resolve_checkpoint(run))
    assert state["step"] == 4 and state["spec"]["class_names"] == ["red", "green", "blue"]
    # λ were rebalanced at step 4 and are recorded in the state
    assert state["method_state"]["lambda"]["rebalanced"] is True
    # the perception network as resolved (the config only says backbone: auto, weights: auto)
    assert state["config"]["loss"]["backbone"] == "auto" and state["config"]["loss"]["weights"] == "auto"
    perception = state["perception"]["perceptual.extractor"]
    assert perception["network"] in ("VGG16", "VGG19") and perception["requested"] == "VGG19"
    assert perception["sha256"] == hashlib.sha256(Path(perception["path"]).read_bytes()).hexdigest()
    assert perception["layers"] == ["relu1_2", "relu2_2"] and perception["pooling"] == "avg"
    assert state["init_from"] is None


def test_resume_refuses_other_perception_weights_than_the_run_trained_with(tmp_path, dataset_root):
    run = tmp_path / "run"
    Trainer(tiny_config(dataset_root, "train.steps=2", "train.num_samples=0"), run, show_progress=False).fit()
    state_file = ckpt.resolve_checkpoint(run) / "state.json"
    state = json.loads(state_file.read_text())
    state["perception"]["perceptual.extractor"].update(sha256="0" * 64, summary="VGG19 (torchvision ImageNet)")
    state_file.write_text(json.dumps(state))
    with pytest.raises(ckpt.CheckpointError, match=r"perceptual\.extractor was trained with VGG19 \(torchvision "
                                                   r"ImageNet\) but now resolves to VGG1[69]"):
        Trainer.resume(run, ["train.steps=4"], show_progress=False)


def test_checkpoint_round_trip_and_pipeline(tmp_path, dataset_root):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(dataset_root), run, show_progress=False)
    trainer.fit()
    pipe = Pipeline.from_pretrained(run)
    for key, value in trainer.method.generator.state_dict().items():
        assert torch.equal(value, pipe.method.generator.state_dict()[key]), key
    label = np.asarray(Image.open(dataset_root / "val" / "labels" / "val_0.png")).astype(np.int64)
    expected = trainer.method.sample(torch.from_numpy(label)[None], k=1)[0, 0]
    image = np.asarray(pipe(label)[0])
    assert image.shape == (24, 32, 3)
    assert np.abs(image.astype(int) - ((expected.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()).max() <= 1


def test_exact_resume_matches_uninterrupted_run(tmp_path, dataset_root):
    overrides = ("train.deterministic=true", "train.steps=6", "train.checkpoint_every=3", "data.flip=true")
    straight = tmp_path / "straight"
    Trainer(tiny_config(dataset_root, *overrides), straight, show_progress=False).fit()
    interrupted = tmp_path / "interrupted"
    Trainer(tiny_config(dataset_root, *overrides[:-3], "train.steps=3", "train.checkpoint_every=3",
                        "data.flip=true"), interrupted, show_progress=False).fit()
    Trainer.resume(interrupted, ["train.steps=6"], show_progress=False).fit()
    a = [r["loss"] for r in read_losses(straight)]
    b = [r["loss"] for r in read_losses(interrupted)]
    assert len(a) == 6 and len(b) == 6
    assert a == b  # bit-identical, including the steps after the resume
    final_a = ckpt.load_weights(ckpt.resolve_checkpoint(straight))
    final_b = ckpt.load_weights(ckpt.resolve_checkpoint(interrupted))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_interrupt_writes_checkpoint_and_partial_dirs_are_ignored(tmp_path, dataset_root, monkeypatch):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(dataset_root, "train.checkpoint_every=100"), run, show_progress=False)
    original = trainer.method.train_step

    def interrupt_at_third(batch, step):
        if step == 2:
            raise KeyboardInterrupt
        return original(batch, step)

    monkeypatch.setattr(trainer.method, "train_step", interrupt_at_third)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert ckpt.resolve_checkpoint(run).name == "step_0000002"
    # a checkpoint directory that was being written when the process died is never picked up
    (run / "checkpoints" / ".step_0000003.partial").mkdir()
    (run / "checkpoints" / "latest").unlink()
    assert ckpt.resolve_checkpoint(run).name == "step_0000002"
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        ckpt.resolve_checkpoint(tmp_path)


def test_time_budget_stops_and_saves(tmp_path, dataset_root):
    summary = Trainer(tiny_config(dataset_root, "train.minutes=0", "train.steps=100"), tmp_path / "run",
                      show_progress=False).fit()
    assert summary["stop_reason"] == "time" and summary["step"] == 0
    assert ckpt.resolve_checkpoint(tmp_path / "run").name == "step_0000000"
    summary = Trainer(tiny_config(dataset_root, "train.cpu_minutes=0", "train.steps=100"), tmp_path / "cpu",
                      show_progress=False).fit()
    assert summary["stop_reason"] == "cpu_time" and summary["step"] == 0


def test_config_errors_name_the_key(dataset_root):
    with pytest.raises(ConfigError, match=r"unknown key train\.stepz"):
        tiny_config(dataset_root, "train.stepz=3")
    with pytest.raises(ConfigError, match=r"unknown key modle"):
        tiny_config(dataset_root, "modle.widths=[1]")
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        tiny_config(dataset_root, "train.steps=abc")
    with pytest.raises(ConfigError, match=r"data\.size: expected 2 values"):
        tiny_config(dataset_root, "data.size=[1,2,3]")
    with pytest.raises(ConfigError, match="no preset named"):
        load_run_config("no-such-preset")
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides({}, ["train.steps"])


def test_every_preset_parses_and_records_its_source():
    names = preset_names()
    assert {"crn-cpu", "crn-camvid-cpu", "crn-256p", "crn-512p", "crn-1024p", "crn-256p-diversity"} <= set(names)
    for name in names:
        config = load_run_config(name)
        assert config.to_dict()["method"] == config.method
    config = load_run_config("crn-256p-diversity")
    assert config.settings.model.num_outputs == 9 and config.data.size == (256, 512)  # inherited from crn-256p


def test_mismatched_size_is_a_clear_error(tmp_path, dataset_root):
    with pytest.raises(ValueError, match=r"outputs \(24, 32\), but data.size is \(48, 64\)"):
        Trainer(tiny_config(dataset_root, "data.size=[48,64]"), tmp_path / "run", show_progress=False)


def test_schedules():
    linear = ScheduleConfig(kind="linear", decay_start=0.5)
    assert linear.factor(0, 100) == 1.0 and linear.factor(50, 100) == 1.0
    assert linear.factor(75, 100) == pytest.approx(0.5)
    cosine = ScheduleConfig(kind="cosine")
    assert cosine.factor(0, 100) == pytest.approx(1.0) and cosine.factor(100, 100) == pytest.approx(0.0)
    assert ScheduleConfig(warmup_steps=4).factor(1, 100) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    data_root = make_folder_dataset(root / "data")
    run = root / "run"
    Trainer(tiny_config(data_root, "train.steps=2"), run, show_progress=False).fit()
    return run, data_root


def test_pipeline_accepts_index_colour_array_and_tensor(trained_run, tmp_path):
    run, data_root = trained_run
    pipe = Pipeline.from_pretrained(run)
    index_file = data_root / "val" / "labels" / "val_1.png"
    ids = np.asarray(Image.open(index_file)).astype(np.int64)
    colour_file = tmp_path / "colour.png"
    Image.fromarray(COLOURS[ids]).save(colour_file)
    outputs = [np.asarray(pipe(x)[0]) for x in (index_file, colour_file, ids, torch.from_numpy(ids),
                                                  COLOURS[ids])]
    for other in outputs[1:]:
        assert np.array_equal(outputs[0], other)
    big = pipe(np.kron(ids, np.ones((2, 2), np.int64)), size="input")[0]
    assert big.size == (64, 48)
    assert pipe(np.kron(ids, np.ones((2, 2), np.int64)))[0].size == (32, 24)


def test_pipeline_rejects_bad_labels(trained_run, tmp_path):
    run, _ = trained_run
    pipe = Pipeline.from_pretrained(run)
    bad = np.zeros((24, 32), np.int64)
    bad[0, :5] = 7
    with pytest.raises(LabelError, match=r"label values 7 \(5 px\)"):
        pipe(bad)
    colours = np.zeros((24, 32, 3), np.uint8)
    with pytest.raises(LabelError, match=r"colours \(0,0,0\) \(768 px\)"):
        pipe(colours)
    with pytest.raises(ValueError, match="emits 1 image"):
        pipe(np.zeros((24, 32), np.int64), k=2)


def test_synthesize_cli_names_outputs_after_inputs(trained_run, tmp_path, capsys):
    run, data_root = trained_run
    out = tmp_path / "out"
    assert main(["synthesize", "--checkpoint", str(run), "--labels", str(data_root / "val" / "labels"),
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"val_{i}.png" for i in range(6)]
    assert main(["synthesize", "--checkpoint", str(tmp_path), "--labels", str(out), "--out", str(out)]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
