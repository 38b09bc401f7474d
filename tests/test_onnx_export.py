"""ONNX export (``inverseg export``) and the onnxruntime backend (``inverseg synthesize --model``).

Per method: a tiny randomly initialised network (init gain 1, so the images are not flat grey) is exported; the
graph on onnxruntime must match the eager network within 1e-4 on the same random inputs, and the ONNX pipeline,
which draws those inputs itself, must give the eager pipeline's images for the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _gan_scenes import SPEC, H, W, build, toy_label
from inverseg.methods.lggan import LGGAN
from inverseg.pipeline import Pipeline

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from inverseg.export import export_onnx, load_onnx_pipeline  # noqa: E402
from inverseg.export.onnx import build_graph, edge_map, example_inputs, one_hot  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TOLERANCE = 1e-4

CRN_TINY = ("model.widths=[8,8,8,8,8,8]", "model.base_grid=[1,2]")
SPADE_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.init_gain=1.0", "vae.nf=4", f"vae.input_size=[{H},{W}]",
              "vae.num_layers=5", "vae.z_dim=8")
OASIS_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.z_dim=8", "model.init_gain=1.0")
PIX2PIXHD_TINY = ("model.ngf=8", "model.n_downsample_global=2", "model.n_blocks_global=1", "features.nef=4",
                  "features.n_downsample=2", "features.n_clusters=3", "model.init_gain=0.1")
SIMS_TINY = ("model.encoder_widths=[8,16,16]", "model.encoder_convs=[1,1,1]", "model.decoder_widths=[16,16,16]",
             "model.final_width=8")
SESAME_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.init_gain=1.0")
CCFPSE_TINY = ("model.ngf=4", "model.hidden=8", "model.pyramid_channels=4", "model.init_gain=1.0", "vae.nf=4",
               f"vae.input_size=[{H},{W}]", "vae.num_layers=5", "vae.z_dim=8")
LGGAN_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.local_blocks=2", "model.init_gain=1.0")
SAFM_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.shape_hidden=4", "model.init_gain=1.0", "vae.nf=4",
             f"vae.input_size=[{H},{W}]", "vae.num_layers=5", "vae.z_dim=8")

CASES = {
    "crn": ("crn-cpu", CRN_TINY + ("model.num_outputs=3",)),
    "spade": ("spade-cpu", SPADE_TINY + ("vae.enabled=false",)),
    "spade-vae": ("spade-cpu", SPADE_TINY),
    "oasis": ("oasis-cpu", OASIS_TINY),
    "pix2pixhd": ("pix2pixhd-cpu", PIX2PIXHD_TINY),
    "pix2pixhd-plain": ("pix2pixhd-cpu", PIX2PIXHD_TINY + ("features.enabled=false",)),
    "sims": ("sims-cpu", SIMS_TINY),
    "sesame": ("sesame-cpu", SESAME_TINY),
    "ccfpse": ("ccfpse-cpu", CCFPSE_TINY),  # with the VAE (z input, style encoder file), as the preset
    "lggan": ("lggan-cpu", LGGAN_TINY),
    "safm": ("safm-cpu", SAFM_TINY),  # placement=input (Cityscapes design), SPD of instances ≥ 1000, VAE
    "safm-blocks": ("safm-cpu", SAFM_TINY + ("model.placement=blocks", "vae.enabled=false")),
}


def tiny_pipeline(case: str) -> Pipeline:
    preset, overrides = CASES[case]
    torch.manual_seed(0)
    method, config = build(preset, (H, W), *overrides)
    if method.name == "pix2pixhd" and method.clusters is not None:  # a fitted-looking cluster table
        method.clusters.centers.normal_()
        method.clusters.counts.fill_(2)
    for module in method.modules():  # batch norm with non-trivial statistics, so eval mode is exercised
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return Pipeline(method, SPEC, (H, W), config, source=f"tiny {case}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Pipeline, Path]]:
    """Every case exported once (a few seconds in all)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("onnx")
    try:
        result = {}
        for case in CASES:
            pipe = tiny_pipeline(case)
            export_onnx(pipe, folder / f"{case}.onnx")
            result[case] = (pipe, folder / f"{case}.onnx")
        return result
    finally:
        torch.set_num_threads(threads)


def test_graph_encoding_matches_the_eager_encoding():
    label = toy_label(2)
    label[1, :, 40:] = 8  # another instance of the car class
    for void_channel in (False, True):
        eager = SPEC.one_hot(label, mode="nearest", void_channel=void_channel)
        assert torch.equal(one_hot(label, torch.arange(SPEC.num_classes), void_channel), eager)
    from inverseg.labels.spec import instance_edges

    assert torch.equal(edge_map(label), instance_edges(label))


@pytest.mark.parametrize("case", list(CASES))
def test_graph_matches_eager_within_1e4(exported, case):
    """Same inputs (random z / noise / features / canvas, batch 3 ≠ the traced 2) → ≤ 1e-4 apart."""
    from inverseg.export.runtime import open_session

    pipe, path = exported[case]
    module, inputs, _ = build_graph(pipe.method)
    tensors = example_inputs(inputs, SPEC, batch=3, seed=1)
    with torch.no_grad():
        eager = module(*tensors).numpy()
    session = open_session(path, threads=1)
    output = session.run(None, {item.name: tensor.numpy() for item, tensor in zip(inputs, tensors)})[0]
    assert output.shape == eager.shape
    assert float(np.abs(output - eager).max()) <= TOLERANCE
    assert float(eager.std()) > 1e-3  # not a flat image: the comparison means something


@pytest.mark.parametrize("case, kwargs", [
    ("crn", {"k": 3}), ("spade", {}), ("spade-vae", {"k": 2, "seed": 5}), ("oasis", {"k": 2, "seed": 3}),
    ("pix2pixhd", {"k": 2, "seed": 4}), ("pix2pixhd", {"style": 1}), ("pix2pixhd", {"style": {"car": 0}, "seed": 2}),
    ("pix2pixhd-plain", {}), ("sims", {"canvas": "empty"}), ("sesame", {}),
    ("ccfpse", {"k": 2, "seed": 5}), ("lggan", {}), ("safm", {"k": 2, "seed": 3}), ("safm-blocks", {}),
])
def test_onnx_pipeline_gives_the_eager_images(exported, case, kwargs):
    """The runtime draws z / noise / cluster features exactly as the eager method: same seed, same images."""
    pipe, path = exported[case]
    onnx_pipe = load_onnx_pipeline(path, threads=1)
    assert onnx_pipe.image_size == (H, W) and onnx_pipe.spec.class_names == SPEC.class_names
    label = toy_label(1)[0]
    with torch.no_grad():
        eager = pipe.method.sample(label[None], generator=torch.Generator().manual_seed(kwargs.get("seed", 0)),
                                   **{key: v for key, v in kwargs.items() if key != "seed"})
        ours = onnx_pipe.method.sample(label[None], generator=torch.Generator().manual_seed(kwargs.get("seed", 0)),
                                       **{key: v for key, v in kwargs.items() if key != "seed"})
    assert ours.shape == eager.shape
    assert float((ours - eager).abs().max()) <= TOLERANCE
    images = onnx_pipe(label, **{key: v for key, v in kwargs.items() if key != "canvas"})  # (str: a style path)
    assert len(images) == kwargs.get("k", 1) and images[0].size == (W, H)


def test_spade_style_photo_and_oasis_noise_inputs(exported):
    spade, path = exported["spade-vae"]
    assert path.with_name("spade-vae.style.onnx").is_file()
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))
    label = toy_label(1)[0]
    eager = [np.asarray(image) for image in spade(label, style_image=photo, seed=1)]
    ours = [np.asarray(image) for image in load_onnx_pipeline(path, threads=1)(label, style_image=photo, seed=1)]
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(eager, ours)) <= 1  # uint8 rounding only
    oasis, path = exported["oasis"]
    onnx_oasis = load_onnx_pipeline(path, threads=1)
    onnx_oasis(label, seed=7, k=2)
    noise = onnx_oasis.method.last_noise
    assert noise.shape == (1, 2, 8, H, W)
    with torch.no_grad():
        eager = oasis.method.sample(label[None], k=2, noise=noise)
        ours = onnx_oasis.method.sample(label[None], k=2, noise=noise)
    assert float((ours - eager).abs().max()) <= TOLERANCE


def test_later_methods_write_their_own_inputs(exported):
    """SAFM's SPD is an explicit input after ``instance``; CC-FPSE's VAE has its style file; LGGAN has neither."""
    import onnx

    def names(case: str) -> tuple[list[str], dict]:
        props = {p.key: p.value for p in onnx.load(str(exported[case][1])).metadata_props}
        assert props["inverseg.method"] == case.split("-")[0] and props["inverseg.graph"] == "spade"
        return [item["name"] for item in json.loads(props["inverseg.inputs"])], json.loads(props["inverseg.sampling"])

    inputs, sampling = names("safm")
    assert inputs == ["label", "instance", "spd", "z"]
    assert sampling["layout_inputs"]["spd"]["channels"] == 72
    assert sampling["layout_inputs"]["spd"]["source"] == "instance"
    assert sampling["layout_inputs"]["spd"]["min_instance_id"] == 1000
    assert names("safm-blocks")[0] == ["label", "instance", "spd"]
    assert names("ccfpse")[0] == ["label", "instance", "z"]
    assert exported["ccfpse"][1].with_name("ccfpse.style.onnx").is_file()
    assert names("lggan") == (["label", "instance"], {"z_dim": 0, "vae_fix": LGGAN.vae_fix})
    from inverseg.export import EXPORTABLE_METHODS
    from inverseg.export.onnx import GRAPHS
    from inverseg.methods import METHODS, get_method

    assert sorted(EXPORTABLE_METHODS) == sorted(METHODS)  # the list in the refusal names every method with a graph
    assert all(get_method(name).export_graph in GRAPHS for name in METHODS)


@pytest.mark.parametrize("case", ["ccfpse", "lggan", "safm"])
def test_pipeline_from_onnx_synthesizes_a_label_map_file(exported, case, tmp_path):
    """``Pipeline.from_onnx`` alone (no checkpoint) turns an index PNG into the eager pipeline's image."""
    pipe, path = exported[case]
    layout = tmp_path / "layout.png"
    Image.fromarray(toy_label(1)[0].numpy().astype(np.uint8), "L").save(layout)
    ours = Pipeline.from_onnx(path, threads=1)(layout, seed=6)
    eager = pipe(layout, seed=6)
    assert len(ours) == 1 and ours[0].size == (W, H)
    assert np.abs(np.asarray(ours[0]).astype(int) - np.asarray(eager[0])).max() <= 1  # uint8 rounding only


def test_safm_descriptor_of_an_instance_map_and_ccfpse_style_photo(exported):
    """The runtime computes SAFM's SPD from ``instance=`` (ids ≥ 1000) as the eager method does."""
    pipe, path = exported["safm"]
    onnx_pipe = load_onnx_pipeline(path, threads=1)
    label = toy_label(1)
    instance = label.clone()
    instance[:, 18:26, 8:16], instance[:, 18:26, 16:24] = 8000, 8001  # two cars, the rest stuff (< 1000)
    kwargs = {"k": 2, "instance": instance}
    with torch.no_grad():
        eager = pipe.method.sample(label, generator=torch.Generator().manual_seed(2), **kwargs)
        ours = onnx_pipe.method.sample(label, generator=torch.Generator().manual_seed(2), **kwargs)
        without = pipe.method.sample(label, generator=torch.Generator().manual_seed(2), k=2)
    assert float((ours - eager).abs().max()) <= TOLERANCE
    assert float((eager - without).abs().max()) > 1e-3  # the instance map did change the SPD, hence the images
    ccfpse, path = exported["ccfpse"]
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8))
    eager = [np.asarray(image) for image in ccfpse(label[0], style_image=photo, seed=4)]
    ours = [np.asarray(image) for image in load_onnx_pipeline(path, threads=1)(label[0], style_image=photo, seed=4)]
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(eager, ours)) <= 1  # uint8 rounding only


def test_traceable_rewrites_keep_the_eager_numbers():
    """The model changes made for the export compute bit-identical values to the code they replaced."""
    import torch.nn.functional as F

    from inverseg.models.ccfpse import CondConvBlock, CondConvGenerator
    from inverseg.models.lggan import LGGANGenerator
    from inverseg.nn.condconv import conditional_depthwise_conv

    generator = torch.Generator().manual_seed(0)
    for kernel in (3, 5):  # conditional depthwise conv: unflatten instead of view(batch, …)
        x = torch.randn(2, 5, 7, 9, generator=generator)
        kernels = torch.randn(2, 5 * kernel * kernel, 7, 9, generator=generator)
        patches = F.unfold(x, kernel, padding=kernel // 2).view(2, 5, kernel * kernel, 7, 9)
        old = (patches * kernels.view(2, 5, kernel * kernel, 7, 9)).sum(dim=2)
        assert torch.equal(conditional_depthwise_conv(x, kernels, kernel), old)
    for mode, size in (("normal", (32, 64)), ("more", (64, 64)), ("most", (128, 128))):
        # LGGAN's start map: a strided slice instead of nearest interpolation to the start grid
        lggan = LGGANGenerator(5, size, 4, ngf=2, num_upsampling=mode, local_blocks=1).eval()
        x_encode = lggan.encoder_head(torch.randn(1, 5, *size, generator=generator))
        expected = F.interpolate(lggan.encoder_tail(x_encode), size=lggan.grid, mode="nearest")
        assert torch.equal(lggan.start_map(x_encode), expected) and expected.shape[-2:] == lggan.grid
    for mode, size in (("normal", (32, 64)), ("more", (64, 64))):
        # CC-FPSE: every block reads the pyramid level of its own resolution (was: looked up by size)
        ccfpse = CondConvGenerator(5, size, ngf=2, num_upsampling=mode, hidden=4, spectral=False).eval()
        layout = torch.randn(1, 5, *size, generator=generator)
        levels = {tuple(level.shape[-2:]): level for level in ccfpse.pyramid(layout)}
        seen = []

        def check(block, args, _output):
            x, cond = args
            seen.append(tuple(x.shape[-2:]))
            assert torch.equal(cond[:, 5:], levels[tuple(x.shape[-2:])])

        handles = [block.register_forward_hook(check) for block in ccfpse.modules()
                   if isinstance(block, CondConvBlock)]
        with torch.no_grad():
            ccfpse(layout)
        for handle in handles:
            handle.remove()
        assert len(seen) == 3 + len(ccfpse.up_blocks) and seen[-1] == size


def test_sesame_edit_runs_on_onnx(exported):
    pipe, path = exported["sesame"]
    photo = Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8))
    label, mask = toy_label(1)[0], np.zeros((H, W), dtype=np.uint8)
    mask[8:20, 10:30] = 1
    eager = np.asarray(pipe.edit(photo, label, mask=mask)).astype(int)
    ours = np.asarray(load_onnx_pipeline(path, threads=1).edit(photo, label, mask=mask)).astype(int)
    assert np.abs(eager - ours).max() <= 1


def test_metadata_describes_the_model(exported):
    import onnx

    _, path = exported["pix2pixhd"]
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["inverseg.method"] == "pix2pixhd"
    assert json.loads(props["inverseg.image_size"]) == [H, W]
    assert json.loads(props["inverseg.spec"])["class_names"] == list(SPEC.class_names)
    assert [item["name"] for item in json.loads(props["inverseg.inputs"])] == ["label", "instance", "features"]
    assert len(json.loads(props["inverseg.sampling"])["centers"]) == SPEC.num_classes + 1


def test_onnx_runs_declare_the_eager_controls_less_what_the_graphs_cannot_do(exported):
    """The studio and ``synthesize`` read ``pipe.controls`` on this backend too: the eager run's, except OASIS's
    re-sampling and pix2pixHD's style photo (refused here), and SIMS's empty canvas (k equal images: k = 1)."""
    from dataclasses import replace

    missing = {"oasis": {"resample": False}, "pix2pixhd": {"style_image": False}, "sims": {"max_k": 1}}
    for case, (pipe, path) in exported.items():
        assert load_onnx_pipeline(path).controls == replace(pipe.controls, **missing.get(case, {})), case
    assert exported["pix2pixhd"][0].controls.clusters == 3 and exported["spade-vae"][0].controls.style_image
    assert exported["crn"][0].controls.max_k == 3 and exported["oasis"][0].controls.max_k is None


def test_a_file_without_stored_controls_offers_one_image_and_no_options(exported, tmp_path):
    import onnx

    from inverseg.methods import InferenceControls

    model = onnx.load(str(exported["oasis"][1]))
    kept = [prop for prop in model.metadata_props if prop.key != "inverseg.controls"]
    assert len(kept) == len(model.metadata_props) - 1
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "old.onnx"))
    assert load_onnx_pipeline(tmp_path / "old.onnx").controls == InferenceControls()


def test_unsupported_requests_are_one_line_errors(exported, tmp_path, monkeypatch):
    from inverseg.export import ExportError

    label = toy_label(1)[0]
    with pytest.raises(TypeError, match="checkpoint"):
        load_onnx_pipeline(exported["oasis"][1])(label, resample_classes=["car"])
    with pytest.raises(TypeError, match="checkpoint"):
        load_onnx_pipeline(exported["sims"][1]).method.sample(label[None], canvas="retrieved")
    with pytest.raises(ExportError, match="no such ONNX file"):
        load_onnx_pipeline(tmp_path / "missing.onnx")
    # a method without a graph (``Method.export_graph = None``) is refused before anything is written
    crn, _ = exported["crn"]
    monkeypatch.setattr(type(crn.method), "export_graph", None)
    with pytest.raises(ExportError, match=r"ONNX export of crn runs is not supported .*--checkpoint RUN") as error:
        export_onnx(crn, tmp_path / "none.onnx")
    assert "\n" not in str(error.value) and not (tmp_path / "none.onnx").exists()
    # the later methods refuse what their eager sample refuses, with the same one-line messages
    lggan, lggan_path = exported["lggan"]
    lggan_onnx = load_onnx_pipeline(lggan_path, threads=1).method
    for kwargs, kind, text in (({"k": 2}, ValueError, "deterministic"),
                               ({"style_image": torch.zeros(1, 3, H, W)}, TypeError,
                                "without the VAE.*LGGAN has no VAE mode"),
                               ({"noise": 1}, TypeError, "LGGAN takes style_image")):
        with pytest.raises(kind, match=text) as error:
            lggan_onnx.sample(label[None], **kwargs)
        assert "\n" not in str(error.value)
        with pytest.raises(kind, match=text):
            lggan.method.sample(label[None], **kwargs)
    with pytest.raises(TypeError, match="SAFM takes style_image") as error:
        load_onnx_pipeline(exported["safm"][1], threads=1).method.sample(label[None], canvas="empty")
    assert "\n" not in str(error.value)


def test_cli_export_then_synthesize_with_the_onnx_backend(tmp_path, capsys):
    """inverseg export + inverseg synthesize --model write the PNGs synthesize --checkpoint writes (same seed)."""
    from _studio_runs import OASIS_TINY, train_tiny
    from inverseg.cli.main import main

    run = train_tiny(tmp_path / "oasis", "oasis-cpu", *OASIS_TINY, "train.sample_k=1")
    labels = tmp_path / "labels"
    labels.mkdir()
    Image.fromarray(toy_label(1)[0].numpy().astype(np.uint8), "L").save(labels / "scene.png")
    model = tmp_path / "export" / "oasis.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(model)]) == 0
    assert "max |onnx − eager|" in capsys.readouterr().out
    common = ["--labels", str(labels), "--k", "2", "--seed", "3"]
    assert main(["synthesize", "--checkpoint", str(run), "--out", str(tmp_path / "eager"), *common]) == 0
    assert main(["synthesize", "--model", str(model), "--out", str(tmp_path / "onnx"), *common]) == 0
    for name in ("scene_0.png", "scene_1.png"):
        eager = np.asarray(Image.open(tmp_path / "eager" / name)).astype(int)
        ours = np.asarray(Image.open(tmp_path / "onnx" / name)).astype(int)
        assert np.abs(eager - ours).max() <= 1  # uint8 rounding of values ≤ 1e-4 apart
    # the wrong pairings are one-line errors (exit 2)
    assert main(["synthesize", "--checkpoint", str(run), "--backend", "onnx", "--out", str(tmp_path / "x"),
                 *common]) == 2
    assert "inverseg export" in capsys.readouterr().err
    assert main(["synthesize", "--checkpoint", str(model), "--out", str(tmp_path / "x"), *common]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "model.pt")]) == 2
