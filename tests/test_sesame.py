"""SESAME: the official networks' shapes and parameter counts, the two-stream discriminator's fusion, edits that keep
the photo outside the hole, the training holes (object / background boxes, context crops), a short training run on
procedural scenes in which the inpainting error falls, and ``Pipeline.edit`` / ``inverseg edit``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from _gan_scenes import CAR, ROAD, SPEC, H, W, build, toy_label
from _studio_runs import SESAME_TINY, index_png, train_tiny, write_colour_segmenter
from inverseg.cli.main import main
from inverseg.data import edit_regions
from inverseg.data.edit_regions import RegionRule
from inverseg.data.synthetic import SyntheticStreets
from inverseg.labels import LabelError, LabelSpec, get_scheme
from inverseg.models.sesame import SesameDiscriminator, SesameGenerator
from inverseg.nn import count_parameters
from inverseg.pipeline import Pipeline

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ("model.ngf=4", "model.spade_hidden=8", "discriminator.ndf=8", "discriminator.num_layers=3",
        "loss.vgg_weights=null", "masking.min_box_size=4", "masking.max_box_size=16")


def official_generator_parameters(label_nc: int, ngf: int = 64, hidden: int = 128) -> int:
    """OpenSESAME's SesameGenerator (--mix_input_gen, --no_skip_connections, defaults), counted layer by layer from
    its definition: input_nc = label_nc + 4, SPADE label channels = label_nc + 1, bias-free convs before IN."""
    cond = label_nc + 1

    def spade(channels):  # shared conv (+bias) and the γ, β convs (+bias)
        return cond * hidden * 9 + hidden + 2 * (hidden * channels * 9 + channels)

    def resblk(fin, fout):
        middle = min(fin, fout)
        total = spade(fin) + fin * middle * 9 + middle + spade(middle) + middle * fout * 9 + fout
        return total + (spade(fin) + fin * fout if fin != fout else 0)

    width = 4 * ngf
    total = (label_nc + 4) * ngf * 49 + ngf * 2 * ngf * 9 + 2 * ngf * width * 9    # encoder
    total += 4 * 2 * width * width * 9                                           # 4 ResnetBlocks
    total += 5 * resblk(width, width) + resblk(width, width // 2) + resblk(width // 2, width // 4)
    return total + ngf * 3 * 9 + 3                                              # conv_img


def official_discriminator_parameters(semantic_nc: int, ndf: int = 64, num_d: int = 2) -> int:
    """Two streams of 4 layers (first with bias, 2–4 bias-free under spectral + instance norm), image stream + the
    4×4 output conv; per scale."""
    def stream(channels):
        return channels * ndf * 16 + ndf + ndf * 2 * ndf * 16 + 2 * ndf * 4 * ndf * 16 + 4 * ndf * 8 * ndf * 16
    return num_d * (stream(3) + stream(semantic_nc) + 8 * ndf * 16 + 1)


def test_cityscapes_preset_has_the_official_parameter_counts_and_runs_a_reduced_forward():
    spec = get_scheme("cityscapes-labelids")
    method, config = build("sesame-cityscapes", (64, 128), "loss.vgg_weights=null", spec=spec, training=True)
    assert method.layout_channels == 35 and config.settings.model.layout_inside_hole_only
    assert count_parameters(method.generator) == official_generator_parameters(35) == 20_489_091
    assert count_parameters(method.discriminator) == official_discriminator_parameters(36) == 11_106_562
    assert config.settings.masking.classes[0] == "person" and method.rule.interest == tuple(range(24, 34))
    assert (config.settings.optim.lr_generator, config.settings.optim.lr_discriminator) == (1e-4, 4e-4)
    label = torch.randint(0, 35, (1, 64, 128))
    photo = torch.rand(1, 3, 64, 128) * 2 - 1
    mask = torch.zeros(1, 64, 128)
    mask[:, 16:48, 32:96] = 1
    out = method.eval().sample(label, image=photo, mask=mask)
    assert out.shape == (1, 1, 3, 64, 128) and torch.equal(out[0, 0][:, mask[0] == 0], photo[0][:, mask[0] == 0])


@pytest.mark.parametrize("label_nc", [49, 150])
def test_ade20k_generator_counts_follow_the_official_definition(label_nc):
    """The official ADE20K model (HIM's 49 classes) and this preset's 150 classes, both by the official formula."""
    generator = SesameGenerator(label_nc + 1)
    assert count_parameters(generator) == official_generator_parameters(label_nc)
    _, config = build("sesame-ade20k", (64, 64), spec=get_scheme("ade20k"))
    assert not config.settings.model.layout_inside_hole_only and config.settings.masking.prob_bg == 0.1


def test_generator_dilations_and_sizes():
    generator = SesameGenerator(5, ngf=4, spade_hidden=8)
    assert [block.block[1].dilation for block in generator.resnet_core] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert [block.conv_0.dilation for block in generator.spade_core] == [(2, 2)] * 4 + [(1, 1)]
    assert generator(torch.rand(2, 3, 24, 40), torch.rand(2, 5, 24, 40)).shape == (2, 3, 24, 40)
    with pytest.raises(ValueError, match="divisible by 4"):
        generator(torch.rand(1, 3, 26, 40), torch.rand(1, 5, 26, 40))


def test_discriminator_fuses_semantics_into_the_image_stream_only_at_the_end():
    torch.manual_seed(0)
    discriminator = SesameDiscriminator(6, num_scales=2, ndf=8, num_layers=4).eval()
    x = torch.rand(2, 9, 32, 48)
    scales = discriminator(x)
    assert len(scales) == 2 and [len(outputs) for outputs in scales] == [5, 5]
    one = discriminator.scales[0]
    image, semantics = x[:, -3:], x[:, :-3]
    for group in one.image.groups[:-1]:
        image = group(image)
    for group in one.semantics.groups:
        semantics = group(semantics)
    assert torch.allclose(scales[0][3], image)  # features: the image stream's, before the fusion
    expected = one.image.groups[-1](image + image * semantics.sum(1, keepdim=True))
    assert torch.allclose(scales[0][-1], expected, atol=1e-6)
    changed = x.clone()
    changed[:, :6] = torch.rand(2, 6, 32, 48)  # other semantics: same features, other logits
    again = discriminator(changed)
    assert torch.allclose(again[0][2], scales[0][2]) and not torch.allclose(again[0][-1], scales[0][-1])


def test_edit_keeps_the_photo_outside_the_hole_and_semantics_follow_the_options():
    torch.manual_seed(0)
    method, _ = build("sesame-cpu", (H, W), *TINY)
    method.eval()
    label, photo = toy_label(), torch.rand(1, 3, H, W) * 2 - 1
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[:, 10:26, 20:44] = True
    out = method.sample(label, image=photo, mask=mask)[:, 0]
    assert torch.equal(out[..., ~mask[0]], photo[..., ~mask[0]])
    assert (out[..., mask[0]] - photo[..., mask[0]]).abs().mean() > 0.05
    assert method.sample(label).shape == (1, 1, 3, H, W)  # no photo: the whole frame is the hole
    semantics = method.semantics(label, mask[:, None].float())
    assert semantics.shape[1] == SPEC.num_classes + 1 + 1 and torch.equal(semantics[:, -1], mask.float())
    method.settings.model.layout_inside_hole_only = True  # --segmentation_mask
    inside_only = method.semantics(label, mask[:, None].float())
    assert inside_only[:, :-1, ~mask[0]].abs().sum() == 0 and torch.equal(inside_only[:, :-1, mask[0]],
                                                                          semantics[:, :-1, mask[0]])
    with pytest.raises(ValueError, match="deterministic"):
        method.sample(label, k=2)
    with pytest.raises(TypeError, match="mask="):
        method.sample(label, image=photo)


# --------------------------------------------------------------------------------------------- training holes
def test_object_boxes_from_instances_and_from_connected_regions():
    label = np.full((20, 30), ROAD)
    label[2:6, 3:9] = CAR
    label[10:18, 20:27] = CAR
    instance = np.where(label == CAR, 0, 100)
    instance[10:18, 20:27] = 1
    by_instance = edit_regions.object_boxes(label, instance, (CAR,))
    assert by_instance == [((2, 3, 6, 9), CAR), ((10, 20, 18, 27), CAR)]
    assert edit_regions.object_boxes(label, None, (CAR,)) == by_instance  # two separate regions of one class
    merged = instance.copy()
    merged[10:18, 20:27] = 0  # one instance spanning both regions → one box around both
    assert edit_regions.object_boxes(label, merged, (CAR,)) == [((2, 3, 18, 27), CAR)]


def test_box_choice_rules():
    torch.manual_seed(0)
    label = np.full((40, 60), ROAD)
    label[2:6, 3:9] = CAR      # longer side 6
    label[10:30, 20:45] = CAR  # longer side 25
    rule = RegionRule((CAR,), min_box_size=8, max_box_size=16, prob_bg=0.0, object_choice="first")
    assert {edit_regions.choose_box(label, None, rule) for _ in range(10)} == {(10, 20, 30, 45)}  # the small one is out
    rule = RegionRule((CAR,), min_box_size=4, max_box_size=16, prob_bg=0.0, object_choice="first")
    assert {edit_regions.choose_box(label, None, rule) for _ in range(10)} == {(2, 3, 6, 9)}
    rule = RegionRule((CAR,), min_box_size=4, max_box_size=16, prob_bg=0.0, object_choice="random")
    assert {edit_regions.choose_box(label, None, rule) for _ in range(30)} == {(2, 3, 6, 9), (10, 20, 30, 45)}
    rule = RegionRule((CAR,), min_box_size=4, max_box_size=16, prob_bg=1.0)
    for _ in range(50):  # background boxes: sides in [min, max), inside the frame
        top, left, bottom, right = edit_regions.choose_box(label, None, rule)
        assert 4 <= bottom - top < 16 and 4 <= right - left < 16 and top >= 0 and left >= 0
        assert bottom < 40 and right < 60


def test_context_window_is_a_square_three_times_the_box_clipped_to_the_frame():
    assert edit_regions.context_window((40, 40, 50, 60), 100, 200, 3.0, jitter=False) == (15, 20, 75, 80)
    assert edit_regions.context_window((0, 0, 10, 10), 100, 200, 3.0, jitter=False) == (0, 0, 30, 30)
    assert edit_regions.context_window((10, 10, 90, 90), 100, 200, 3.0, jitter=False) == (0, 0, 100, 100)  # clipped
    torch.manual_seed(1)
    windows = {edit_regions.context_window((40, 80, 50, 100), 100, 200, 3.0, jitter=True) for _ in range(20)}
    assert len(windows) > 1 and all(b - t == 60 == r - left for t, left, b, r in windows)


def test_sample_regions_crops_context_squares_and_marks_the_box():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 48, 96) * 2 - 1
    label = torch.full((2, 48, 96), ROAD)
    label[:, 20:30, 40:52] = CAR
    rule = RegionRule((CAR,), min_box_size=4, max_box_size=16, prob_bg=0.0)
    images, labels, _, holes = edit_regions.sample_regions(image, label, None, rule, context_crop=True, crop_size=32,
                                                           context_margin=3.0, jitter=False)
    assert images.shape == (2, 3, 32, 32) and labels.shape == (2, 32, 32) and holes.shape == (2, 1, 32, 32)
    # window (7, 28, 43, 64): 36 px around the 10×12 car, resized to 32; the box scaled by 32/36 and truncated as
    # officially (get_bbox_in_context) → rows 11–19, columns 10–20, over the car's resized pixels (± rounding)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[11:20, 10:21] = True
    hole, car = holes[:, 0].bool(), labels == CAR
    assert torch.equal(hole[0], expected) and torch.equal(hole[1], expected)
    assert float((hole & car).sum() / (hole | car).sum()) > 0.6
    flat = edit_regions.sample_regions(image, label, None, rule, context_crop=False, crop_size=32,
                                       context_margin=3.0, jitter=False)
    assert torch.equal(flat[0], image) and flat[3][0, 0].sum() == 120 and bool(flat[3][0, 0, 20:30, 40:52].all())
    whole = edit_regions.sample_regions(image, label, None, rule, False, 32, 3.0, False, prob_full=1.0)
    assert bool(whole[3].all())


def test_masking_settings_are_checked():
    with pytest.raises(ValueError, match="masking.classes: 'unicorn'"):
        build("sesame-cpu", (H, W), *TINY, "masking.classes=[car, unicorn]")
    with pytest.raises(ValueError, match="object_choice"):
        build("sesame-cpu", (H, W), *TINY, "masking.object_choice=largest")


# --------------------------------------------------------------------------------------------- training
def test_short_training_on_procedural_scenes_lowers_the_inpainting_error():
    torch.manual_seed(0)
    method, _ = build("sesame-cpu", (H, W), "model.ngf=8", "model.spade_hidden=16", "discriminator.ndf=8",
                      "discriminator.num_layers=3", "loss.vgg_weights=null", "masking.min_box_size=4",
                      "masking.max_box_size=16", "masking.prob_full=0", training=True)
    scenes = SyntheticStreets(split="train", size=(H, W), length=4)
    batch = {key: torch.stack([scenes[i][key] for i in range(4)]) for key in ("image", "label", "instance")}

    def hole_error() -> float:  # the same holes each time, the generator in inference mode
        torch.manual_seed(123)
        real, semantics, hole = method.training_inputs(batch)
        with torch.no_grad():
            fake = method.eval().inpaint(method.generator, real, semantics)
        method.train()
        return float(((fake - real).abs() * hole).sum() / (3 * hole.sum()))

    before = hole_error()
    losses = [method.train_step(batch, step) for step in range(30)]
    after = hole_error()
    assert set(losses[0]) == {"g_gan", "g_feat", "g_vgg", "d_real", "d_fake"}
    assert after < 0.85 * before, (before, after)
    assert np.mean([l["g_feat"] for l in losses[-5:]]) < np.mean([l["g_feat"] for l in losses[:5]])


def test_train_then_edit_through_the_cli_and_the_pipeline(tmp_path):
    run = train_tiny(tmp_path / "run", "sesame-cpu", *SESAME_TINY)
    pipe = Pipeline.from_pretrained(run)
    assert pipe.edits_photos
    label = toy_label()[0].numpy()
    photo = Image.fromarray(SPEC.colorize(label)).resize((2 * W, 2 * H), Image.NEAREST)  # a photo at 2× the model size
    edited = label.copy()
    edited[4:12, 40:56] = CAR
    result = pipe.edit(photo, edited, original_layout=label, grow=1)
    region = pipe.last_region
    assert result.size == photo.size and tuple(region.shape) == (H, W)
    assert bool(region[4:12, 40:56].all()) and int(region.sum()) == 10 * 18  # the change, grown by one pixel
    inside = np.kron(region.numpy(), np.ones((2, 2), bool))
    assert np.array_equal(np.asarray(result)[~inside], np.asarray(photo)[~inside])  # the rest: the photo's pixels
    with pytest.raises(ValueError, match="mask=REGION"):
        pipe.edit(photo, edited)

    segmenter = write_colour_segmenter(tmp_path / "segmenter")
    plain = np.where(label == SPEC.ignore_index, ROAD, label)  # the colour segmenter knows no void
    assert torch.equal(pipe.segment(SPEC.colorize(plain), pipe.load_segmenter(segmenter)), torch.from_numpy(plain))

    (tmp_path / "edited.png").write_bytes(index_png(edited))
    photo.save(tmp_path / "photo.png")
    out = tmp_path / "out.png"
    assert main(["edit", "--checkpoint", str(run), "--image", str(tmp_path / "photo.png"), "--layout",
                 str(tmp_path / "edited.png"), "--segmenter", str(segmenter), "--out", str(out)]) == 0
    reading = pipe.segment(photo, pipe.load_segmenter(segmenter))  # no --mask: where the layout differs from this
    expected = pipe.edit(photo, edited, original_layout=reading)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    mask = np.zeros((H, W), np.uint8)
    mask[4:12, 40:56] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["edit", "--checkpoint", str(run), "--image", str(tmp_path / "photo.png"), "--layout",
                 str(tmp_path / "edited.png"), "--mask", str(tmp_path / "mask.png"), "--grow", "0", "--size",
                 "model", "--out", str(out)]) == 0
    assert Image.open(out).size == (W, H)


def test_edit_cli_refuses_a_synthesis_run_and_a_missing_segmenter(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INVERSEG_CACHE", str(tmp_path / "cache"))
    run = train_tiny(tmp_path / "spade", "spade-cpu", "model.ngf=4", "model.spade_hidden=8", "vae.enabled=false",
                     "model.instance_edges=false", "train.sample_k=1", steps=1)
    label = toy_label()[0].numpy()
    (tmp_path / "l.png").write_bytes(index_png(label))
    Image.fromarray(SPEC.colorize(label)).save(tmp_path / "p.png")
    args = ["edit", "--image", str(tmp_path / "p.png"), "--layout", str(tmp_path / "l.png"), "--out",
            str(tmp_path / "o.png")]
    assert main(["edit", "--checkpoint", str(run), *args[1:]]) == 2
    assert "synthesizes from layouts only" in capsys.readouterr().err
    sesame = train_tiny(tmp_path / "sesame", "sesame-cpu", *SESAME_TINY, steps=1)
    assert main(["edit", "--checkpoint", str(sesame), *args[1:]]) == 2
    assert "no segmenter for label set 'camvid' at 32x64" in capsys.readouterr().err


def test_colour_layouts_may_use_the_void_colour():
    spec = LabelSpec("three", ("a", "b", "c"), ((200, 0, 0), (0, 200, 0), (0, 0, 200)), ignore_index=255)
    pipe = Pipeline.__new__(Pipeline)
    pipe.spec = spec
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (200, 0, 0)
    assert pipe.read_label(rgb, void_colour=True).tolist() == [[0, 255, 255], [255, 255, 255]]
    with pytest.raises(LabelError, match=r"colours \(0,0,0\) \(5 px\)"):
        pipe.read_label(rgb)  # by default a colour file must use class colours only
