"""``inverseg train --init-from``: a smaller-resolution CRN starts a larger one (the official 256p → 512p → 1024p
progression), pix2pixHD's 512p global generator starts the 1024p local enhancer, errors name what does not fit,
and a resumed init-from run keeps its frozen parameters without reading the source again."""

from __future__ import annotations

import shutil

import pytest
import torch

from _gan_scenes import H, W, synthetic_overrides
from inverseg.cli.main import main
from inverseg.config import load_run_config
from inverseg.train import Trainer
from inverseg.train import checkpoint as ckpt
from inverseg.train.init_from import InitFromError, compress, rename_keys
from test_trainer import make_folder_dataset, read_losses, tiny_config, tiny_overrides

# one more module: 3 modules from 6×8 (24×32) → 4 modules (48×64); the new last module has 8 maps, so the output
# layer (16 → 3 maps before) changes shape, as CRN's does from 256p (512 maps) to 512p (128)
LARGER = ("data.size=[48,64]", "model.widths=[16,16,16,8]")
MODULE_TENSORS = ("conv1.weight", "norm1.weight", "norm1.bias", "conv2.weight", "norm2.weight", "norm2.bias")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A trained 3-module CRN at 24×32 (the "256p" of this test) and its dataset."""
    root = tmp_path_factory.mktemp("init")
    data_root = make_folder_dataset(root / "data")
    run = root / "small"
    Trainer(tiny_config(data_root, "train.steps=2", "train.num_samples=0"), run, show_progress=False).fit()
    return run, data_root


def init(run, *options: str) -> list[str]:
    return [f"train.init.source={run}", *options]


def module_tensors(state: dict, prefix: str) -> dict:
    return {key: value for key, value in state.items() if key.startswith(prefix)}


def test_smaller_crn_initialises_a_larger_one_and_frozen_modules_stay_fixed(small_run, tmp_path):
    run, data_root = small_run
    source = ckpt.load_weights(ckpt.resolve_checkpoint(run))
    fresh = Trainer(tiny_config(data_root, *LARGER), tmp_path / "fresh", show_progress=False).method.generator
    trainer = Trainer(tiny_config(data_root, *LARGER, *init(run, "train.init.exclude=[generator.to_rgb]",
                                                            "train.init.freeze_loaded=true")),
                      tmp_path / "large", show_progress=False)
    start = {k: v.clone() for k, v in trainer.method.generator.state_dict().items()}
    # matching modules are copied exactly, the new module and the output layer keep the fresh initialisation
    for index in range(3):
        for name in MODULE_TENSORS:
            assert torch.equal(start[f"refine.{index}.{name}"], source[f"generator.refine.{index}.{name}"])
    for key, value in fresh.state_dict().items():
        if key.startswith(("refine.3.", "to_rgb.")):
            assert torch.equal(start[key], value), key
    record = trainer.init_record
    assert record["loaded"] == ["generator.refine.{0-2}"] and record["loaded_tensors"] == 18
    assert record["new"] == ["generator.refine.3", "generator.to_rgb"]
    assert sorted(record["unused"]) == ["balancer", "generator.to_rgb"]  # λ is measured afresh; excluded
    assert len(record["frozen"]) == 18 and all(n.startswith("generator.refine.") for n in record["frozen"])
    assert not any(p.requires_grad for p in trainer.method.generator.refine[:3].parameters())

    trainer.fit()  # 4 steps
    after = trainer.method.generator.state_dict()
    for index in range(3):
        for name in MODULE_TENSORS:
            key = f"refine.{index}.{name}"
            assert torch.equal(after[key], start[key]), key  # frozen: unchanged after training
    assert not torch.equal(after["refine.3.conv1.weight"], start["refine.3.conv1.weight"])
    assert not torch.equal(after["to_rgb.weight"], start["to_rgb.weight"])
    state = ckpt.read_state(ckpt.resolve_checkpoint(tmp_path / "large"))
    assert state["init_from"]["frozen"] == record["frozen"]
    assert record["source_cpu_seconds"] == ckpt.read_state(ckpt.resolve_checkpoint(run))["cpu_seconds"] > 0
    assert state["init_from"]["checkpoint"] == str(ckpt.resolve_checkpoint(run).resolve())
    assert state["method_state"]["lambda"]["rebalanced"] is True  # the larger run measured its own λ


def test_unfreeze_keeps_training_a_loaded_module(small_run, tmp_path):
    """The official 1024p recipe: everything loaded is frozen except the previous finest module (g_512)."""
    run, data_root = small_run
    trainer = Trainer(tiny_config(data_root, *LARGER, "train.steps=1", *init(
        run, "train.init.exclude=[generator.to_rgb]", "train.init.freeze_loaded=true",
        "train.init.unfreeze=[generator.refine.2]")), tmp_path / "run", show_progress=False)
    start = {k: v.clone() for k, v in trainer.method.generator.state_dict().items()}
    trainer.fit()
    after = trainer.method.generator.state_dict()
    assert torch.equal(after["refine.1.conv2.weight"], start["refine.1.conv2.weight"])
    assert not torch.equal(after["refine.2.conv2.weight"], start["refine.2.conv2.weight"])
    assert len(trainer.init_record["frozen"]) == 12


def test_shape_mismatch_and_bad_options_are_one_line_errors(small_run, tmp_path):
    run, data_root = small_run
    with pytest.raises(InitFromError) as error:
        Trainer(tiny_config(data_root, *LARGER, *init(run)), tmp_path / "a", show_progress=False)
    message = str(error.value)
    assert "\n" not in message and f"--init-from {run}" in message
    assert "generator.to_rgb.weight (source 3×16×1×1, here 3×8×1×1)" in message
    assert "fix: leave them new with --init-exclude generator.to_rgb" in message
    assert not (tmp_path / "a").exists()  # nothing written for a run that cannot start
    cases = {
        "train.init.exclude=[generator.to_rbg]": "--init-exclude generator.to_rbg matches nothing",
        "train.init.rename={generator.bdy: generator.body}": "--init-rename generator.bdy=generator.body matches no",
        "train.init.unfreeze=[generator.refine.0]": "--unfreeze generator.refine.0 only applies with --freeze-loaded",
    }
    for option, expected in cases.items():
        with pytest.raises(InitFromError, match=expected.replace(".", r"\.")):
            Trainer(tiny_config(data_root, *LARGER, *init(run, "train.init.exclude=[generator.to_rgb]", option)),
                    tmp_path / "b", show_progress=False)
    with pytest.raises(InitFromError, match="no checkpoint found"):
        Trainer(tiny_config(data_root, *init(tmp_path / "missing")), tmp_path / "c", show_progress=False)


def test_resume_of_an_init_from_run_refreezes_without_the_source(small_run, tmp_path):
    run, data_root = small_run
    source = tmp_path / "source"
    shutil.copytree(run, source)
    options = (*LARGER, *init(source, "train.init.exclude=[generator.to_rgb]", "train.init.freeze_loaded=true"),
               "train.deterministic=true", "train.num_samples=0")
    straight = tmp_path / "straight"
    Trainer(tiny_config(data_root, *options, "train.steps=4"), straight, show_progress=False).fit()
    resumed = tmp_path / "resumed"
    Trainer(tiny_config(data_root, *options, "train.steps=2"), resumed, show_progress=False).fit()
    frozen_before = module_tensors(ckpt.load_weights(ckpt.resolve_checkpoint(resumed)), "generator.refine.0.")
    shutil.rmtree(source)  # a resume reads the run's own checkpoint and state.json, never the source
    trainer = Trainer.resume(resumed, ["train.steps=4"], show_progress=False)
    assert not any(p.requires_grad for p in trainer.method.generator.refine[:3].parameters())
    trainer.fit()
    assert [r["loss"] for r in read_losses(straight)] == [r["loss"] for r in read_losses(resumed)]
    final_a = ckpt.load_weights(ckpt.resolve_checkpoint(straight))
    final_b = ckpt.load_weights(ckpt.resolve_checkpoint(resumed))
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert all(torch.equal(v, final_b[k]) for k, v in frozen_before.items())
    assert ckpt.read_state(ckpt.resolve_checkpoint(resumed))["init_from"]["loaded"] == ["generator.refine.{0-2}"]


def test_cli_prints_what_was_loaded_new_and_frozen(small_run, tmp_path, capsys):
    run, data_root = small_run
    out = tmp_path / "run"
    status = main(["train", "--config", "crn-cpu", "--out", str(out), "--init-from", str(run),
                   "--init-exclude", "generator.to_rgb", "--freeze-loaded", "--unfreeze", "generator.refine.2",
                   *tiny_overrides(data_root), *LARGER, "train.steps=1", "train.num_samples=0"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "loaded 18 tensors: generator.refine.{0-2}" in err
    assert "new (fresh initialisation) 8 tensors: generator.refine.3, generator.to_rgb" in err
    assert "frozen 12 parameters: generator.refine.{0-1}" in err
    assert "not used from the source: balancer, generator.to_rgb" in err
    config = (out / "config.yaml").read_text()
    assert f"source: {run}" in config and "freeze_loaded: true" in config
    assert main(["train", "--resume", str(out), "--init-from", str(run)]) == 2
    assert "start a new run" in capsys.readouterr().err
    assert main(["train", "--config", "crn-cpu", "--freeze-loaded", *tiny_overrides(data_root)]) == 2
    assert "need --init-from RUN" in capsys.readouterr().err
    assert main(["train", "--config", "crn-cpu", "--init-from", str(run), "--init-rename", "generator.body",
                 *tiny_overrides(data_root)]) == 2
    assert "--init-rename 'generator.body' is not SRC=DST" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ pix2pixHD
P2P_SMALL = ["model.n_downsample_global=1", "model.n_blocks_global=1", "discriminator.num_layers=2",
             "loss.lambda_vgg=0"]


def test_pix2pixhd_local_enhancer_starts_from_the_global_generator(tmp_path):
    """pix2pixhd-512p → pix2pixhd-1024p (reduced widths): G1 and the two 512p D scales are loaded, renamed to where
    the official names put them; the local enhancer and D's new full-resolution scale are fresh; niter_fix_global
    keeps G1 fixed for its first steps."""
    global_run = tmp_path / "global"
    config = load_run_config("pix2pixhd-512p", [*synthetic_overrides(2), "model.ngf=8", *P2P_SMALL])
    Trainer(config, global_run, show_progress=False).fit()
    source = ckpt.load_weights(ckpt.resolve_checkpoint(global_run))
    rename = ("train.init.rename={generator.body: generator.global_generator.body, "
              "discriminator.scales.0: discriminator.scales.1, discriminator.scales.1: discriminator.scales.2}")
    local = load_run_config("pix2pixhd-1024p", [*synthetic_overrides(2), "model.ngf=4", "model.n_blocks_local=1",
                                                *P2P_SMALL, "optim.fix_global_steps=2", *init(global_run, rename)])
    trainer = Trainer(local, tmp_path / "local", show_progress=False)
    method = trainer.method
    body = method.generator.global_generator.body.state_dict()
    assert body and all(torch.equal(v, source[f"generator.body.{k}"]) for k, v in body.items())
    for target, origin in ((1, 0), (2, 1)):
        scale = method.discriminator.scales[target].state_dict()
        assert all(torch.equal(v, source[f"discriminator.scales.{origin}.{k}"]) for k, v in scale.items())
    record = trainer.init_record
    assert record["new"] == ["generator.enhancers", "discriminator.scales.0"]
    assert record["unused"] == ["generator.head"]
    assert record["frozen"] == []
    enhancer = {k: v.clone() for k, v in method.generator.enhancers.state_dict().items()}
    trainer.fit()  # 2 steps, both inside fix_global_steps
    assert all(torch.equal(v, source[f"generator.body.{k}"])
               for k, v in method.generator.global_generator.body.state_dict().items())
    assert not all(torch.equal(v, method.generator.enhancers.state_dict()[k]) for k, v in enhancer.items())
    # without the renames nothing of G fits by name: G1 is reported new rather than silently half-loaded; the D
    # scales that do fit stay frozen although the recipe switches D's requires_grad on for every D update
    plain = load_run_config("pix2pixhd-1024p", [*synthetic_overrides(1), "model.ngf=4", "model.n_blocks_local=1",
                                                *P2P_SMALL, *init(global_run, "train.init.freeze_loaded=true")])
    trainer = Trainer(plain, tmp_path / "plain", show_progress=False)
    assert "generator" in trainer.init_record["new"]
    assert trainer.init_record["loaded"] == ["discriminator.scales.{0-1}"]
    before = {k: v.clone() for k, v in trainer.method.discriminator.state_dict().items()}
    trainer.fit()
    after = trainer.method.discriminator.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith(("scales.0.", "scales.1.")))
    assert not all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("scales.2."))


# ---------------------------------------------------------------------------------------------------- parts
def test_compress_and_rename_helpers():
    universe = [f"g.refine.{i}.{t}" for i in range(12) for t in ("w", "b")] + ["g.out.w", "lam.weights"]
    assert compress([n for n in universe if n.startswith("g.refine.")], universe) == ["g.refine"]
    chosen = [n for n in universe if n.startswith("g.refine.") and n.split(".")[2] in {"0", "1", "2", "5", "10"}]
    assert compress(chosen, universe) == ["g.refine.{0-2,5,10}"]
    assert compress(["g.refine.1.w"], universe) == ["g.refine.1.w"]
    renamed = rename_keys({"d.scales.0.w": 0, "d.scales.1.w": 1, "d.scales.10.w": 10},
                          {"d.scales.0": "d.scales.1", "d.scales.1": "d.scales.2"})
    assert renamed == {"d.scales.1.w": 0, "d.scales.2.w": 1, "d.scales.10.w": 10}  # shifted at once, 10 untouched


def test_compare_says_a_row_started_from_another_run():
    from inverseg.eval.report import compare_table

    def result(name: str, **extra) -> dict:
        summary = {"name": name, "method": "crn", "parameters": 4.8e6, "step": 700, "train_cpu_seconds": 240.0,
                   "fd_name": "FD-MobileNetV2", "fd": 260.0, "fd_real": 106.3, "kd_name": "KD-MobileNetV2",
                   "kd": 0.77, "miou_generated": 0.24, "miou_real": 0.63, "pixel_accuracy_generated": 0.54,
                   "pixel_accuracy_real": 0.91, "diversity": None, "resolution": [96, 128],
                   "evaluator_sha256": "e" * 64, "extractor": "mobilenet_v2", "extractor_sha256": "f" * 64,
                   "dataset": "camvid/val", "perception": "perceptual.extractor: VGG16 (HED-offline) in place of VGG19",
                   **extra}
        return {"summary": summary}

    table = compare_table([result("scratch"), result("ft", init_from="runs/src48/checkpoints/step_0001344",
                                                     init_from_cpu_seconds=240.4)])
    assert "ft started from the weights of runs/src48/checkpoints/step_0001344 (+4.0 train CPU-min there, not in " \
           "its row)" in table
    assert "scratch started" not in table
    assert "perception networks in training: scratch — perceptual.extractor: VGG16 (HED-offline) in place of " \
           "VGG19; ft — perceptual.extractor: VGG16 (HED-offline) in place of VGG19" in table
