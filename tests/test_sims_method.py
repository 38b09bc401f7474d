"""SIMS as a method: presets, training stages, the canvas in galleries and ``inverseg synthesize``, the empty-canvas
lower bound, and the paper-scale preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import COLOURS, build_cityscapes, colour_dataset
from inverseg.cli.main import main
from inverseg.config import apply_overrides, build_run_config, load_run_config, read_preset
from inverseg.data.synthetic import SyntheticStreets
from inverseg.methods.sims import SIMS, bank_location
from inverseg.pipeline import Pipeline
from inverseg.sims.bank import BankError, MemoryBank
from inverseg.train import Trainer
from inverseg.train.trainer import move

# a tiny SIMS: every network at a few thousand parameters, small windows, 2 VGG layers
TINY = [
    "model.encoder_widths=[8,16,16]", "model.encoder_convs=[1,1,1]", "model.decoder_widths=[16,16,16]",
    "model.final_width=8", "loss.layers=[relu1_2,relu2_2]", "loss.rebalance_at=4", "loss.window=2",
    "transform.window=16", "transform.widths=[8,8]", "transform.batch_size=4",
    "order.input_size=[12,16]", "order.widths=[8,8]", "order.hidden=16", "order.batch_size=4",
    "bank.grid=16", "train.minutes=null", "train.log_every=1", "train.tensorboard=false",
]


def tiny_synthetic(tmp_path: Path, *overrides: str):
    """sims-cpu on 4 procedural scenes at 48×64 (bank built into tmp_path)."""
    data = apply_overrides(read_preset("sims-cpu"), [
        "data.size=[48,64]", "data.length=4", "bank.data.size=[48,64]", "bank.data.length=4",
        f"bank.path={tmp_path / 'bank'}", *TINY, *overrides])
    return build_run_config(data, preset="tiny-sims")


def folder_config(data_root: Path, tmp_path: Path, *overrides: str):
    data = apply_overrides(read_preset("sims-cpu"), [
        "data.dataset=folder", f"data.path={data_root}", "data.size=[24,32]",
        "bank.data.dataset=folder", f"bank.data.path={data_root}", "bank.data.size=[24,32]",
        f"bank.path={tmp_path / 'bank'}", *TINY, *overrides])
    return build_run_config(data, preset="tiny-sims-folder")


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ presets
def test_presets_parse_and_name_their_sources():
    for name in ("sims-cpu", "sims-camvid-cpu", "sims-256p"):
        config = load_run_config(name)
        assert config.method == "sims"
        assert tuple(config.settings.bank.data.size) == tuple(config.data.size)  # the bank mirrors the data
        assert config.settings.bank.data.dataset == config.data.dataset
        assert config.settings.bank.data.path == config.data.path
        if config.data.dataset != "synthetic":
            assert config.settings.bank.data.length is None
    paper = load_run_config("sims-256p").settings
    assert paper.model.encoder_widths == (64, 128, 256, 512, 512, 512)  # official synthesis_256_512.py
    assert paper.model.encoder_convs == (2, 2, 3, 3, 3, 3)
    assert paper.loss.balance == "official-crn-512p" and paper.loss.semantic_weight == 10
    assert paper.transform.params == "affine" and paper.transform.round_to_identity
    assert paper.bank.merge_thin == ("pole", "traffic light", "traffic sign")
    text = (Path(__file__).resolve().parents[1] / "src/inverseg/configs/sims-256p.yaml").read_text()
    assert "official" in text and "implementations.md" in text


def test_bank_location_is_keyed_by_data_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("INVERSEG_CACHE", str(tmp_path))
    settings = load_run_config("sims-cpu").settings.bank
    first = bank_location(settings, (96, 128))
    assert first.parent == tmp_path / "sims-banks" and first.name.startswith("synthetic-train-96x128-")
    settings.min_area = 0.01
    assert bank_location(settings, (96, 128)) != first
    settings.path = str(tmp_path / "mine")
    assert bank_location(settings, (96, 128)) == tmp_path / "mine"


# ------------------------------------------------------------------------------------------ end to end
def test_train_and_synthesize_on_procedural_scenes(tmp_path, capsys):
    config = tiny_synthetic(tmp_path, "train.steps=4", "transform.steps=3", "order.steps=2",
                            "train.checkpoint_every=4", "train.sample_every=4", "train.num_samples=2")
    run = tmp_path / "run"
    summary = Trainer(config, run, show_progress=False).fit()
    assert summary["step"] == 4
    records = [json.loads(line) for line in (run / "logs" / "losses.jsonl").read_text().splitlines()]
    assert "transform_l1" in records[0] and "order_ce" in records[0]  # stage 1: T and ordering train …
    assert "transform_l1" not in records[3] and "order_ce" not in records[2]  # … only for their first steps
    assert all(np.isfinite(r["loss"]) for r in records) and "semantic_ce" in records[0]
    bank = MemoryBank(tmp_path / "bank")
    assert bank.num_images == 4 and len(bank) > 10 and bank.image_size == (48, 64)
    state = json.loads((run / "checkpoints" / "step_0000004" / "state.json").read_text())
    assert state["method_state"]["bank"]["segments"] == len(bank)
    # gallery: layout | canvas | output | reference
    grid = np.asarray(Image.open(run / "samples" / "step_0000004.png"))
    assert grid.shape[1] >= 4 * 64
    # inverseg synthesize writes NAME.png and NAME_canvas.png
    val = SyntheticStreets("val", size=(48, 64), length=2)
    labels = tmp_path / "labels"
    labels.mkdir()
    for index in range(2):
        Image.fromarray(val[index]["label"].numpy().astype(np.uint8)).save(labels / f"scene{index}.png")
    out = tmp_path / "out"
    assert main(["synthesize", "--checkpoint", str(run), "--labels", str(labels), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scene0.png", "scene0_canvas.png", "scene1.png",
                                                     "scene1_canvas.png"]
    canvas = np.asarray(Image.open(out / "scene0_canvas.png"))
    assert canvas.shape == (48, 64, 3) and canvas.any()  # something was pasted …
    assert (canvas == 0).all(axis=2).any()  # … and elided bands / empty pixels are black
    # k outputs use the k best candidates: one canvas per output
    pipe = Pipeline.from_pretrained(run)
    images = pipe(labels / "scene0.png", k=2)
    assert len(images) == 2 and set(pipe.last_extras) == {"canvas", "canvas_1"}
    with pytest.raises(ValueError, match="top_k"):
        pipe(labels / "scene0.png", k=11)
    empty = pipe(labels / "scene0.png", canvas="empty")  # a string option, not a style-image path
    assert len(empty) == 1 and not np.asarray(pipe.last_extras["canvas"]).any()


def test_resume_continues_exactly(tmp_path):
    """Simulated canvases, T and ordering batches all draw from the checkpointed torch RNG: resuming is exact."""
    common = ("train.checkpoint_every=2", "train.num_samples=0", "transform.steps=3", "order.steps=3")
    straight = tmp_path / "straight"
    Trainer(tiny_synthetic(tmp_path, "train.steps=4", *common), straight, show_progress=False).fit()
    resumed = tmp_path / "resumed"
    Trainer(tiny_synthetic(tmp_path, "train.steps=2", *common), resumed, show_progress=False).fit()
    Trainer.resume(resumed, ["train.steps=4"], show_progress=False).fit()
    losses = [[json.loads(line) for line in (run / "logs" / "losses.jsonl").read_text().splitlines()]
              for run in (straight, resumed)]
    keys = ("loss", "transform_l1", "order_ce", "canvas_coverage")
    assert [[r.get(k) for k in keys] for r in losses[0]] == [[r.get(k) for k in keys] for r in losses[1]]


def test_canvas_is_built_from_retrieved_segments(tmp_path):
    config = tiny_synthetic(tmp_path)
    method = SIMS(config.settings, SyntheticStreets.spec, (48, 64), training=True)
    label = SyntheticStreets("val", size=(48, 64), length=1)[0]["label"]
    canvas = method.build_canvas(label)
    assert canvas.mask.float().mean() > 0.3  # most of the layout receives material
    pasted = canvas.owner >= 0
    white = (canvas.image == 1).all(0)
    assert white.any() and torch.equal(canvas.mask, pasted)  # official elision: white noise, still covered
    eroded = SIMS(tiny_synthetic(tmp_path, "canvas.elision_mode=erode").settings, SyntheticStreets.spec, (48, 64),
                  training=True).build_canvas(label)
    assert (eroded.owner >= 0).float().mean() > eroded.mask.float().mean()  # erode: bands uncovered
    # by default pasted segments are cut to their query region and the layout follows what was pasted (official
    # rewrite): wherever the canvas shows a segment, the layout carries that segment's class, which is the query's
    assert method.settings.canvas.clip_to_query and method.settings.canvas.modify_layout
    assert torch.equal(canvas.layout[pasted], label[pasted])
    changed = canvas.layout != label
    assert (canvas.layout[changed] == SyntheticStreets.spec.ignore_index).all()  # uncovered object parts: void
    unclipped = SIMS(tiny_synthetic(tmp_path, "canvas.clip_to_query=false", "canvas.modify_layout=false").settings,
                     SyntheticStreets.spec, (48, 64), training=True)
    plain = unclipped.build_canvas(label)
    assert torch.equal(plain.layout, label)  # modify_layout=false keeps the input layout
    assert (plain.owner >= 0).sum() >= pasted.sum()  # clipping only removes pixels
    # each pasted segment keeps its class: where the canvas shows a segment, the layout mostly agrees
    query = method.retriever.query(label.numpy())
    matches = method.retriever.retrieve(query)
    assert any(m is not None for m in matches)
    for j, match in enumerate(matches):
        if match is not None:
            assert all(method.bank.classes[i] == query.decomposition.segments[j].class_id for i in match.indices)
    # the official options: layout rewritten, transforms rounded to the identity, mask-only image retrieval
    official = tiny_synthetic(tmp_path, "canvas.clip_to_query=false", "transform.round_to_identity=true",
                              "retrieval.geometry=image", "retrieval.context=false", "order.mode=heuristic",
                              "transform.reject_if_worse=true")
    method = SIMS(official.settings, SyntheticStreets.spec, (48, 64), training=True)
    canvas = method.build_canvas(label)
    assert method.orderer is None and canvas.mask.any()
    changed = canvas.layout != label
    # rewritten where a pasted segment is visible, or to void in the query region of a pasted segment
    assert (changed & (canvas.owner < 0)).sum() == ((canvas.layout == SyntheticStreets.spec.ignore_index)
                                                    & changed & (canvas.owner < 0)).sum()


@pytest.mark.slow
def test_empty_canvas_still_follows_the_layout(tmp_path):
    """The paper's lower bound (§3.4): with nothing on the canvas, f synthesises from the layout alone.

    With the official wiring (the canvas re-enters every decoder level) this toy needs ~300 steps to reach 0.94
    (0.54 at 150); the layout-only wiring reached 0.95 at 150."""
    torch.manual_seed(0)
    data_root = colour_dataset(tmp_path / "data")
    config = folder_config(data_root, tmp_path, "simulate.empty_prob=0.5", "optim.lr=3e-3",
                           "loss.semantic_weight=0", "transform.enabled=false", "order.mode=heuristic")
    trainer = Trainer(config, tmp_path / "run", show_progress=False)
    method = trainer.method
    stream = trainer.batches(0)
    for step in range(300):
        _, batch = next(stream)
        method.train()
        method.train_step(move(batch, trainer.device), step)
    method.eval()
    labels = torch.stack([trainer.validation[i]["label"] for i in range(2)])
    images = method.sample(labels, canvas="empty")[:, 0]
    assert not method.last_extras["canvas"].gt(-1).any()  # the canvas really was empty
    pixels = ((images.permute(0, 2, 3, 1) + 1) * 127.5).reshape(-1, 1, 3)
    predicted = (pixels - torch.from_numpy(COLOURS).float()).norm(dim=2).argmin(1).view(labels.shape)
    assert (predicted == labels).float().mean() > 0.85


def test_bank_cli_build_and_info(tmp_path, capsys):
    data_root = colour_dataset(tmp_path / "data", count=3)
    out = tmp_path / "bank"
    assert main(["bank", "build", "--dataset", "folder", "--data", str(data_root), "--out", str(out),
                 "--size", "24x32", "--grid", "16", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["segments"] >= 6 and summary["grid"] == 16
    assert main(["bank", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["settings"]["grid"] == 16 and info["segments"] == summary["segments"]
    assert main(["bank", "build", "--dataset", "folder", "--data", str(data_root), "--out", str(out),
                 "--size", "24x32", "--quiet"]) == 2  # exists: refuses without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["bank", "build", "--dataset", "folder", "--data", str(data_root), "--out", str(tmp_path / "x"),
                 "--size", "24by32"]) == 2


def test_a_trained_sims_bank_mismatch_is_a_clear_error(tmp_path):
    data_root = colour_dataset(tmp_path / "data", count=3)
    config = folder_config(data_root, tmp_path)
    SIMS(config.settings, _spec(data_root), (24, 32), training=True)  # builds the bank at bank.path
    with pytest.raises(BankError, match="built at 24×32 but the model works at 48×64"):
        SIMS(config.settings, _spec(data_root), (48, 64), training=True)


def _spec(data_root: Path):
    from inverseg.data import DataConfig, open_dataset

    return open_dataset(DataConfig(dataset="folder", path=str(data_root), size=(24, 32)), augment=False).spec


# ------------------------------------------------------------------------------------------ paper preset
def paper_config(tmp_path: Path, size: tuple[int, int], *overrides: str):
    root = tmp_path / "cityscapes"
    build_cityscapes(root)
    data = apply_overrides(read_preset("sims-256p"), [
        f"data.path={root}", f"bank.data.path={root}", f"bank.path={tmp_path / 'bank'}",
        f"data.size=[{size[0]},{size[1]}]", f"bank.data.size=[{size[0]},{size[1]}]",
        "train.steps=1", "train.num_samples=0", "train.tensorboard=false", *overrides])
    return build_run_config(data, preset="sims-256p")


def run_one_step(config, run_dir: Path) -> dict:
    trainer = Trainer(config, run_dir, show_progress=False)
    _, batch = next(trainer.batches(0))
    trainer.method.train()
    return trainer.method, trainer.method.train_step(move(batch, trainer.device), 0)


def test_paper_preset_builds_and_runs_one_step(tmp_path):
    """sims-256p with its official networks, one step of all three stages (at 32×64 to stay fast)."""
    config = paper_config(tmp_path, (32, 64), "order.input_size=[32,64]", "transform.window=32",
                          "transform.batch_size=2", "order.batch_size=2")
    method, logs = run_one_step(config, tmp_path / "run")
    assert sum(p.numel() for p in method.synthesis.parameters()) > 50e6  # the official 256p network
    assert {"transform_l1", "order_ce", "loss", "semantic_ce"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    assert method.balancer.mode == "fixed"  # official CRN 512p constants


@pytest.mark.slow
def test_paper_preset_one_step_at_256x512(tmp_path):
    config = paper_config(tmp_path, (256, 512), "transform.batch_size=2", "order.batch_size=2")
    _, logs = run_one_step(config, tmp_path / "run")
    assert all(np.isfinite(v) for v in logs.values())


def test_layout_only_checkpoint_gives_a_clear_error(tmp_path):
    """A run trained with the layout-only decoder (the earlier default) does not load into the official wiring
    with a bare shape dump: the error names model.decoder_input."""
    from inverseg.train.checkpoint import CheckpointError

    spec = SyntheticStreets.spec
    trained = SIMS(tiny_synthetic(tmp_path, "model.decoder_input=layout").settings, spec, (48, 64), training=False)
    fresh = SIMS(tiny_synthetic(tmp_path).settings, spec, (48, 64), training=False)
    assert fresh.synthesis.decoder_input == "full"
    with pytest.raises(CheckpointError, match="decoder_input: layout"):
        fresh.load_checkpoint_state(trained.checkpoint_state())
    trained.load_checkpoint_state(trained.checkpoint_state())  # same wiring loads
