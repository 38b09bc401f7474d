"""train.amp (bf16 / fp16 with dynamic loss scaling) and train.channels_last: the GPU speed-ups keep training
correct (checked on this CPU, where they are slow)."""

from __future__ import annotations

import pytest
import torch

from inverseg.config import ConfigError
from inverseg.train import Trainer
from inverseg.train import checkpoint as ckpt
from inverseg.train.precision import LossScaler
from test_trainer import make_folder_dataset, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("amp") / "data")


def test_loss_scale_halves_on_overflow_and_grows_after_clean_steps():
    scaler = LossScaler(scale=1024.0, growth_interval=3)
    scaler.overflowed()
    assert scaler.scale == 512.0 and scaler.overflows == 1
    for _ in range(3):
        scaler.stepped()
    assert scaler.scale == 1024.0 and scaler.good_steps == 0
    restored = LossScaler()
    restored.load(scaler.state())
    assert restored.state() == scaler.state()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_float32_weights(data_root, tmp_path, amp):
    run = tmp_path / amp
    summary = Trainer(tiny_config(data_root, f"train.amp={amp}", "train.steps=2", "train.num_samples=0"), run,
                      show_progress=False).fit()
    assert summary["step"] == 2 and summary["bad_steps"] == 0
    weights = ckpt.load_weights(ckpt.resolve_checkpoint(run))
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    state = ckpt.read_state(ckpt.resolve_checkpoint(run))
    assert (state["loss_scale"] != {}) == (amp == "fp16")


def test_an_fp16_overflow_skips_the_update_and_lowers_the_scale_without_counting_a_bad_step(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, "train.amp=fp16", "train.num_samples=0"), tmp_path / "run",
                      show_progress=False)
    method = trainer.method
    scaler = method.loss_scalers["generator"]
    scaler.scale = 3e38  # loss × scale overflows float32: every gradient becomes inf
    before = {k: v.clone() for k, v in method.generator.state_dict().items()}
    batch = next(trainer.batches(0))[1]
    method.train_step(batch, 0)
    assert all(torch.equal(before[k], v) for k, v in method.generator.state_dict().items())
    assert scaler.overflows == 1 and scaler.scale == 1.5e38
    assert method.pop_nonfinite() is False  # an overflow is the scaler's business, not a NaN step


def test_channels_last_layout_and_amp_is_checked(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, "train.channels_last=true"), tmp_path / "run", show_progress=False)
    convs = [m.weight for m in trainer.method.generator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs if w.shape[-1] > 1)
    with pytest.raises(ConfigError, match="train.amp must be off, bf16 or fp16, got 'fp8'"):
        tiny_config(data_root, "train.amp=fp8")
