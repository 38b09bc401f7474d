"""Training survives faults: stop signals, kill -9, NaN/Inf, a full disk; honest progress and thread counts.

The signal tests run real ``inverseg train`` processes and send them real signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from inverseg.config import ConfigError
from inverseg.train import Trainer
from inverseg.train import checkpoint as ckpt
from inverseg.train.control import NonFiniteTraining
from inverseg.utils.threads import auto_threads
from test_trainer import make_folder_dataset, read_losses, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.dataset=folder", "data.size=[24,32]", "model.widths=[16,16,16]", "model.base_grid=[6,8]",
        "loss.layers=[relu1_2,relu2_2]", "loss.rebalance_at=4", "loss.window=2", "train.minutes=null",
        "train.log_every=1", "train.sample_every=0", "train.num_samples=0", "train.tensorboard=false",
        "train.threads=1"]


@pytest.fixture()
def dataset_root(tmp_path):
    return make_folder_dataset(tmp_path / "data")


def start_training(run: Path, data_root: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "inverseg.cli.main", "train", "--config", "crn-cpu", "--out", str(run),
               "--quiet", f"data.path={data_root}", *TINY, *overrides]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(run: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    log = run / "logs" / "losses.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text().count("\n") >= step:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout} s")


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT", "SIGUSR1"])
def test_stop_signal_checkpoints_at_a_step_boundary_and_exits_0(tmp_path, dataset_root, name):
    run = tmp_path / "run"
    process = start_training(run, dataset_root, "train.steps=100000", "train.checkpoint_every=100000")
    wait_for_step(run, 3, process)
    process.send_signal(getattr(signal, name))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[0])
    assert summary["stop_reason"] == name
    checkpoint = ckpt.resolve_checkpoint(run)
    assert ckpt.read_state(checkpoint)["step"] == summary["step"] >= 3
    assert f"{name}: finishing this step" in err and f"--resume {run}" in err
    assert [r["step"] for r in read_losses(run)] == list(range(1, summary["step"] + 1))


def test_second_signal_exits_at_once_keeping_the_last_checkpoint(tmp_path, dataset_root):
    run = tmp_path / "run"
    process = start_training(run, dataset_root, "train.steps=100000", "train.checkpoint_every=2")
    wait_for_step(run, 5, process)
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode in (0, 128 + signal.SIGTERM), err  # 0 if the first one's checkpoint won the race
    checkpoint = ckpt.resolve_checkpoint(run)
    state = ckpt.read_state(checkpoint)
    assert state["step"] >= 4 and ckpt.load_weights(checkpoint)  # complete and loadable
    resumed = Trainer.resume(run, ["train.steps=8"], show_progress=False).fit()
    assert resumed["step"] == max(8, state["step"])


def test_kill_9_then_resume_gives_the_uninterrupted_loss_curve(tmp_path, dataset_root):
    overrides = ("train.deterministic=true", "train.steps=12", "train.checkpoint_every=3")
    straight = tmp_path / "straight"
    Trainer(tiny_config(dataset_root, *overrides), straight, show_progress=False).fit()
    run = tmp_path / "killed"
    process = start_training(run, dataset_root, *overrides)
    wait_for_step(run, 7, process)
    process.kill()  # SIGKILL: no handler runs; the loss log may have steps past the last checkpoint
    process.wait()
    resumed_from = ckpt.read_state(ckpt.resolve_checkpoint(run))["step"]
    assert resumed_from >= 6
    Trainer.resume(run, show_progress=False).fit()
    assert [r["loss"] for r in read_losses(run)] == [r["loss"] for r in read_losses(straight)]


def test_resume_picks_the_newest_complete_checkpoint(tmp_path, dataset_root):
    run = tmp_path / "run"
    Trainer(tiny_config(dataset_root, "train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3"),
            run, show_progress=False).fit()
    newest = run / "checkpoints" / "step_0000006"
    (newest / ckpt.WEIGHTS_FILE).write_bytes(b"torn")  # e.g. a disk that lost the last write
    checkpoint = ckpt.resolve_checkpoint(run)
    assert checkpoint.name == "step_0000004"
    trainer = Trainer.resume(run, ["train.steps=7"], show_progress=False)
    assert trainer.step == 4


class NaNAfter:
    """Wraps a method's step: the first ``count`` steps from step ``start`` on see a NaN weight, so the forward
    pass, the loss and the gradients are really NaN (a transient fault: a retry after a rollback is clean)."""

    def __init__(self, method, start: int, count: int):
        self.method, self.start, self.left = method, start, count
        self.original = method.train_step

    def __call__(self, batch, step):
        if step >= self.start and self.left > 0:
            self.left -= 1
            generator = self.method.generator
            with torch.no_grad():
                first = next(generator.parameters())
                saved = first.clone()
                first.fill_(float("nan"))  # the forward pass, loss and gradients all become NaN
            try:
                return self.original(batch, step)
            finally:
                with torch.no_grad():
                    first.copy_(saved)
        return self.original(batch, step)


def test_nan_steps_are_skipped_then_rolled_back_with_a_lower_lr(tmp_path, dataset_root, capsys):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(dataset_root, "train.steps=12", "train.checkpoint_every=4",
                                  "train.nonfinite_patience=3"), run, show_progress=True)
    trainer.method.train_step = NaNAfter(trainer.method, start=5, count=3)
    before = {k: v.clone() for k, v in trainer.method.generator.state_dict().items()}
    summary = trainer.fit()
    assert summary["step"] == 12 and summary["bad_steps"] == 3
    assert "rolled back to step_0000004 with learning rate ×0.5" in capsys.readouterr().err
    assert trainer.lr_factor == 0.5
    assert ckpt.read_state(ckpt.resolve_checkpoint(run))["lr_factor"] == 0.5
    assert all(torch.isfinite(v).all() for v in trainer.method.generator.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in trainer.method.generator.state_dict().items())
    assert read_losses(run)[-1]["bad_steps"] == 3


def test_nan_forever_stops_with_a_message(tmp_path, dataset_root):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(dataset_root, "train.steps=40", "train.checkpoint_every=2",
                                  "train.nonfinite_patience=2", "train.nonfinite_max_rollbacks=1"),
                      run, show_progress=False)
    trainer.method.train_step = NaNAfter(trainer.method, start=3, count=1000)
    with pytest.raises(NonFiniteTraining, match=r"NaN/Inf for 2 consecutive steps .*1 rollbacks.*step_0000002"):
        trainer.fit()
    assert ckpt.read_state(ckpt.resolve_checkpoint(run))["step"] == 2  # nothing NaN was ever saved


def test_nan_weights_are_never_saved(tmp_path, dataset_root):
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(dataset_root, "train.steps=2"), run, show_progress=False)
    trainer.fit()
    with torch.no_grad():
        next(trainer.method.generator.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteTraining, match="hold NaN/Inf; not saved, the previous checkpoint is kept"):
        trainer.save()
    assert ckpt.resolve_checkpoint(run).name == "step_0000002"


@pytest.fixture()
def small_disk(tmp_path):
    """A 1.5 MB tmpfs: a real 'No space left on device' (needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_keeps_the_previous_checkpoint(small_disk, dataset_root):
    run = small_disk / "run"
    trainer = Trainer(tiny_config(dataset_root, "train.steps=2", "train.keep_checkpoints=5"), run,
                      show_progress=False)
    trainer.fit()
    first = ckpt.resolve_checkpoint(run)
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 4096))
    trainer.step = 3
    with pytest.raises(ckpt.CheckpointError, match=r"no space left on the device .*step_0000002 is kept"):
        trainer.save()
    assert ckpt.resolve_checkpoint(run) == first and ckpt.load_weights(first)
    assert not list((run / "checkpoints").glob(".step_*.partial"))  # the torn write was cleaned up


def test_time_bounded_progress_shows_the_budget_not_the_step_ceiling(tmp_path, dataset_root, capsys):
    Trainer(tiny_config(dataset_root, "train.steps=100000", "train.minutes=0.05", "train.checkpoint_every=0",
                        "train.sample_every=0"), tmp_path / "run", show_progress=True).fit()
    err = capsys.readouterr().err
    assert "100000" not in err.split("stopped at step")[0]  # never counts towards the ceiling
    assert "100%|" in err or " 99%|" in err


def test_auto_threads_leave_busy_cores_alone(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_threads(load=0.0, cores=2) == 2
    assert auto_threads(load=3.0, cores=2) == 1  # two hogs and more: never oversubscribe
    assert auto_threads(own_threads=2, load=2.1, cores=2) == 2  # the load is our own threads
    assert auto_threads(own_threads=2, load=3.0, cores=2) == 1
    assert auto_threads(load=1.0, cores=8) == 7
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads(load=0.0, cores=8) == 3


def test_thread_setting_is_validated(dataset_root):
    assert tiny_config(dataset_root, "train.threads=auto").train.threads == "auto"
    assert tiny_config(dataset_root, "train.threads=2").train.threads == 2
    with pytest.raises(ConfigError, match="train.threads must be auto, a number of threads or null, got 'many'"):
        tiny_config(dataset_root, "train.threads=many")
