"""The λ balancing schedule must fire inside the run (fidelity audit, CRN 1: crn-512p/1024p inherited crn-256p's
rebalance_at = 297,500 but train for 59,500 / 14,875 steps, so λ never rebalanced)."""

from __future__ import annotations

import pytest

from inverseg.config import ConfigError, config_problems, load_run_config, preset_names
from inverseg.train import Trainer
from test_trainer import make_folder_dataset, tiny_config

EPOCH = 2975  # Cityscapes train images at batch 1


def test_every_shipped_preset_rebalances_within_its_run():
    checked = []
    for name in preset_names():
        config = load_run_config(name)
        loss = getattr(config.settings, "loss", None)
        if getattr(loss, "balance", None) in ("once", "every"):
            window = loss.window or loss.rebalance_at
            assert 1 <= window <= loss.rebalance_at <= config.train.steps, name
            checked.append(name)
    assert {"crn-256p", "crn-256p-diversity", "crn-512p", "crn-1024p", "crn-cpu", "crn-camvid-cpu", "sims-cpu",
            "sims-camvid-cpu"} <= set(checked)


def test_paper_presets_follow_the_official_schedule():
    # 256p from scratch: after 100 of 200 epochs, averaged over the 100th (paper §3.3, author issue #10)
    full = load_run_config("crn-256p")
    assert (full.settings.loss.rebalance_at, full.settings.loss.window, full.train.steps) == \
        (100 * EPOCH, EPOCH, 200 * EPOCH)
    # the fine-tuning runs (20 and 5 epochs) measure their own λ over their 2nd epoch
    for name, epochs in (("crn-512p", 20), ("crn-1024p", 5)):
        config = load_run_config(name)
        assert (config.settings.loss.rebalance_at, config.settings.loss.window, config.train.steps) == \
            (2 * EPOCH, EPOCH, epochs * EPOCH), name


def test_a_preset_whose_schedule_never_fires_is_a_one_line_error(tmp_path):
    short = tmp_path / "short-crn.yaml"
    short.write_text("base: crn-256p\ntrain:\n  steps: 1000\n")
    with pytest.raises(ConfigError) as error:
        load_run_config(str(short))
    message = str(error.value)
    assert message.startswith("short-crn: loss.rebalance_at=297500 is after the last step (train.steps=1000)")
    assert "fix: set loss.rebalance_at ≤ 1000" in message and "\n" not in message
    # an override (a smoke run, a run to be resumed longer) is the user's choice: the Trainer says it, no error
    config = load_run_config("crn-512p", ["train.steps=100"])
    assert config_problems(config) == [message.split(": ", 1)[1].replace("297500", "5950").replace("1000", "100")]


def test_trainer_prints_the_schedule_problem_of_an_override(tmp_path, capsys):
    data_root = make_folder_dataset(tmp_path / "data")
    Trainer(tiny_config(data_root, "train.steps=2"), tmp_path / "run", show_progress=True)
    assert "note: loss.rebalance_at=4 is after the last step (train.steps=2)" in capsys.readouterr().err
