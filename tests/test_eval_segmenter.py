"""Segmenters: the evaluator's training loop and files, user TorchScript/ONNX segmenters with id mappings, the FID
Inception's state-dict compatibility with pytorch-fid's weights file, and the real-feature cache keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from inverseg.data import DataConfig
from inverseg.eval.features import FeatureExtractor, cached_features, stats_key, stats_path
from inverseg.eval.segmenter import (
    NO_CLASS,
    EVALUATOR_JSON,
    EVALUATOR_WEIGHTS,
    ExternalSegmenter,
    MobileNetSegmenter,
    SegmenterDescription,
    SegmenterError,
    load_segmenter,
)
from inverseg.eval.train_segmenter import EvaluatorTrainConfig, train_evaluator
from inverseg.labels import LabelSpec, get_scheme

from conftest import build_camvid

SPEC = LabelSpec("three", ("red", "green", "blue"), ((200, 40, 40), (40, 200, 40), (40, 40, 200)), ignore_index=255)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
PALETTE = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [240, 240, 240]], dtype=torch.float32)


# ------------------------------------------------------------------------------------------- our evaluator
def test_evaluator_training_runs_saves_and_loads(tmp_path):
    root = tmp_path / "camvid"
    build_camvid(root, {"train": 4, "val": 2})
    out = tmp_path / "evaluator"
    config = EvaluatorTrainConfig(size=(24, 32), minutes=None, steps=2, batch_size=2, threads=None, val_every=2)
    summary = train_evaluator(DataConfig(dataset="camvid", path=str(root)), out, config, show_progress=False,
                              backbone_weights=None)
    assert summary["steps"] == 2
    document = json.loads((out / EVALUATOR_JSON).read_text())
    assert document["size"] == [24, 32] and document["spec"]["name"] == "camvid"
    assert document["protocol"]["ignore_index"] == 11 and document["protocol"]["label_resize"] == "nearest"
    assert document["validation"]["images"] == 2 and set(document["validation"]["per_class_iou"]) == set(
        get_scheme("camvid").class_names)
    assert document["training"]["steps"] == 2 and len(document["training"]["class_weights"]) == 11
    import hashlib

    assert document["sha256"] == hashlib.sha256((out / EVALUATOR_WEIGHTS).read_bytes()).hexdigest()
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert log and "val_miou" in log[-1]

    model = load_segmenter(out, get_scheme("camvid"))
    assert isinstance(model, MobileNetSegmenter) and model.identity["sha256"] == document["sha256"]
    images = torch.rand(2, 3, 24, 32) * 2 - 1
    prediction = model.predict(images)
    assert prediction.shape == (2, 24, 32) and prediction.dtype == torch.int64
    assert int(prediction.min()) >= 0 and int(prediction.max()) < 11
    with pytest.raises(SegmenterError, match="label set"):
        load_segmenter(out, SPEC)
    # a modified weights file no longer matches the recorded identity
    data = bytearray((out / EVALUATOR_WEIGHTS).read_bytes())
    data[-1] ^= 1
    (out / EVALUATOR_WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(SegmenterError, match="sha256"):
        MobileNetSegmenter.load(out)


def test_backbone_batchnorm_statistics_stay_frozen_in_training_mode():
    from inverseg.eval.segmenter import SegmenterConfig

    model = MobileNetSegmenter(SegmenterConfig(3, width=16, input_scale=1.0), SPEC, (32, 32))
    model.train()
    assert not model.backbone.training and model.decoder.training
    before = model.backbone.features[1].conv[0][1].running_mean.clone()
    model(torch.rand(2, 3, 32, 32))
    assert torch.equal(before, model.backbone.features[1].conv[0][1].running_mean)
    assert all(p.requires_grad for p in model.backbone.parameters())


# ------------------------------------------------------------------------------------------- user segmenters
class ColourSegmenter(nn.Module):
    """Logits = −squared distance to a colour per output channel (inputs in the convention's range)."""

    def __init__(self, colours: torch.Tensor):
        super().__init__()
        self.register_buffer("colours", colours)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, None] - self.colours[None, :, :, None, None]) ** 2).sum(2)


def colour_image(ids: torch.Tensor) -> torch.Tensor:
    """(H,W) palette indices → (1,3,H,W) in [-1,1]."""
    return (PALETTE[ids].permute(2, 0, 1)[None] / 127.5) - 1.0


def write_segmenter(folder: Path, colours: torch.Tensor, description: dict, name: str = "seg.pt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(ColourSegmenter(colours)).save(str(folder / name))
    path = folder / "seg.json"
    path.write_text(json.dumps({"model": name, **description}))
    return path


def test_torchscript_segmenter_with_id_mapping(tmp_path):
    # output channels in a different order than the dataset, one channel (white) without a dataset class
    order = [2, 3, 0, 1]  # channel i recognises palette colour order[i]
    colours = PALETTE[order] / 255.0
    path = write_segmenter(tmp_path, colours, {
        "name": "colour net", "num_outputs": 4, "label_set": "three",
        "input": {"range": [0, 1], "mean": [0, 0, 0], "std": [1, 1, 1]},
        "id_mapping": [2, None, "red", 1],
    })
    segmenter = load_segmenter(path, SPEC)
    assert isinstance(segmenter, ExternalSegmenter) and segmenter.kind == "torchscript"
    assert len(segmenter.identity["sha256"]) == 64
    ids = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    prediction = segmenter.predict(colour_image(ids))
    expected = torch.tensor([[0, 1, 2, NO_CLASS], [NO_CLASS, 2, 1, 0]])
    assert torch.equal(prediction[0], expected)
    assert segmenter.id_mapping == {"0": 2, "1": None, "2": 0, "3": 1}


def test_torchscript_segmenter_input_convention_bgr_0_255_mean_std_and_size(tmp_path):
    mean, std = (100.0, 110.0, 120.0), (50.0, 60.0, 70.0)
    bgr = PALETTE[:3].flip(1)  # the network thinks in BGR, 0–255, normalised
    colours = (bgr - torch.tensor(mean)) / torch.tensor(std)
    path = write_segmenter(tmp_path, colours, {
        "num_outputs": 3, "input": {"size": [8, 8], "range": [0, 255], "mean": mean, "std": std,
                                    "channels": "BGR"}})
    segmenter = load_segmenter(path, SPEC)
    ids = torch.zeros(4, 4, dtype=torch.long)
    ids[:, 2:] = 2
    prediction = segmenter.predict(colour_image(ids))  # 4×4 → network at 8×8 → logits back to 4×4
    assert prediction.shape == (1, 4, 4) and torch.equal(prediction[0], ids)


def test_segmenter_description_errors(tmp_path):
    colours = PALETTE[:3] / 255.0
    with pytest.raises(SegmenterError, match="4 outputs"):
        load_segmenter(write_segmenter(tmp_path / "a", PALETTE / 255.0, {"num_outputs": 4}), SPEC)
    with pytest.raises(SegmenterError, match="not a class id"):
        load_segmenter(write_segmenter(tmp_path / "b", colours, {"num_outputs": 3, "id_mapping": [0, 1, 7]}), SPEC)
    with pytest.raises(SegmenterError, match="unknown key"):
        load_segmenter(write_segmenter(tmp_path / "c", colours, {"num_outputs": 3, "ids": [0, 1, 2]}), SPEC)
    with pytest.raises(SegmenterError, match="label set"):
        load_segmenter(write_segmenter(tmp_path / "d", colours, {"num_outputs": 3, "label_set": "camvid"}), SPEC)
    model = write_segmenter(tmp_path / "e", colours, {"num_outputs": 3}).parent / "seg.pt"
    wrong = SegmenterDescription(model=str(model), num_outputs=5, id_mapping={"0": 0})  # says 5, returns 3
    with pytest.raises(SegmenterError, match="returned 3 channels"):
        ExternalSegmenter(wrong, SPEC).predict(torch.zeros(1, 3, 4, 4))
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "seg.pt").write_bytes(b"not a model")
    (tmp_path / "f" / "seg.json").write_text(json.dumps({"model": "seg.pt", "num_outputs": 3}))
    with pytest.raises(SegmenterError, match="TorchScript"):
        load_segmenter(tmp_path / "f" / "seg.json", SPEC)


def test_onnx_segmenter(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = ColourSegmenter(PALETTE[:3] / 255.0).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 4, 4),), str(tmp_path / "seg.onnx"), dynamo=False,
                      input_names=["image"], dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}})
    (tmp_path / "seg.json").write_text(json.dumps({"model": "seg.onnx", "num_outputs": 3}))
    segmenter = load_segmenter(tmp_path / "seg.json", SPEC)
    assert segmenter.kind == "onnx"
    ids = torch.tensor([[0, 1], [2, 0]])
    assert torch.equal(segmenter.predict(colour_image(ids))[0], ids)


# ------------------------------------------------------------------------------------------- FID Inception
def expected_inception_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of pytorch-fid's pt_inception-2015-12-05 file, derived from torchvision's Inception3
    (num_classes=1008, aux_logits=False) with the FID blocks — written out independently of our module."""
    convs: list[tuple[str, int, int, tuple[int, int]]] = [
        ("Conv2d_1a_3x3", 3, 32, (3, 3)), ("Conv2d_2a_3x3", 32, 32, (3, 3)), ("Conv2d_2b_3x3", 32, 64, (3, 3)),
        ("Conv2d_3b_1x1", 64, 80, (1, 1)), ("Conv2d_4a_3x3", 80, 192, (3, 3)),
    ]
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs += [(f"{name}.branch1x1", cin, 64, (1, 1)), (f"{name}.branch5x5_1", cin, 48, (1, 1)),
                  (f"{name}.branch5x5_2", 48, 64, (5, 5)), (f"{name}.branch3x3dbl_1", cin, 64, (1, 1)),
                  (f"{name}.branch3x3dbl_2", 64, 96, (3, 3)), (f"{name}.branch3x3dbl_3", 96, 96, (3, 3)),
                  (f"{name}.branch_pool", cin, pool, (1, 1))]
    convs += [("Mixed_6a.branch3x3", 288, 384, (3, 3)), ("Mixed_6a.branch3x3dbl_1", 288, 64, (1, 1)),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, (3, 3)), ("Mixed_6a.branch3x3dbl_3", 96, 96, (3, 3))]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += [(f"{name}.branch1x1", 768, 192, (1, 1)), (f"{name}.branch7x7_1", 768, c7, (1, 1)),
                  (f"{name}.branch7x7_2", c7, c7, (1, 7)), (f"{name}.branch7x7_3", c7, 192, (7, 1)),
                  (f"{name}.branch7x7dbl_1", 768, c7, (1, 1)), (f"{name}.branch7x7dbl_2", c7, c7, (7, 1)),
                  (f"{name}.branch7x7dbl_3", c7, c7, (1, 7)), (f"{name}.branch7x7dbl_4", c7, c7, (7, 1)),
                  (f"{name}.branch7x7dbl_5", c7, 192, (1, 7)), (f"{name}.branch_pool", 768, 192, (1, 1))]
    convs += [("Mixed_7a.branch3x3_1", 768, 192, (1, 1)), ("Mixed_7a.branch3x3_2", 192, 320, (3, 3)),
              ("Mixed_7a.branch7x7x3_1", 768, 192, (1, 1)), ("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7)),
              ("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1)), ("Mixed_7a.branch7x7x3_4", 192, 192, (3, 3))]
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs += [(f"{name}.branch1x1", cin, 320, (1, 1)), (f"{name}.branch3x3_1", cin, 384, (1, 1)),
                  (f"{name}.branch3x3_2a", 384, 384, (1, 3)), (f"{name}.branch3x3_2b", 384, 384, (3, 1)),
                  (f"{name}.branch3x3dbl_1", cin, 448, (1, 1)), (f"{name}.branch3x3dbl_2", 448, 384, (3, 3)),
                  (f"{name}.branch3x3dbl_3a", 384, 384, (1, 3)), (f"{name}.branch3x3dbl_3b", 384, 384, (3, 1)),
                  (f"{name}.branch_pool", cin, 192, (1, 1))]
    shapes: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kernel in convs:
        shapes[f"{name}.conv.weight"] = (cout, cin, *kernel)
        for buffer in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            shapes[f"{name}.{buffer}"] = (cout,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


def test_fid_inception_state_dict_matches_pytorch_fid_keys_and_shapes():
    from inverseg.perception.inception import FIDInceptionV3

    state = FIDInceptionV3().state_dict()
    expected = expected_inception_shapes()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert len([k for k in expected if k.endswith("conv.weight")]) == 94  # Inception v3 has 94 conv layers


def test_fid_inception_loads_a_file_without_batch_counters_and_embeds(tmp_path, monkeypatch):
    from inverseg.perception.inception import FIDInceptionV3, _tf_avg_pool, load_fid_inception

    torch.manual_seed(0)
    source = FIDInceptionV3()
    state = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in source.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # old-PyTorch files have no batch counters
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1.0
    torch.save(state, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "pt_inception-2015-12-05-6726825d.pth").rename(
        tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")
    model = load_fid_inception()
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    features = model.pooled_features(torch.rand(2, 3, 40, 50) * 2 - 1)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    # TensorFlow's average pool ignores the padding: a constant map stays constant at the borders
    assert torch.equal(_tf_avg_pool(torch.ones(1, 1, 5, 5)), torch.ones(1, 1, 5, 5))
    assert model.Mixed_7b.pool == "avg" and model.Mixed_7c.pool == "max"

    from inverseg.eval.features import load_extractor

    extractor = load_extractor("auto")  # the Inception file is present → FID, not FD-MobileNetV2
    assert extractor.fd_name == "FID" and extractor.kd_name == "KID" and extractor.dim == 2048


# ------------------------------------------------------------------------------------------- stats cache
def fake_extractor(key: str = "mobilenet_v2", sha: str = "a" * 64) -> FeatureExtractor:
    return FeatureExtractor(key, "FD-X", "KD-X", 2, "none", "fake", sha,
                            lambda images: images.mean(dim=(2, 3))[:, :2])


def test_stats_cache_key_changes_with_resolution_extractor_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("INVERSEG_CACHE", str(tmp_path / "cache"))
    base = dict(dataset="camvid", path=str(tmp_path), split="val", label_set="camvid", size=(96, 128),
                image_resize="bicubic", names=["a", "b"])
    key = stats_key(**base, extractor=fake_extractor())
    variants = [
        stats_key(**{**base, "size": (192, 256)}, extractor=fake_extractor()),
        stats_key(**base, extractor=fake_extractor(sha="b" * 64)),
        stats_key(**base, extractor=fake_extractor(key="fid-inception")),
        stats_key(**{**base, "split": "train"}, extractor=fake_extractor()),
        stats_key(**{**base, "names": ["a", "c"]}, extractor=fake_extractor()),
    ]
    paths = {stats_path(k) for k in [key, *variants]}
    assert len(paths) == 6
    assert stats_path(key).parent == tmp_path / "cache" / "stats"
    assert "96x128" in stats_path(key).name and "192x256" in stats_path(variants[0]).name

    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(3, 2)

    first, status1 = cached_features(key, compute)
    second, status2 = cached_features(key, compute)
    assert (status1, status2) == ("computed", "cached") and len(calls) == 1
    assert np.array_equal(first, second)
    _, status3 = cached_features(variants[0], compute)
    assert status3 == "computed" and len(calls) == 2
    assert json.loads(stats_path(key).with_suffix(".json").read_text()) == key
