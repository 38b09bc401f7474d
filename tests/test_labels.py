"""LabelSpec encodings and validation, instance edges, the dataset schemes, and TSV palettes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inverseg.labels import SCHEMES, LabelError, LabelSpec, Palette, get_scheme, guess_ignore_id, instance_edges
from inverseg.labels.schemes import ADE20K, CAMVID, CITYSCAPES, CITYSCAPES_LABELIDS, CMP, COCOSTUFF

SPEC4 = LabelSpec(
    name="four",
    class_names=("a", "b", "c", "d"),
    colors=((10, 0, 0), (0, 20, 0), (0, 0, 30), (40, 40, 40)),
    ignore_index=255,
    void_color=(1, 2, 3),
)
V = 255
# class counts: 0 → 3 px, 1 → 4 px, 2 → 5 px, 3 → 1 px, void → 3 px
MAP4 = torch.tensor([
    [0, 0, 1, 1],
    [0, 2, 1, 1],
    [2, 2, 3, V],
    [2, 2, V, V],
])


# ---------------------------------------------------------------------------------------------- one_hot
def test_one_hot_full_resolution_is_exact_and_void_is_all_zero():
    encoded = SPEC4.one_hot(MAP4)
    assert encoded.shape == (1, 4, 4, 4) and encoded.dtype == torch.float32
    for class_id in range(4):
        assert torch.equal(encoded[0, class_id], (MAP4 == class_id).float())
    assert torch.equal(encoded[0].sum(0), (MAP4 != V).float())  # void pixels: every channel 0


def test_one_hot_area_gives_exact_class_fractions_at_2x2():
    encoded = SPEC4.one_hot(MAP4, size=(2, 2), mode="area")
    expected = torch.tensor([
        # class 0        class 1           class 2              class 3
        [[0.75, 0.0], [0.0, 0.0]],
        [[0.0, 1.0], [0.0, 0.0]],
        [[0.25, 0.0], [1.0, 0.0]],
        [[0.0, 0.0], [0.0, 0.25]],
    ])
    assert encoded.shape == (1, 4, 2, 2)
    torch.testing.assert_close(encoded[0], expected, rtol=0, atol=1e-6)


def test_one_hot_area_1x1_is_the_class_histogram_and_void_channel_the_rest():
    encoded = SPEC4.one_hot(MAP4, size=(1, 1), mode="area", void_channel=True)
    assert encoded.shape == (1, 5, 1, 1)
    torch.testing.assert_close(encoded.flatten(), torch.tensor([3, 4, 5, 1, 3]) / 16.0, rtol=0, atol=1e-6)


def test_void_channel_is_one_minus_sum_of_classes():
    encoded = SPEC4.one_hot(MAP4, size=(2, 2), void_channel=True)
    assert encoded.shape == (1, 5, 2, 2)
    torch.testing.assert_close(encoded[0, 4], torch.tensor([[0.0, 0.0], [0.0, 0.75]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(encoded[0, :4], SPEC4.one_hot(MAP4, size=(2, 2))[0])
    full = SPEC4.one_hot(MAP4, void_channel=True)
    assert torch.equal(full[0, 4], (MAP4 == V).float())
    assert SPEC4.input_channels(True) == 5 and SPEC4.input_channels(False) == 4


def test_one_hot_nearest_picks_single_pixels():
    encoded = SPEC4.one_hot(MAP4, size=(2, 2), mode="nearest")
    assert encoded.shape == (1, 4, 2, 2)
    assert set(encoded.unique().tolist()) == {0.0, 1.0}
    # every output cell is one-hot of one input pixel: here [[0, 1], [2, 3]]
    assert torch.equal(encoded[0].argmax(0), torch.tensor([[0, 1], [2, 3]]))
    assert torch.equal(encoded[0].sum(0), torch.ones(2, 2))
    # nearest upsampling of void stays void (all-zero), with the void channel set
    up = SPEC4.one_hot(MAP4, size=(8, 8), mode="nearest", void_channel=True)
    assert torch.equal(up[0, 4], (MAP4 == V).float().repeat_interleave(2, 0).repeat_interleave(2, 1))


@pytest.mark.parametrize("size", [(3, 5), (7, 9), (1, 6), (4, 4), (16, 3)])
@pytest.mark.parametrize("mode", ["area", "nearest"])
def test_one_hot_any_output_size_sums_to_one_with_void_channel(size, mode):
    encoded = SPEC4.one_hot(MAP4, size=size, mode=mode, void_channel=True)
    assert encoded.shape == (1, 5, *size)
    assert float(encoded.min()) >= 0.0 and float(encoded.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(encoded.sum(1), torch.ones(1, *size), rtol=0, atol=1e-5)


def test_one_hot_batched_3d_equals_per_sample_2d():
    other = torch.flip(MAP4, dims=[1])
    batch = torch.stack([MAP4, other])
    encoded = SPEC4.one_hot(batch, size=(2, 2))
    assert encoded.shape == (2, 4, 2, 2)
    torch.testing.assert_close(encoded[0], SPEC4.one_hot(MAP4, size=(2, 2))[0])
    torch.testing.assert_close(encoded[1], SPEC4.one_hot(other, size=(2, 2))[0])
    assert not torch.equal(encoded[0], encoded[1])


def test_one_hot_rejects_bad_shapes_and_modes():
    with pytest.raises(ValueError, match=r"\(B,H,W\) or \(H,W\)"):
        SPEC4.one_hot(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="'bilinear'"):
        SPEC4.one_hot(MAP4, size=(2, 2), mode="bilinear")


@pytest.mark.parametrize("bad_value", [4, 7, -1, 254])
def test_one_hot_values_outside_the_spec_raise_instead_of_clamping(bad_value):
    label = MAP4.clone()
    label[0, :3] = bad_value
    with pytest.raises(LabelError) as info:
        SPEC4.one_hot(label, size=(2, 2))
    message = str(info.value)
    assert f"{bad_value} (3 px)" in message
    assert "class ids 0–3 and void 255" in message
    assert "\n" not in message


def test_validate_message_names_source_values_counts_and_allowed_set():
    label = np.zeros((6, 6), dtype=np.int64)
    label[0, :5] = 12  # 5 px
    label[5, :2] = 40  # 2 px
    with pytest.raises(LabelError) as info:
        CAMVID.validate(label, source="frames/0001.png")
    message = str(info.value)
    assert message.startswith("frames/0001.png: ")
    assert "12 (5 px), 40 (2 px)" in message  # most frequent first
    assert "'camvid'" in message and "class ids 0–10 and void 11" in message
    assert "\n" not in message
    CAMVID.validate(np.array([[0, 10], [11, 3]]))  # classes and void pass
    CAMVID.validate(torch.tensor([[0, 10], [11, 3]]))


def test_validate_without_ignore_index_rejects_255():
    with pytest.raises(LabelError, match=r"255 \(1 px\).*class ids 0–34\b"):
        CITYSCAPES_LABELIDS.validate(np.array([[0, 34, 255]]), source="x")
    assert "void" not in CITYSCAPES_LABELIDS.allowed_description()


def test_validation_lists_many_values_compactly():
    with pytest.raises(LabelError) as info:
        SPEC4.validate(np.arange(10, 30), source="s")
    assert "… 12 more" in str(info.value)


def test_spec_construction_errors():
    with pytest.raises(ValueError, match="2 names but 1 colours"):
        LabelSpec("x", ("a", "b"), ((0, 0, 0),))
    with pytest.raises(ValueError, match="ignore_index 1 collides"):
        LabelSpec("x", ("a", "b"), ((0, 0, 0), (1, 1, 1)), ignore_index=1)


def test_to_dict_round_trip():
    again = LabelSpec.from_dict(SPEC4.to_dict())
    assert again == SPEC4
    restored = LabelSpec.from_dict(CITYSCAPES.to_dict())
    assert restored.class_names == CITYSCAPES.class_names and restored.ignore_index == 255
    assert restored.raw_to_id is None  # file encoding is not part of a run's label description


def test_class_name_lookup():
    assert CAMVID.class_name(3) == "road"
    assert CAMVID.class_name(11) == "void"
    assert CAMVID.class_name(99) == "<unknown 99>"


# ---------------------------------------------------------------------------------------------- edges
def test_instance_edges_four_neighbour_rule():
    instance = torch.tensor([
        [1, 1, 2, 2],
        [1, 1, 2, 2],
        [3, 3, 3, 3],
        [3, 3, 3, 3],
    ])
    expected = torch.tensor([
        [0, 1, 1, 0],
        [1, 1, 1, 1],
        [1, 1, 1, 1],
        [0, 0, 0, 0],
    ], dtype=torch.float32)
    edges = instance_edges(instance)
    assert edges.shape == (1, 4, 4) and edges.dtype == torch.float32
    assert torch.equal(edges[0], expected)


def test_instance_edges_ignore_diagonal_neighbours_and_batch():
    instance = torch.tensor([
        [5, 5, 5],
        [5, 5, 5],
        [5, 5, 26001],
    ])
    expected = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.float32)
    batch = torch.stack([instance, torch.full((3, 3), 7)])
    edges = instance_edges(batch)
    assert edges.shape == (2, 1, 3, 3)
    assert torch.equal(edges[0, 0], expected)  # centre differs only diagonally: no edge
    assert torch.equal(edges[1, 0], torch.zeros(3, 3))


# ---------------------------------------------------------------------------------------------- colorize
def test_colorize_uses_spec_colours_and_void_colour():
    out = SPEC4.colorize(np.array([[0, 3], [255, 77]]))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out.tolist() == [[[10, 0, 0], [40, 40, 40]], [[1, 2, 3], [1, 2, 3]]]
    camvid = CAMVID.colorize(torch.tensor([[3, 11]]))
    assert camvid.tolist() == [[[128, 64, 128], [0, 0, 0]]]


# ---------------------------------------------------------------------------------------------- schemes
# cityscapesScripts labels.py: labelId → trainId (255 = ignored in evaluation)
CITYSCAPES_TRAIN_IDS = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13,
                                    14, 15, 255, 255, 16, 17, 18]


def test_cityscapes_label_ids_to_train_ids():
    assert len(CITYSCAPES_TRAIN_IDS) == 34
    raw = np.arange(34, dtype=np.uint8).reshape(2, 17)
    assert CITYSCAPES.ids_from_raw(raw).ravel().tolist() == CITYSCAPES_TRAIN_IDS
    assert CITYSCAPES.ids_from_raw(np.array([7, 26, 0, 33])).tolist() == [0, 13, 255, 18]
    assert CITYSCAPES.num_classes == 19 and CITYSCAPES.ignore_index == 255
    assert CITYSCAPES.class_names[0] == "road" and CITYSCAPES.class_names[13] == "car"
    assert CITYSCAPES.class_names[10] == "sky" and CITYSCAPES.class_names[18] == "bicycle"
    assert len(set(CITYSCAPES.colors)) == 19 and CITYSCAPES.colors[13] == (0, 0, 142)


def test_cityscapes_rejects_values_above_33():
    with pytest.raises(LabelError) as info:
        CITYSCAPES.ids_from_raw(np.array([[7, 34, 34], [255, 7, 7]]), source="a_gtFine_labelIds.png")
    message = str(info.value)
    assert message.startswith("a_gtFine_labelIds.png: ")
    assert "34 (2 px), 255 (1 px)" in message and "Cityscapes labelIds 0–33" in message


def test_camvid_scheme():
    assert CAMVID.num_classes == 11 and CAMVID.ignore_index == 11
    ids = CAMVID.ids_from_raw(np.arange(12))
    assert ids.tolist() == list(range(12)) and ids.dtype == np.int64
    with pytest.raises(LabelError, match=r"12 \(1 px\)"):
        CAMVID.ids_from_raw(np.array([0, 12]))
    assert SCHEMES["synthetic"] is CAMVID


def test_cmp_scheme_shifts_and_rejects_zero():
    assert CMP.num_classes == 12
    assert CMP.ids_from_raw(np.arange(1, 13)).tolist() == list(range(12))
    with pytest.raises(LabelError) as info:
        CMP.ids_from_raw(np.array([[0, 0, 1], [2, 13, 3]]), source="cmp_b0001.png")
    message = str(info.value)
    assert "0 (2 px), 13 (1 px)" in message and "file values 1–12" in message
    assert message.startswith("cmp_b0001.png: ")


def test_ade20k_scheme():
    assert ADE20K.num_classes == 150 and len(set(ADE20K.class_names)) == 150
    assert ADE20K.ids_from_raw(np.array([0, 1, 2, 150])).tolist() == [255, 0, 1, 149]
    assert ADE20K.class_names[0] == "wall" and ADE20K.class_names[149] == "flag"
    with pytest.raises(LabelError, match=r"151 \(1 px\)"):
        ADE20K.ids_from_raw(np.array([151, 3]))


def test_cocostuff_scheme():
    assert COCOSTUFF.num_classes == 182 and len(COCOSTUFF.class_names) == 182
    assert COCOSTUFF.ignore_index == 255 and len(set(COCOSTUFF.colors)) == 182
    assert COCOSTUFF.class_names[0] == "person" and COCOSTUFF.class_names[181] == "wood"
    assert COCOSTUFF.ids_from_raw(np.array([0, 181, 255])).tolist() == [0, 181, 255]
    with pytest.raises(LabelError, match=r"182 \(1 px\)"):
        COCOSTUFF.ids_from_raw(np.array([182]))


def test_cityscapes_labelids_scheme_keeps_all_35():
    assert CITYSCAPES_LABELIDS.num_classes == 35 and CITYSCAPES_LABELIDS.ignore_index is None
    assert CITYSCAPES_LABELIDS.ids_from_raw(np.array([0, 26, 33])).tolist() == [0, 26, 33]


def test_get_scheme():
    assert get_scheme("cmp") is CMP
    with pytest.raises(KeyError, match="unknown label scheme 'nope'; known: .*camvid"):
        get_scheme("nope")


# ---------------------------------------------------------------------------------------------- palettes
PALETTE_TSV = (
    "# a comment line\n"
    "# id\tname\tcolor_rgb\n"
    "\n"
    "0\tunlabelled\t0,0,0\n"
    "3\troad\t128,64,128\r\n"
    "  # an indented comment\n"
    "7\tcar\t0,0,142\n"
    "10\tsky\t70,130,180\n"
)


def write_palette(tmp_path: Path, text: str = PALETTE_TSV, name: str = "palette.tsv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_palette_parses_tsv_with_comments(tmp_path):
    path = write_palette(tmp_path)
    palette = Palette.from_tsv(path)
    assert palette.ids == (0, 3, 7, 10)
    assert palette.names == ("unlabelled", "road", "car", "sky")
    assert palette.colors == ((0, 0, 0), (128, 64, 128), (0, 0, 142), (70, 130, 180))
    assert palette.source == str(path)
    again = Palette.from_tsv(write_palette(tmp_path, palette.to_tsv(), "again.tsv"))
    assert (again.ids, again.names, again.colors) == (palette.ids, palette.names, palette.colors)


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("5 grass 0,128,0", "expected 3 tab-separated fields, got 1"),
        ("5\tgrass\t0,128", "not R,G,B"),
        ("5\tgrass\t0,128,256", "not R,G,B in 0–255"),
        ("x\tgrass\t0,128,0", "invalid literal"),
        ("5\tgrass\t0,128,0\textra", "got 4"),
    ],
)
def test_palette_bad_lines_name_file_and_line(tmp_path, bad_line, reason):
    path = write_palette(tmp_path, "# header\n0\tvoid\t0,0,0\n" + bad_line + "\n")
    with pytest.raises(LabelError) as info:
        Palette.from_tsv(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert reason in message and "id<TAB>name<TAB>R,G,B" in message
    assert "\n" not in message


def test_palette_rejects_duplicate_colours_and_ids_and_empty_files(tmp_path):
    with pytest.raises(LabelError, match="two ids share one colour") as info:
        Palette.from_tsv(write_palette(tmp_path, "0\ta\t1,2,3\n1\tb\t1,2,3\n", "dup_colour.tsv"))
    assert "dup_colour.tsv" in str(info.value)
    with pytest.raises(LabelError, match=r"dup_id.tsv:2: id 0 is listed twice"):
        Palette.from_tsv(write_palette(tmp_path, "0\ta\t1,2,3\n0\tb\t4,5,6\n", "dup_id.tsv"))
    with pytest.raises(LabelError, match="no palette entries"):
        Palette.from_tsv(write_palette(tmp_path, "# only a comment\n\n", "empty.tsv"))


def test_palette_decode_colours_to_ids(tmp_path):
    palette = Palette.from_tsv(write_palette(tmp_path))
    rgb = np.array([[[0, 0, 0], [128, 64, 128]], [[0, 0, 142], [70, 130, 180]]], dtype=np.uint8)
    ids = palette.decode(rgb)
    assert ids.dtype == np.int64 and ids.tolist() == [[0, 3], [7, 10]]
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 255, np.uint8)], axis=2)
    assert palette.decode(rgba).tolist() == [[0, 3], [7, 10]]


def test_palette_decode_unknown_colour_names_colour_count_and_palette(tmp_path):
    path = write_palette(tmp_path)
    palette = Palette.from_tsv(path)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, :3] = (1, 2, 3)  # 3 px
    rgb[3, 3] = (255, 255, 255)  # 1 px
    with pytest.raises(LabelError) as info:
        palette.decode(rgb, source="labels/a.png")
    message = str(info.value)
    assert message.startswith("labels/a.png: ")
    assert "(1,2,3) (3 px), (255,255,255) (1 px)" in message
    assert f"not in palette {path}" in message and "\n" not in message
    with pytest.raises(LabelError, match="expected an RGB label image"):
        palette.decode(np.zeros((4, 4), dtype=np.uint8))


def test_palette_to_spec_renumbers_ids_and_maps_ignore_to_255(tmp_path):
    palette = Palette.from_tsv(write_palette(tmp_path))
    spec = palette.to_spec("mine", ignore_id=0)
    assert spec.class_names == ("road", "car", "sky")
    assert spec.colors == ((128, 64, 128), (0, 0, 142), (70, 130, 180))
    assert spec.ignore_index == 255 and spec.void_color == (0, 0, 0)
    assert spec.ids_from_raw(np.array([0, 3, 7, 10])).tolist() == [255, 0, 1, 2]
    with pytest.raises(LabelError) as info:
        spec.ids_from_raw(np.array([5, 3]), source="f.png")
    assert "5 (1 px)" in str(info.value) and str(palette.source) in str(info.value)
    # decode + renumber: a colour image goes to contiguous ids
    rgb = np.array([[[70, 130, 180], [0, 0, 0]]], dtype=np.uint8)
    assert spec.ids_from_raw(palette.decode(rgb)).tolist() == [[2, 255]]
    no_void = palette.to_spec("all", ignore_id=None)
    assert no_void.class_names == ("unlabelled", "road", "car", "sky")
    assert no_void.ids_from_raw(np.array([0, 3, 7, 10])).tolist() == [0, 1, 2, 3]


def test_palette_to_spec_ignore_id_outside_the_palette(tmp_path):
    palette = Palette.from_tsv(write_palette(tmp_path))
    spec = palette.to_spec("mine", ignore_id=300)  # a file value the palette does not list
    assert spec.num_classes == 4 and spec.ids_from_raw(np.array([300, 10])).tolist() == [255, 3]
    with pytest.raises(LabelError, match="ignore id -1 is not in 0–65535"):
        palette.to_spec("mine", ignore_id=-1)


def test_guess_ignore_id():
    def palette(*names):
        return Palette(tuple(range(len(names))), names, tuple((i, i, i) for i in range(len(names))))

    assert guess_ignore_id(palette("road", "Unlabelled", "car")) == 1
    assert guess_ignore_id(palette("void", "road")) == 0
    assert guess_ignore_id(palette("road", "ignore me")) == 1
    assert guess_ignore_id(palette("(unused)", "wall")) == 0
    assert guess_ignore_id(palette("road", "car")) is None


def test_spec_palette_round_trip():
    palette = CAMVID.palette()
    assert palette.ids == tuple(range(11)) and palette.names == CAMVID.class_names
    rgb = CAMVID.colorize(np.array([[0, 5, 10]]))
    assert palette.decode(rgb).tolist() == [[0, 5, 10]]


@pytest.mark.shared_data
def test_real_camvid_and_cmp_palettes_match_the_schemes(shared_data):
    camvid = Palette.from_tsv(shared_data / "camvid" / "classes.tsv")
    assert camvid.ids == tuple(range(12)) and camvid.names[3] == "Road"
    assert guess_ignore_id(camvid) == 11
    spec = camvid.to_spec("camvid-tsv", guess_ignore_id(camvid))
    assert spec.num_classes == 11 and spec.colors == CAMVID.colors
    assert spec.ids_from_raw(np.array([0, 10, 11])).tolist() == [0, 10, 255]
    cmp = Palette.from_tsv(shared_data / "cmp_facade" / "classes.tsv")
    assert guess_ignore_id(cmp) == 0
    cmp_spec = cmp.to_spec("cmp-tsv", 0)
    assert cmp_spec.class_names == CMP.class_names and cmp_spec.colors == CMP.colors
    assert cmp_spec.ids_from_raw(np.arange(1, 13)).tolist() == list(range(12))
