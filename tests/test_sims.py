"""SIMS building blocks: segments and contexts, the on-disk bank, retrieval, warps, canvases, colour transfer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inverseg.labels import LabelSpec, get_scheme
from inverseg.models.sims import (OrderingNetwork, SynthesisNetwork, TransformationNetwork, compose, invert_theta,
                                  params_to_theta, theta_to_rts, warp)
from inverseg.sims.bank import BankError, BankSettings, MemoryBank, build_bank
from inverseg.sims.canvas import (SimulationSettings, boundary_band, compose as compose_canvas, crop_tensor, erode,
                                  jitter_mask, map_box, paint_order, placement_matrix, sample_crop, sampling_theta,
                                  simulate_canvas, square_window, unpremultiply)
from inverseg.sims.colour import (lab_to_rgb, mkl_matrix, mkl_recolour, mkl_transfer, reinhard_transfer, rgb_to_lab,
                                  rgb_to_lab_numpy, segment_stats)
from inverseg.sims.ordering import order_input, pair_probability
from inverseg.sims.retrieval import RetrievalSettings, Retriever
from inverseg.sims.segments import (adjacent_pairs, class_ranks, decompose, depth_front, enlarge_box,
                                    heuristic_front, pack_bits, segment_grids, square_box, unpack_bits)

# four classes: 0 sky, 1 building, 2 pole, 3 car; 255 = void
SPEC = LabelSpec(name="toy", class_names=("sky", "building", "pole", "car"),
                 colors=((120, 160, 230), (150, 60, 40), (200, 200, 100), (20, 20, 160)), ignore_index=255)


def layout_with(*rects, size=(32, 32), background=0) -> np.ndarray:
    """A label map: ``background`` everywhere, then (class, top, left, bottom, right) rectangles in order."""
    label = np.full(size, background, dtype=np.int64)
    for cls, top, left, bottom, right in rects:
        label[top:bottom, left:right] = cls
    return label


class ListDataset:
    """Samples from given layouts; the image colours each class (plus a gradient so colour stats differ)."""

    spec = SPEC

    def __init__(self, layouts, depths=None):
        self.layouts, self.depths = layouts, depths

    def __len__(self):
        return len(self.layouts)

    def __getitem__(self, index):
        label = torch.as_tensor(self.layouts[index])
        table = torch.tensor(SPEC.colors + ((0, 0, 0),), dtype=torch.float32) / 127.5 - 1
        image = table[torch.where(label == 255, 4, label)].permute(2, 0, 1).clone()
        image[0] += torch.linspace(-0.1, 0.1, label.shape[1])
        sample = {"image": image.clamp(-1, 1), "label": label, "name": f"layout{index}"}
        if self.depths is not None:
            sample["depth"] = torch.as_tensor(self.depths[index])
        return sample


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ segments
def test_connected_components_boxes_and_min_area():
    label = layout_with((1, 0, 0, 10, 10), (1, 0, 20, 10, 30), (3, 20, 5, 25, 15), (3, 30, 30, 31, 31),
                        (255, 28, 0, 32, 4))
    decomposition = decompose(label, num_classes=4, min_area=2)
    found = sorted((s.class_id, s.box, s.area) for s in decomposition.segments)
    assert (1, (0, 0, 10, 10), 100) in found and (1, (0, 20, 10, 30), 100) in found  # two building components
    assert (3, (20, 5, 25, 15), 50) in found
    assert all(s.area >= 2 for s in decomposition.segments)  # the 1-pixel car is dropped …
    assert decomposition.component_map[30, 30] == -1  # … and its pixel belongs to no segment
    assert decomposition.component_map[29, 1] == -1  # void is never a segment
    sky = [s for s in decomposition.segments if s.class_id == 0]
    assert len(sky) == 1 and sky[0].area == 32 * 32 - 200 - 50 - 1 - 16
    for segment in decomposition.segments:  # crop mask = component map inside the box
        top, left, bottom, right = segment.box
        assert decomposition.crop_mask(segment.index).sum() == segment.area
        assert (decomposition.component_map[top:bottom, left:right] == segment.index).sum() == segment.area


def test_connectivity_and_thin_class_bridging():
    diagonal = np.zeros((8, 8), np.int64)
    diagonal[2, 2] = diagonal[3, 3] = 1
    assert len([s for s in decompose(diagonal, 4, connectivity=8).segments if s.class_id == 1]) == 1
    assert len([s for s in decompose(diagonal, 4, connectivity=4).segments if s.class_id == 1]) == 2
    # a building cut in two by a pole: two segments, or one when poles bridge (official Cityscapes option)
    label = layout_with((1, 5, 0, 25, 32), (2, 0, 15, 32, 17))
    assert len([s for s in decompose(label, 4).segments if s.class_id == 1]) == 2
    merged = decompose(label, 4, thin_classes=(2,))
    buildings = [s for s in merged.segments if s.class_id == 1]
    assert len(buildings) == 1 and buildings[0].area == 20 * 30  # the pole pixels are not in its mask
    assert buildings[0].box == (5, 0, 25, 32)
    assert [s.class_id for s in merged.segments].count(2) == 1  # the pole is still its own segment


def test_context_grids_show_the_surroundings():
    # a car on a building façade vs the same car in the sky: same mask grid, different contexts
    on_building = layout_with((1, 0, 0, 32, 32), (3, 12, 12, 20, 20))
    in_sky = layout_with((3, 12, 12, 20, 20))
    grids = []
    for label in (on_building, in_sky):
        decomposition = decompose(label, 4)
        car = next(s for s in decomposition.segments if s.class_id == 3)
        assert car.box == (12, 12, 20, 20)
        grids.append((car.index, segment_grids(decomposition, 4, grid=16, context_enlarge=1.25)))
    (a, first), (b, second) = grids
    assert np.array_equal(first.mask[a], second.mask[b])  # the car fills its box in both
    assert first.counts[a, 0] == 16 * 16
    ctx_first, ctx_second = unpack_bits(first.context[a], 16), unpack_bits(second.context[b], 16)
    assert ctx_first[1].sum() > 0 and ctx_first[0].sum() == 0  # building around the car …
    assert ctx_second[0].sum() > 0 and ctx_second[1].sum() == 0  # … or sky
    assert ctx_first[3].sum() == ctx_second[3].sum() > 0  # the car itself is in both contexts
    # the enlarged box is 25 % larger: the car covers (1/1.25)² of the context cells
    assert abs(ctx_first[3].sum() / 256 - 1 / 1.25 ** 2) < 0.1
    assert enlarge_box((10, 10, 20, 30), 1.25) == (8.75, 7.5, 21.25, 32.5)


def test_bit_packing_round_trip():
    rng = np.random.default_rng(0)
    cells = rng.random((3, 5, 16, 16)) > 0.5
    words = pack_bits(cells)
    assert words.dtype == np.uint64 and words.shape == (3, 5, 4)
    assert np.array_equal(unpack_bits(words, 16), cells)
    assert int(np.bitwise_count(words).sum()) == int(cells.sum())
    with pytest.raises(ValueError, match="multiple of 64"):
        pack_bits(np.zeros((12, 12), bool))


def test_adjacency_heuristic_and_depth_order():
    label = layout_with((1, 0, 0, 20, 32), (3, 14, 4, 26, 14), background=0)  # sky row below? no: road absent
    label[26:] = 0
    decomposition = decompose(label, 4)
    by_class = {s.class_id: s for s in decomposition.segments}
    pairs = adjacent_pairs(decomposition.component_map)
    assert (min(by_class[1].index, by_class[3].index), max(by_class[1].index, by_class[3].index)) in pairs
    ranks = class_ranks(SPEC.class_names)
    assert heuristic_front(by_class[3], by_class[1], ranks) == 0  # car (object) before building
    assert heuristic_front(by_class[1], by_class[3], ranks) == 1
    # same layer: the one reaching lower in the image is nearer
    two = decompose(layout_with((3, 2, 2, 10, 10), (3, 5, 10, 20, 16)), 4, connectivity=4)
    cars = [s for s in two.segments if s.class_id == 3]
    assert len(cars) == 1 or heuristic_front(cars[0], cars[1], ranks) == 1
    # depth decides when given: make the building nearer than the car
    depth = np.where(label == 1, 5.0, 50.0)
    assert depth_front(decomposition.component_map, by_class[1].index, by_class[3].index, depth) == 0
    assert depth_front(decomposition.component_map, by_class[1].index, by_class[3].index, 1 / depth,
                       disparity=True) == 0


# ------------------------------------------------------------------------------------------ bank
def test_bank_round_trip_and_lazy_loading(tmp_path):
    layouts = [layout_with((1, 10, 0, 32, 16), (3, 20, 18, 28, 30)),
               layout_with((1, 8, 16, 32, 32), (3, 22, 2, 30, 12), (255, 0, 0, 2, 2))]
    bank = build_bank(ListDataset(layouts), tmp_path / "bank", BankSettings(grid=16, min_area=0.0),
                      progress=False)
    assert len(bank) == 6 and bank.num_images == 2 and bank.image_size == (32, 32)
    assert not list(tmp_path.glob(".bank.building-*"))  # built in a temporary folder, renamed into place
    reopened = MemoryBank(tmp_path / "bank")
    assert reopened._arrays == {}  # opening reads only bank.json …
    assert isinstance(reopened.segments, np.memmap)  # … tables are memory-mapped when first used …
    assert isinstance(reopened._array("pixels"), np.memmap)  # … and crops are read from the packed blob
    assert set(reopened._arrays) == {"segments", "pixels"}
    car = int(np.flatnonzero((reopened.classes == 3) & (np.asarray(reopened.segments["source"]) == 0))[0])
    rgb, mask = reopened.crop(car)
    assert reopened.box(car) == (20, 18, 28, 30) and mask.all() and mask.shape == (8, 12)
    assert np.abs(rgb[..., 1:].astype(int) - np.array(SPEC.colors[3][1:])).max() <= 1  # green/blue of the car
    context, box = reopened.context_crop(car)
    assert box == (19, 16, 29, 32)  # enlarged by 25 % (1 row / 1.5 columns each side), clipped to the image
    assert set(np.unique(context)) <= {0, 1, 3}
    record = reopened.segments[car]
    assert record["area"] == 96 and record["class_id"] == 3
    assert np.allclose(record["rgb_mean"][1:], np.array(SPEC.colors[3][1:]) / 127.5 - 1, atol=0.01)
    # layouts are stored (void → 255) and adjacent pairs carry a front label from the heuristic
    assert reopened.layouts.shape == (2, 32, 32) and reopened.layouts[1, 0, 0] == 255
    pairs = reopened.pairs
    assert len(pairs) > 0 and set(np.unique(pairs["front"])) <= {0, 1}
    assert "heuristic" in reopened.meta["order_labels"]
    car_pair = [p for p in pairs if {int(reopened.classes[p["a"]]), int(reopened.classes[p["b"]])} == {1, 3}]
    for pair in car_pair:  # the car is always in front of the building
        front = pair["a"] if pair["front"] == 0 else pair["b"]
        assert reopened.classes[front] == 3
    meta = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert meta["sources"] == ["layout0", "layout1"] and meta["num_segments"] == 6
    assert list(reopened.indices_of_class(3)) == sorted(np.flatnonzero(reopened.classes == 3))


def test_bank_checks_and_depth_labels(tmp_path):
    layouts = [layout_with((1, 10, 0, 32, 16), (3, 20, 4, 28, 12))]
    depth = [np.where(layouts[0] == 1, 1.0, 9.0)]  # the building is nearer than the car here
    bank = build_bank(ListDataset(layouts, depth), tmp_path / "bank", BankSettings(grid=16), progress=False)
    assert bank.meta["order_labels"] == "depth"
    for pair in bank.pairs:
        if {int(bank.classes[pair["a"]]), int(bank.classes[pair["b"]])} == {1, 3}:
            front = pair["a"] if pair["front"] == 0 else pair["b"]
            assert bank.classes[front] == 1 and pair["from_depth"] == 1
    with pytest.raises(BankError, match="already exists"):
        build_bank(ListDataset(layouts), tmp_path / "bank", BankSettings(grid=16), progress=False)
    with pytest.raises(BankError, match="96×128"):
        bank.check_compatible(SPEC, (96, 128))
    with pytest.raises(BankError, match="classes"):
        bank.check_compatible(get_scheme("camvid"), (32, 32))
    with pytest.raises(BankError, match="grid"):
        bank.check_compatible(SPEC, (32, 32), BankSettings(grid=32))
    with pytest.raises(ValueError, match="not classes"):
        build_bank(ListDataset(layouts), tmp_path / "other", BankSettings(merge_thin=("lamp",)), progress=False)
    with pytest.raises(BankError, match="not a SIMS memory bank"):
        MemoryBank(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------ retrieval
def test_retrieval_finds_the_known_best_segment(tmp_path):
    # bank: cars of different shapes; the query car has exactly the shape of the second one
    layouts = [layout_with((3, 10, 10, 14, 26)), layout_with((3, 8, 8, 24, 16)), layout_with((3, 4, 4, 28, 28))]
    bank = build_bank(ListDataset(layouts), tmp_path / "bank", BankSettings(grid=16), progress=False)
    query_layout = layout_with((3, 2, 20, 18, 28))  # same 16×8 box shape as layout 1, elsewhere, same context
    for settings in (RetrievalSettings(), RetrievalSettings(context=False)):
        retriever = Retriever(bank, settings)
        query = retriever.query(query_layout)
        matches = retriever.retrieve(query)
        car = next(i for i, s in enumerate(query.decomposition.segments) if s.class_id == 3)
        best = matches[car]
        assert bank.source_name(int(best.indices[0])) == "layout1"
        assert best.mask_iou[0] == pytest.approx(1.0)
        assert list(best.scores) == sorted(best.scores, reverse=True)
    # image geometry (official) prefers the car at the same place, whatever its shape
    official = Retriever(bank, RetrievalSettings.official())
    query = official.query(layout_with((3, 4, 4, 28, 28)))
    car = next(i for i, s in enumerate(query.decomposition.segments) if s.class_id == 3)
    assert bank.source_name(int(official.retrieve(query)[car].indices[0])) == "layout2"
    # exclusion by source image and the top-k limit
    retriever = Retriever(bank, RetrievalSettings(top_k=2))
    query = retriever.query(query_layout)
    matches = retriever.retrieve(query, exclude_sources={1})
    car = next(i for i, s in enumerate(query.decomposition.segments) if s.class_id == 3)
    assert len(matches[car]) == 2 and all(bank.source_name(int(i)) != "layout1" for i in matches[car].indices)


def test_context_term_changes_the_winner(tmp_path):
    # A: a car whose shape matches the query better, parked in front of the sky
    # B: a slightly different car shape, in front of a building — like the query
    layout_a = layout_with((3, 10, 8, 18, 24))
    layout_b = layout_with((1, 0, 0, 32, 32), (3, 10, 8, 18, 22))
    bank = build_bank(ListDataset([layout_a, layout_b]), tmp_path / "bank", BankSettings(grid=16), progress=False)
    query_layout = layout_with((1, 0, 0, 32, 32), (3, 10, 8, 18, 24))  # shape of A, surroundings of B
    winners = {}
    for context in (False, True):
        retriever = Retriever(bank, RetrievalSettings(context=context))
        query = retriever.query(query_layout)
        car = next(i for i, s in enumerate(query.decomposition.segments) if s.class_id == 3)
        match = retriever.retrieve(query)[car]
        winners[context] = bank.source_name(int(match.indices[0]))
        if context:
            assert match.context_iou[0] > match.context_iou[1]
    assert winners == {False: "layout0", True: "layout1"}


def test_retrieval_settings_validate():
    with pytest.raises(ValueError, match="geometry"):
        RetrievalSettings(geometry="pixels").validate()
    official = RetrievalSettings.official()
    assert official.geometry == "image" and not official.context and official.top_k == 10
    assert official.min_query_area == pytest.approx(1000 / (256 * 512))


# ------------------------------------------------------------------------------------------ warps and T
def textured_blob(size: int = 32) -> torch.Tensor:
    """A smooth, asymmetric RGB blob (3 + mask channels) in the middle of a window."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = (((xs / 0.55) ** 2 + (ys / 0.35) ** 2) < 1).float()
    mask = torch.maximum(mask, ((xs - 0.3).abs() < 0.12).float() * ((ys + 0.3).abs() < 0.3).float())
    colour = torch.stack([0.5 + 0.4 * xs, 0.5 + 0.4 * ys, 0.5 + 0.3 * xs * ys]).clamp(0, 1)
    blob = torch.cat([colour * mask, mask[None]])[None]
    return torch.nn.functional.avg_pool2d(blob, 3, 1, 1)  # soft edges help the gradients


def test_rts_parameters_round_trip_and_identity():
    params = torch.tensor([[0.1, -0.05, 0.3, 0.2, -0.1]])
    assert torch.allclose(theta_to_rts(params_to_theta(params)), params, atol=1e-6)
    assert torch.allclose(params_to_theta(torch.zeros(1, 5)), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    assert torch.allclose(params_to_theta(torch.zeros(1, 6), "affine"), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    theta = params_to_theta(params)
    assert torch.allclose(compose(theta, invert_theta(theta)), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]),
                          atol=1e-6)
    image = textured_blob()
    assert torch.allclose(warp(image, params_to_theta(torch.zeros(1, 5))), image, atol=1e-5)


def test_differentiable_warp_recovers_a_known_transform():
    """L_T on one shape: optimise rts parameters so that warping the transformed blob gives back the original."""
    torch.manual_seed(0)
    original = textured_blob()
    true = torch.tensor([[0.12, -0.08, math.radians(12), 0.10, -0.05]])
    transformed = warp(original, invert_theta(params_to_theta(true)))  # P̂: the blob moved by true⁻¹
    params = torch.zeros(1, 5, requires_grad=True)
    optimiser = torch.optim.Adam([params], lr=0.01)
    for _ in range(300):
        aligned = warp(transformed, params_to_theta(params))
        loss = (aligned[:, :3] - original[:, :3]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    recovered = params.detach()[0]
    assert torch.allclose(recovered[:2], true[0, :2], atol=0.02)  # translation (window half-widths)
    assert abs(recovered[2] - true[0, 2]) < math.radians(2.5)  # rotation
    assert torch.allclose(recovered[3:], true[0, 3:], atol=0.03)  # log-scales


@pytest.mark.slow
def test_transformation_network_learns_to_undo_transforms_of_one_shape():
    torch.manual_seed(0)
    original = textured_blob()
    network = TransformationNetwork(widths=(16, 32, 32), params="rts")
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    for step in range(400):
        true = (torch.rand(8, 5) * 2 - 1) * torch.tensor([0.15, 0.15, 0.25, 0.15, 0.15])
        batch = original.expand(8, -1, -1, -1)
        moved = warp(batch, invert_theta(params_to_theta(true)))
        theta = network(torch.cat([moved, batch[:, 3:]], 1))
        loss = (warp(moved, theta)[:, :3] - batch[:, :3]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    true = torch.tensor([[0.1, -0.1, 0.15, 0.1, -0.05]])
    moved = warp(original, invert_theta(params_to_theta(true)))
    predicted = theta_to_rts(network(torch.cat([moved, original[:, 3:]], 1)).detach())
    assert torch.allclose(predicted[0, :2], true[0, :2], atol=0.04)
    assert abs(predicted[0, 2] - true[0, 2]) < 0.08


def test_network_shapes():
    synthesis = SynthesisNetwork(5, (8, 16, 16), (1, 1, 2), (8, 16, 16), 8, semantic_classes=5)
    rgb, semantic = synthesis(torch.rand(2, 5, 24, 40), torch.rand(2, 3, 24, 40) * 2 - 1, torch.ones(2, 1, 24, 40))
    assert rgb.shape == (2, 3, 24, 40) and semantic.shape == (2, 5, 24, 40)
    with pytest.raises(ValueError, match="one entry per level"):
        SynthesisNetwork(5, (8, 16), (1,), (8, 16), 8)
    network = TransformationNetwork(widths=(8, 8))
    assert torch.allclose(network(torch.rand(3, 5, 16, 16)), params_to_theta(torch.zeros(3, 5)))
    assert OrderingNetwork(4, widths=(8, 8), hidden=8)(torch.rand(2, 9, 12, 16)).shape == (2, 4)


def official_synthesis_256p_parameters() -> int:
    """Parameters of the official synthesis_256_512.py network, counted from its source line by line.

    Every slim.conv2d with layer norm: 3×3×in×out weights (no bias) + per-channel β, γ.  ``label`` inside
    recursive_generator is label_input = 20-ch label ⊕ proposal (3) ⊕ mask (1) = 24 channels, concatenated into every
    decoder level and the final block.  Heads: 1×1 convs with bias, 3 (RGB) and 20 (semantic) maps.
    """
    def conv(cin: int, cout: int) -> int:
        return 9 * cin * cout + 2 * cout

    guide = 24
    encoder = (conv(24, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128)
               + conv(128, 256) + 2 * conv(256, 256) + conv(256, 512) + 2 * conv(512, 512)
               + 3 * conv(512, 512) + 3 * conv(512, 512))
    decoder = (conv(guide + 512, 512) + conv(512, 512)  # g_decoder_conv6: downsampled_6 ⊕ pool6
               + conv(guide + 512 + 512, 512) + conv(512, 512)  # conv5: downsampled_5 ⊕ pool5 ⊕ net_6
               + conv(guide + 512 + 512, 512) + conv(512, 512)  # conv4
               + conv(guide + 256 + 512, 512) + conv(512, 512)  # conv3
               + conv(guide + 128 + 512, 512) + conv(512, 512)  # conv2
               + conv(guide + 64 + 512, 256) + conv(256, 256)  # conv1
               + conv(guide + 256, 256) + conv(256, 256))  # g_decoder_final: label ⊕ net_1
    heads = (256 * 3 + 3) + (256 * 20 + 20)
    return encoder + decoder + heads


def test_synthesis_decoder_sees_the_whole_input_like_the_official_network():
    """Official recursive_generator(label_input): layout ⊕ canvas ⊕ mask re-enters every decoder level and the
    final block, so the canvas reaches the decoder directly (the old wiring passed the layout alone)."""
    torch.manual_seed(0)
    network = SynthesisNetwork(5, (8, 16, 16), (1, 1, 2), (8, 16, 16), 8)
    assert network.decoder_input == "full"
    assert network.final.conv1.in_channels == 9 + 8  # 5 layout + 3 canvas + 1 mask, + decoder features
    assert [block.conv1.in_channels for block in network.decoder] == [9 + 8 + 16, 9 + 16 + 16, 9 + 16]
    seen = {}
    network.final.register_forward_pre_hook(lambda module, args: seen.update(final=args[0]))
    layout = torch.zeros(1, 5, 16, 24)
    layout[:, 1] = 1
    canvas = (torch.rand(1, 3, 16, 24) * 2 - 1).requires_grad_()
    mask = torch.ones(1, 1, 16, 24)
    network(layout, canvas, mask)
    assert torch.allclose(seen["final"][:, 5:8], (canvas + 1) / 2)  # canvas in [0, 1], as official proposal/255
    # the canvas reaches the full-resolution block directly, not only through pooled encoder features
    gradient, = torch.autograd.grad(seen["final"][:, 5:8].sum(), canvas)
    assert gradient.abs().sum() > 0
    layout_only = SynthesisNetwork(5, (8, 16, 16), (1, 1, 2), (8, 16, 16), 8, decoder_input="layout")
    assert layout_only.final.conv1.in_channels == 5 + 8
    with pytest.raises(ValueError, match="decoder_input"):
        SynthesisNetwork(5, (8,), (1,), (8,), 8, decoder_input="canvas")


def test_sims_256p_synthesis_has_the_official_parameter_count():
    """sims-256p's f against the official synthesis_256_512.py, counted independently (55 671 319)."""
    network = SynthesisNetwork(20, (64, 128, 256, 512, 512, 512), (2, 2, 3, 3, 3, 3), (256, 512, 512, 512, 512, 512),
                               256, semantic_classes=20)
    assert official_synthesis_256p_parameters() == 55_671_319
    assert sum(p.numel() for p in network.parameters()) == official_synthesis_256p_parameters()


# ------------------------------------------------------------------------------------------ canvases
def test_placement_and_rendering_geometry():
    crop = crop_tensor(np.full((8, 12, 3), 200, np.uint8), np.ones((8, 12), bool))
    # identity placement at its own box reproduces the crop exactly where it was
    box = (20.0, 18.0, 28.0, 30.0)
    full = (0.0, 0.0, 32.0, 32.0)
    window = square_window(box)
    whole = (0.0, 0.0, 8.0, 12.0)
    colour, mask = unpremultiply(sample_crop(crop, sampling_theta((8, 12), placement_matrix(whole, box), window,
                                                                  None, full), (32, 32)))
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[20:28, 18:30] = True
    assert torch.equal(mask, expected)
    assert torch.allclose(colour[:, mask], torch.full((3, int(mask.sum())), 200 / 127.5 - 1), atol=1e-5)
    # box geometry: the square around the crop onto the square around a query box (uniform scale ×2)
    target = (2.0, 4.0, 18.0, 28.0)
    placement = placement_matrix(square_box(whole), square_box(target))
    assert map_box(placement, whole) == (2.0, 4.0, 18.0, 28.0)
    _, mask = unpremultiply(sample_crop(crop, sampling_theta((8, 12), placement, square_window(target), None, full),
                                        (32, 32)))
    assert mask[2:18, 4:28].all() and int(mask.sum()) == 16 * 24
    # a translation θ of +0.5 window half-widths in x samples from the right: the segment moves left
    theta = params_to_theta(torch.tensor([[0.5, 0, 0, 0, 0]]))[0]
    _, moved = unpremultiply(sample_crop(crop, sampling_theta((8, 12), placement_matrix(whole, box), window,
                                                              theta, full), (32, 32)))
    shift = 0.5 * (window[3] - window[1]) / 2
    columns = torch.nonzero(moved.any(0))[:, 0]
    assert abs(float(columns.float().mean()) - (23.5 - shift)) < 0.6


def test_canvas_composition_order_and_elision():
    layout = torch.zeros(20, 20, dtype=torch.long)
    red, blue = torch.zeros(3, 20, 20), torch.zeros(3, 20, 20)
    red[0], blue[2] = 1.0, 1.0
    square_a = torch.zeros(20, 20, dtype=torch.bool)
    square_b = torch.zeros(20, 20, dtype=torch.bool)
    square_a[2:12, 2:12] = True
    square_b[8:18, 8:18] = True
    overlap = (10, 10)
    for p_a_front, winner in ((0.9, red), (0.1, blue)):
        order = paint_order(2, [(0, 1, p_a_front)])
        canvas = compose_canvas([red, blue], [square_a, square_b], order, 0, layout)
        assert torch.equal(canvas.image[:, overlap[0], overlap[1]], winner[:, 0, 0])
        assert canvas.mask.sum() == (square_a | square_b).sum()
    # elision: a band around every visible segment is uncovered; interiors stay
    canvas = compose_canvas([red, blue], [square_a, square_b], [1, 0], 1, layout)
    assert canvas.mask[5, 5] and canvas.mask[15, 15]
    assert not canvas.mask[2, 2] and not canvas.mask[7, 11]  # the outer border of a segment is elided …
    assert not canvas.mask[12, 10] and canvas.mask[10, 10]  # … and the band where the back one meets the front one
    assert canvas.layout.equal(layout)  # the input layout is kept by default …
    rewritten = compose_canvas([red, blue], [square_a, square_b], [1, 0], 1, layout, classes=[1, 3],
                               modify_layout=True)
    assert rewritten.layout[10, 10] == 1 and rewritten.layout[15, 15] == 3  # … official option rewrites it
    assert int((canvas.display()[:, ~canvas.mask] == -1).all()) == 1  # empty pixels are shown black
    # official inner elision: half the pixels of the inner boundary band turn white and stay covered
    dark = [torch.full((3, 20, 20), -0.5), torch.full((3, 20, 20), -0.5)]
    noisy = compose_canvas(dark, [square_a, square_b], [1, 0], 3, layout, elision_mode="noise",
                           generator=torch.Generator().manual_seed(0))
    white = (noisy.image == 1).all(0)
    assert torch.equal(noisy.mask, square_a | square_b) and white.any()
    assert not (white & ~(square_a | square_b)).any() and not white[5, 5]  # inside the segments, near edges


def test_rewritten_layout_follows_what_was_pasted():
    """Official test_generate_canvas.m: the query regions of pasted segments become void, pasted pixels take their
    segment's class, background classes are restored where left void (fill_context)."""
    layout = torch.zeros(20, 20, dtype=torch.long)
    layout[4:16, 4:16] = 3  # a car query on sky
    layout[0:4, :] = 1  # a building strip
    car_query, building_query = layout == 3, layout == 1
    car_pasted = torch.zeros(20, 20, dtype=torch.bool)
    car_pasted[6:16, 4:12] = True  # the retrieved car covers only part of the query
    building_pasted = torch.zeros(20, 20, dtype=torch.bool)
    building_pasted[0:2, :] = True
    colours = [torch.zeros(3, 20, 20), torch.ones(3, 20, 20)]
    canvas = compose_canvas(colours, [car_pasted, building_pasted], [1, 0], 0, layout, classes=[3, 1],
                            modify_layout=True, query_masks=[car_query, building_query], keep_classes=(0, 1),
                            void_id=255)
    assert (canvas.layout[car_pasted] == 3).all() and (canvas.layout[building_pasted] == 1).all()
    assert (canvas.layout[car_query & ~car_pasted] == 255).all()  # an object: void where nothing was pasted
    assert (canvas.layout[building_query & ~building_pasted] == 1).all()  # background: its class comes back
    assert (canvas.layout[layout == 0] == 0).all()  # untouched elsewhere
    assert torch.equal(layout[4, 4], torch.tensor(3))  # the input is not modified in place


def test_paint_order_is_topological_and_breaks_cycles():
    # 0 behind 1 behind 2 (chain) → 0, 1, 2
    assert paint_order(3, [(1, 0, 0.9), (2, 1, 0.8)]) == [0, 1, 2]
    # a cycle: the weakest belief gives way
    order = paint_order(3, [(1, 0, 0.9), (2, 1, 0.9), (0, 2, 0.6)])
    assert order.index(0) < order.index(1) < order.index(2)
    assert paint_order(2, []) == [0, 1]


def test_erode_keeps_image_borders():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, :, :5] = True
    eroded = erode(mask, 2)[0]
    assert eroded[:, :3].all() and not eroded[:, 3:].any()  # the left image border does not erode


def test_own_mask_simulation_stencils_recolours_and_elides(tmp_path):
    """The earlier procedure, kept as simulate.procedure=own-mask."""
    layouts = [layout_with((1, 0, 0, 32, 16), (3, 20, 20, 28, 30))]
    bank = build_bank(ListDataset([layout_with((1, 0, 16, 32, 32), (3, 4, 4, 12, 14))]), tmp_path / "bank",
                      BankSettings(grid=16), progress=False)
    sample = ListDataset(layouts)[0]
    decomposition = decompose(sample["label"].numpy(), 4)
    generator = torch.Generator().manual_seed(0)

    def own_mask(**changes):
        plain = dict(procedure="own-mask", drop_prob=0, empty_prob=0, colour_transfer_prob=0, elision_prob=0)
        return SimulationSettings(**{**plain, **changes})

    # plain stencil: the canvas is the image where covered, the layout unchanged
    canvas, mask, layout = simulate_canvas(sample["image"], decomposition, own_mask(), generator)
    assert mask.all() and torch.equal(canvas, sample["image"]) and torch.equal(layout, sample["label"])
    # always empty
    canvas, mask, _ = simulate_canvas(sample["image"], decomposition, own_mask(empty_prob=1.0), generator)
    assert not mask.any() and (canvas == -1).all()
    # always drop
    _, mask, _ = simulate_canvas(sample["image"], decomposition, own_mask(drop_prob=1.0), generator)
    assert not mask.any()
    # elision only: fewer pixels, all of them interior
    _, mask, _ = simulate_canvas(sample["image"], decomposition, own_mask(elision_prob=1, max_elision=0.1),
                                 generator)
    assert 0 < mask.sum() < 32 * 32 and not mask[19, 25] and mask[24, 25]
    # colour transfer: kept pixels move towards the bank's statistics of the same class, geometry unchanged
    canvas, mask, _ = simulate_canvas(sample["image"], decomposition,
                                      own_mask(colour_transfer_prob=1, colour_transfer="reinhard", colour_space="rgb"),
                                      generator, bank=bank)
    assert mask.all()
    car = sample["label"] == 3
    target = torch.from_numpy(np.array(bank.segments[int(bank.indices_of_class(3)[0])]["rgb_mean"]))
    assert torch.allclose(canvas[:, car].mean(1), target.float(), atol=0.02)


def official_simulation_case(tmp_path):
    """A training image with a car at rows/cols 8–20 and a bank of three images: A (car at 10–22 × 12–24, the best
    overlap), B (a car far away) and the training image itself (index 2, which retrieval must skip)."""
    own = layout_with((3, 8, 8, 20, 20))
    bank_layouts = [layout_with((3, 10, 12, 22, 24)), layout_with((3, 0, 26, 6, 32)), own]
    bank = build_bank(ListDataset(bank_layouts), tmp_path / "bank", BankSettings(grid=16), progress=False)
    sample = ListDataset([own])[0]
    return sample, decompose(own, 4), bank, torch.from_numpy(bank_layouts[0] == 3)


def official(**changes) -> SimulationSettings:
    plain = dict(empty_prob=0, colour_transfer_prob=0, noise_fraction=0, label_noise=False, search_images=0)
    return SimulationSettings(**{**plain, **changes})


def test_official_simulation_stencils_with_the_best_overlapping_segment_of_another_image(tmp_path):
    """train_generate_synthesis.m: each segment is stencilled with its own mask ∩ the mask of the best-IoU same-class
    segment of *another* image, so the canvas disagrees with the layout (the old code used the own mask)."""
    sample, decomposition, bank, car_a = official_simulation_case(tmp_path)
    assert SimulationSettings().procedure == "official"
    ranks = class_ranks(SPEC.class_names)
    canvas, mask, layout = simulate_canvas(sample["image"], decomposition, official(), torch.Generator(), bank=bank,
                                           source=2, ranks=ranks)
    car, sky = sample["label"] == 3, sample["label"] == 0
    expected = (car & car_a) | (sky & ~car_a)  # each own segment ∩ image A's segment of its class
    assert torch.equal(mask, expected)
    assert not mask.all()  # the parts of the own car outside A's car are not pasted
    assert torch.equal(canvas[:, mask], sample["image"][:, mask])  # the training image's own pixels
    assert (canvas[:, ~mask] == -1).all()
    assert torch.equal(layout, sample["label"])  # label_noise off
    # without the exclusion the image finds itself (IoU 1) and the canvas is the whole image
    _, mask, _ = simulate_canvas(sample["image"], decomposition, official(), torch.Generator(), bank=bank, ranks=ranks)
    assert mask.all()
    # segments under min_area are neither searched nor pasted
    _, mask, _ = simulate_canvas(sample["image"], decomposition, official(min_area=0.5), torch.Generator(),
                                 bank=bank, source=2, ranks=ranks)
    assert torch.equal(mask, sky & ~car_a)  # the sky (86 % of the image) stays, the car (14 %) is gone


def test_official_simulation_puts_white_noise_on_the_boundary_band(tmp_path):
    sample, decomposition, bank, car_a = official_simulation_case(tmp_path)
    generator = torch.Generator().manual_seed(0)
    canvas, mask, _ = simulate_canvas(sample["image"], decomposition, official(noise_band=0.1, noise_fraction=0.5),
                                      generator, bank=bank, source=2, ranks=class_ranks(SPEC.class_names))
    white = (canvas == 1).all(0)
    band = boundary_band((sample["label"] == 3) & car_a, 3) | boundary_band((sample["label"] == 0) & ~car_a, 3)
    assert white.any() and not (white & ~band).any()  # noise only near pasted boundaries ...
    assert 0.3 < float(white[band].float().mean()) < 0.7  # ... on about half of the band
    assert mask[white].all()  # noise pixels count as covered (official: mask = proposal ≠ 0)
    assert (canvas[:, 2, 2] == sample["image"][:, 2, 2]).all()  # far from any boundary: the photo
    # the band: both sides of the edge, dilated by a 3×3 square
    square = torch.zeros(12, 12, dtype=torch.bool)
    square[4:8, 4:8] = True
    band = boundary_band(square, 3)
    assert band[2:10, 2:10].all() and int(band.sum()) == 64


def test_official_simulation_perturbs_the_input_layout_with_void_holes(tmp_path):
    """'label map add noise': void where the retrieved segment or a jittered copy spills outside a segment; the
    segment itself keeps its class."""
    sample, decomposition, bank, car_a = official_simulation_case(tmp_path)
    ranks = class_ranks(SPEC.class_names)
    _, _, layout = simulate_canvas(sample["image"], decomposition, official(label_noise=True, jitter_rotation=0),
                                   torch.Generator(), bank=bank, source=2, ranks=ranks, void_id=255)
    car = sample["label"] == 3
    assert torch.equal(layout == 255, car_a & ~car)  # A's car spills into the sky: void there, nowhere else
    assert (layout[car] == 3).all()  # the car (painted after the sky) restores its own pixels
    # the jitter adds holes next to the segments, never inside the car
    _, _, layout = simulate_canvas(sample["image"], decomposition, official(label_noise=True, jitter_rotation=20),
                                   torch.Generator().manual_seed(1), bank=bank, source=2, ranks=ranks)
    assert (layout == 255).sum() > (car_a & ~car).sum() and (layout[car] == 3).all()
    # jitter_mask: a rotated and shifted copy of about the same area; no rotation = no change
    mask = torch.from_numpy(layout_with((1, 8, 8, 24, 20)) == 1)
    assert torch.equal(jitter_mask(mask, 0.0, torch.Generator()), mask)
    copies = [jitter_mask(mask, 10.0, torch.Generator().manual_seed(seed)) for seed in range(5)]
    assert any(not torch.equal(copy, mask) for copy in copies)
    assert all(abs(int(copy.sum()) - int(mask.sum())) < 0.15 * int(mask.sum()) for copy in copies)


def test_mkl_colour_transfer_matches_mean_and_covariance():
    """Pitié & Kokaram's linear Monge–Kantorovich map (official colour_transfer_MKL.m): the moved colours have the
    target's mean and full covariance (Reinhard matches only per-channel mean/std); T is symmetric."""
    torch.manual_seed(0)
    source = torch.randn(4000, 3, dtype=torch.float64) @ torch.tensor([[0.3, 0.1, 0.0], [0.0, 0.2, 0.05],
                                                                        [0.0, 0.0, 0.1]], dtype=torch.float64)
    target = torch.randn(3000, 3, dtype=torch.float64) @ torch.tensor([[0.1, 0.08, 0.06], [0.0, 0.05, 0.0],
                                                                        [0.02, 0.0, 0.2]], dtype=torch.float64) + 0.3
    moved = mkl_transfer(source, target)
    assert torch.allclose(moved.mean(0), target.mean(0), atol=1e-9)
    assert torch.allclose(torch.cov(moved.T, correction=0), torch.cov(target.T, correction=0), atol=1e-9)
    cov_s, cov_t = torch.cov(source.T, correction=0), torch.cov(target.T, correction=0)
    matrix = mkl_matrix(cov_s, cov_t)
    assert torch.allclose(matrix, matrix.T, atol=1e-9) and bool((torch.linalg.eigvalsh(matrix) > 0).all())
    assert torch.allclose(matrix @ cov_s @ matrix.T, cov_t, atol=1e-9)
    # on an image: only the chosen pixels move, the fit comes from the source mask, values stay in [-1, 1]
    image = torch.rand(3, 8, 8) * 2 - 1
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:6, 2:6] = True
    recoloured = mkl_recolour(image, region, target.float().clamp(-1, 1))
    assert torch.equal(recoloured[:, ~region], image[:, ~region]) and recoloured.abs().max() <= 1
    assert SimulationSettings().colour_transfer == "mkl" and SimulationSettings().colour_transfer_prob == 0.2


def test_colour_conversion_and_reinhard_transfer():
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16) * 2 - 1
    assert torch.allclose(lab_to_rgb(rgb_to_lab(image)), image, atol=1e-4)
    uint8 = ((image + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.uint8)
    lab_np = rgb_to_lab_numpy(uint8)
    lab_torch = rgb_to_lab(torch.from_numpy(uint8).permute(2, 0, 1).float() / 127.5 - 1).permute(1, 2, 0)
    assert np.allclose(lab_np, lab_torch.numpy(), atol=1e-3)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = True
    target_mean, target_std = torch.tensor([60.0, 10.0, -5.0]), torch.tensor([5.0, 3.0, 2.0])
    moved = reinhard_transfer(image, mask, target_mean, target_std, space="lab")
    lab = rgb_to_lab(moved)[:, mask]
    assert torch.allclose(lab.mean(1), target_mean, atol=1.5)
    assert torch.equal(moved[:, ~mask], image[:, ~mask])
    component_map = np.where(mask.numpy(), 0, -1)
    means, stds = segment_stats(uint8.astype(np.float64), component_map, 1)
    assert np.allclose(means[0], uint8[4:12, 4:12].reshape(-1, 3).mean(0))
    assert np.allclose(stds[0], uint8[4:12, 4:12].reshape(-1, 3).std(0))


def test_order_input_and_pair_probability():
    layout = torch.from_numpy(layout_with((1, 0, 0, 16, 32), (3, 10, 4, 20, 12)))
    mask_a, mask_b = layout == 1, layout == 3
    features = order_input(layout, mask_a, mask_b, 1, 3, 4, (16, 16))
    assert features.shape == (9, 16, 16)
    assert torch.allclose(features[4:].sum(0), torch.ones(16, 16))  # layout one-hot + void sums to 1
    assert features[1].max() == 1 and features[3].max() == 1 and features[0].max() == 0
    logits = torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    p = pair_probability(logits, torch.tensor([1, 1]), torch.tensor([3, 3]))
    assert p[0] > 0.8 and p[1] < 0.2
