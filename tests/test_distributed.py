"""Training under torchrun (gloo on this CPU): disjoint shards, gradients averaged before every optimiser step,
identical weights on every rank, one writer, agreed stops, resume with another world size, ``--nproc``,
and two "nodes" on localhost (slow)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _gan_scenes import synthetic_overrides, toy_label
from inverseg.pipeline import Pipeline
from inverseg.train import checkpoint as ckpt
from inverseg.train.distributed import shard_batches, sync_batchnorm_note
from test_trainer import make_folder_dataset, read_losses, tiny_overrides

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)]), "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, nproc: int = 2, timeout: int = 240, **options) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout, **options)


def cli(*args: str) -> list[str]:
    return ["-m", "inverseg", "train", "--quiet", *args]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("ddp") / "data", count=8)


def test_shards_are_disjoint_and_one_process_keeps_the_single_process_order():
    order = list(range(11))
    assert shard_batches(order, 2, 0, 1) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    rank0, rank1 = shard_batches(order, 2, 0, 2), shard_batches(order, 2, 1, 2)
    assert rank0 == [[0, 1], [4, 5]] and rank1 == [[2, 3], [6, 7]]  # the incomplete global batch is dropped
    assert not {i for b in rank0 for i in b} & {i for b in rank1 for i in b}
    # global batch i of two processes holds the samples of batch i of one process at twice the batch size
    assert [a + b for a, b in zip(rank0, rank1)] == shard_batches(order, 4, 0, 1)


def test_sync_batchnorm_needs_cuda_and_says_so():
    assert sync_batchnorm_note(torch.device("cpu"), 1, True) is None
    assert sync_batchnorm_note(torch.device("cpu"), 2, False) is None
    assert "SyncBatchNorm needs CUDA" in sync_batchnorm_note(torch.device("cpu"), 2, True)
    assert sync_batchnorm_note(torch.device("cuda"), 2, True) is None


def test_gradients_are_averaged_and_missing_ones_stay_missing(tmp_path):
    result = torchrun(str(TESTS / "_ddp_worker.py"), str(tmp_path / "g"), str(tmp_path), "gradients")
    assert result.returncode == 0, result.stderr[-2000:]
    for rank in (0, 1):
        values = json.loads((tmp_path / f"g.{rank}").read_text())
        assert values["a"] == [1.5] * 3  # (1 + 2) / 2
        assert values["b"] == [2.0] * 3  # a gradient on one rank counts as zero on the other
        assert values["c"] is True  # no gradient anywhere: Adam leaves the parameter and its moments alone
        assert values["any"] is True and values["all"] is False and values["mean"] == {"loss": 0.5}
        # gradients all-reduced in buckets during the backward pass equal the flat all-reduce's, also when one
        # rank's backward pass skips a layer; a layer nobody used keeps grad None
        assert values["buckets"] == 8 and values["bucketed_equals_flat"] and values["second_step_equal"]
        assert values["unused_stay_none"] == [True, True] and values["after"] == {"x": 1.0}
        assert values["started_during_backward"] == [6, 0][rank]


def one_vs_two_processes(preset: str, overrides: list[str], tmp_path: Path, key: str, by_outputs: bool = False):
    """Train ``preset`` with 1 process × batch 2 and with 2 processes × batch 1 on the same samples; the weights
    (``by_outputs``: the generators' images) and the logged ``key`` loss must agree.  Returns the 2-process run."""
    single, double = tmp_path / "single", tmp_path / "double"
    result = subprocess.run([sys.executable, *cli("--config", preset, "--out", str(single), *overrides,
                                                  "train.batch_size=2")],
                            env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    result = torchrun(*cli("--config", preset, "--out", str(double), *overrides, "train.batch_size=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"run_dir"') == 1  # one summary: rank 0 reports
    if by_outputs:
        a, b = ({"image": Pipeline.from_pretrained(run).method.sample(toy_label(2))} for run in (single, double))
    else:
        a, b = (ckpt.load_weights(ckpt.resolve_checkpoint(run)) for run in (single, double))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    for ra, rb in zip(read_losses(single), read_losses(double)):  # the mean over the ranks = the batch-2 mean
        assert rb[key] == pytest.approx(ra[key], rel=1e-4)
    return double


def test_two_processes_train_like_one_process_with_the_global_batch(data_root, tmp_path):
    """CRN (per-sample normalisation, fixed λ) with 2 × batch 1 must follow 1 × batch 2 step for step."""
    options = ["loss.balance=fixed", "train.deterministic=true", "train.threads=1", "train.steps=3",
               "train.checkpoint_every=0", "train.num_samples=2", "train.sample_every=0"]
    double = one_vs_two_processes("crn-cpu", [*tiny_overrides(data_root), *options], tmp_path, "loss")
    losses_b = read_losses(double)
    assert [r["step"] for r in losses_b] == [1, 2, 3]  # one writer, no duplicated lines
    state = ckpt.read_state(ckpt.resolve_checkpoint(double))
    assert state["world_size"] == 2 and state["global_batch"] == 2
    assert len(list((double / "samples").glob("step_*.png"))) == 1

    # resume with one process: the data position is re-derived from the step, and the note says so
    resumed = subprocess.run([sys.executable, "-m", "inverseg", "train", "--resume", str(double), "train.steps=4"],
                             env=ENV, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "trained with 2 process(es) and continues with 1" in resumed.stderr
    assert ckpt.read_state(ckpt.resolve_checkpoint(double))["world_size"] == 1


def test_pix2pixhd_with_two_processes_equals_one_process_with_the_global_batch(tmp_path):
    """G step, then D step on the detached fake, instance norm, LSGAN + feature matching.  Compared by the images:
    a bias just before instance norm has a zero gradient up to rounding, which Adam's first steps turn into ±lr
    either way, with no effect on the output.  (SyncBatchNorm, which SPADE uses officially, needs CUDA.)"""
    tiny = ["model.ngf=8", "model.n_downsample_global=2", "model.n_blocks_global=1", "features.enabled=false"]
    overrides = [o for o in synthetic_overrides(steps=2) if not o.startswith("train.batch_size")]
    one_vs_two_processes("pix2pixhd-cpu", [*overrides, *tiny, "train.deterministic=true", "train.threads=1",
                                           "train.num_samples=0"], tmp_path, "g_gan", by_outputs=True)


def worker_reports(tmp_path: Path, jobs: dict[str, list[str]]) -> dict:
    """Train each preset with its overrides in 2 gloo processes (tests/_ddp_worker.py); its per-preset report."""
    specs = [f"{preset}:{';'.join(overrides)}" for preset, overrides in jobs.items()]
    result = torchrun(str(TESTS / "_ddp_worker.py"), str(tmp_path / "out.json"), str(tmp_path), *specs, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "out.json").read_text())


def test_gan_methods_keep_identical_weights_on_every_rank(tmp_path):
    """G/D alternation and EMA with batch-norm recalibration (SPADE, OASIS): every rank ends with the same weights,
    and only rank 0 recalibrates the EMA generator (the other ranks receive its buffers)."""
    common = [*synthetic_overrides(steps=2), "train.batch_size=1", "train.threads=1"]
    spade = [*common, "ema.decay=0.9", "ema.recalibrate_batches=1"]
    oasis = [o for o in common if not o.startswith("discriminator.")] + [
        "model.ngf=4", "model.spade_hidden=8", "model.z_dim=8", "discriminator.channels=[8,8,16,16,16]",
        "discriminator.last_channels=8", "ema.recalibrate_batches=2"]
    report = worker_reports(tmp_path, {"spade-cpu": spade, "oasis-cpu": oasis})
    for preset in ("spade-cpu", "oasis-cpu"):
        assert {k: report[preset][k] for k in ("step", "identical", "world_size")} == \
            {"step": 2, "identical": True, "world_size": 2}, preset
        rank0, rank1 = report[preset]["side_work"]
        assert rank0["recalibrate"] >= 1 and rank1["recalibrate"] == 0, (preset, report[preset]["side_work"])
        assert ckpt.read_state(ckpt.resolve_checkpoint(tmp_path / preset))["world_size"] == 2


def test_crn_lambda_balancer_ends_identical_on_every_rank(data_root, tmp_path):
    """CRN's λ balancer observes each rank's own losses; rank 0's statistics are broadcast after every step, so the
    ranks agree on λ before and after the rebalance (at step 4 here; with several processes λ comes from rank 0's
    shard, as DDP's batch-norm statistics do)."""
    overrides = [*tiny_overrides(data_root), "train.batch_size=1", "train.threads=1", "loss.balance=once"]
    report = worker_reports(tmp_path, {"crn-cpu": overrides})["crn-cpu"]
    assert report["step"] == 4 and report["identical"] is True
    rank0, rank1 = report["balancer"]
    assert rank0 == rank1
    assert rank0["rebalanced"] is True and rank0["running_count"] == 0  # λ was measured, then frozen
    assert len(set(rank0["weights"])) > 1  # measured λ per term, not the uniform start


def test_pix2pixhd_clusters_are_computed_by_rank_0_and_identical_on_every_rank(tmp_path):
    """The k-means of the encoder's instance features runs on rank 0 only (at the gallery and at each checkpoint);
    the other rank skips it and receives the same centres."""
    tiny = ["model.ngf=8", "model.n_downsample_global=2", "model.n_blocks_global=1", "features.enabled=true",
            "features.nef=4", "features.n_downsample=2", "features.n_clusters=3", "features.max_images=4"]
    overrides = [*synthetic_overrides(steps=2), "train.batch_size=1", "train.threads=1", *tiny]
    report = worker_reports(tmp_path, {"pix2pixhd-cpu": overrides})["pix2pixhd-cpu"]
    assert report["step"] == 2 and report["identical"] is True
    rank0, rank1 = report["side_work"]
    assert rank0["kmeans"] >= 2 and rank1["kmeans"] == 0, report["side_work"]  # gallery + checkpoint on rank 0
    centres0, centres1 = report["centres"]
    assert centres0 == centres1
    counts0, counts1 = report["cluster_counts"]
    assert counts0 == counts1 and sum(counts0) > 0  # some classes were clustered, not an all-zero table
    assert any(value != 0.0 for row in centres0 for centre in row for value in centre)
    state = ckpt.read_state(ckpt.resolve_checkpoint(tmp_path / "pix2pixhd-cpu"))
    assert sum(state["method_state"]["feature_clusters"].values()) == sum(counts0)


def test_torchrun_needs_one_run_directory_and_nproc_is_checked(data_root, tmp_path):
    env = {**ENV, "WORLD_SIZE": "2", "RANK": "1"}
    result = subprocess.run([sys.executable, "-m", "inverseg", "train", "--config", "crn-cpu",
                             *tiny_overrides(data_root)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: under torchrun pass --out RUN_DIR: every process must write to the same run"
    result = subprocess.run([sys.executable, "-m", "inverseg", "train", "--nproc", "0", "--config", "crn-cpu"],
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--nproc must be at least 1, got 0" in result.stderr


@pytest.mark.slow
def test_nproc_launches_torchrun_and_sigterm_checkpoints_every_rank_once(data_root, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "inverseg", "train", "--nproc", "2", "--config", "crn-cpu", "--out", str(run),
               *tiny_overrides(data_root), "train.steps=100000", "train.checkpoint_every=0"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run / "logs" / "losses.jsonl").is_file():
        time.sleep(0.5)
    time.sleep(2)
    process.send_signal(signal.SIGTERM)  # what a scheduler sends to the launcher; torchrun forwards it
    out, err = process.communicate(timeout=120)
    checkpoint = ckpt.resolve_checkpoint(run)
    state = ckpt.read_state(checkpoint)
    assert state["world_size"] == 2 and state["step"] >= 1
    assert len(list((run / "checkpoints").glob("step_*"))) == 1, err[-2000:]


@pytest.mark.slow
def test_two_nodes_on_localhost_rendezvous_and_train(data_root, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "run"
    nodes = []
    for node in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                   f"--node_rank={node}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                   "--rdzv-id=inverseg-test", *cli("--config", "crn-cpu", "--out", str(run),
                                                   *tiny_overrides(data_root), "train.steps=2")]
        nodes.append(subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    state = ckpt.read_state(ckpt.resolve_checkpoint(run))
    assert state["world_size"] == 2 and state["step"] == 2


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_an_error_naming_it(data_root, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *cli("--config", "crn-cpu", "--out", str(run), *tiny_overrides(data_root), "train.steps=100000",
                    "train.checkpoint_every=0")]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run / "logs" / "losses.jsonl").is_file():
        time.sleep(0.5)
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[1]), signal.SIGKILL)
    started = time.monotonic()
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0 and time.monotonic() - started < 120
    assert "Signal 9 (SIGKILL)" in err and "rank" in err
