"""SIMS — Semi-parametric Image Synthesis (Qi, Chen, Jia, Koltun, CVPR 2018): the recipe.

A memory bank of segments cut from the training set (§3.1) supplies photographic material; at test time every
segment of the query layout retrieves a compatible bank segment (§3.1), a transformation network aligns it (§3.2),
an ordering network decides which of two touching segments is in front (§3.3), the aligned segments are pasted
back to front with elided boundaries onto a canvas (§3.3), and a synthesis network f(canvas, layout) paints the
final photo (§3.4).  f is trained on *simulated* canvases (stencilling, colour transfer, boundary elision) with the
CRN perceptual loss (+ optionally the official semantic head with cross-entropy × 10).

Stages, all inside ``inverseg train`` (one Trainer loop, docs/methods/sims.md):
  0. bank: opened from ``bank.path``, or built on first use from ``bank.data`` (into that path, or into
     ``cache_dir()/sims-banks/<key>``, reused by every run with the same data and segment settings);
  1. every step s: one synthesis step on a batch with simulated canvases;
     while s < ``transform.steps``: also one transformation-network step on random bank segments;
     while s < ``order.steps``: also one ordering-network step on random adjacent bank pairs.
  The three networks are independent during training (f never sees T or the ordering network), so running
  them side by side gives the same networks as the paper's separate trainings, within one time budget.

Official-code facts (implementations.md §2) are options: image-coordinate mask-only retrieval
(``retrieval.geometry=image, retrieval.context=false``), 6-parameter affine T (``transform.params=affine``)
rounded to the identity at test time (``transform.round_to_identity``), rejection of transforms that lower the IoU
(``transform.reject_if_worse``), layout rewritten to the pasted segments (``canvas.modify_layout``), thin classes
merged (``bank.merge_thin``), the semantic head (``loss.semantic_weight=10``) and the CRN 512p λ constants
(``loss.balance=official-crn-512p``).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DataConfig
from ..labels import LabelSpec
from ..losses.perceptual import PerceptualLoss, ReferenceCache
from ..models.sims import (OrderingNetwork, SynthesisNetwork, TransformationNetwork, params_to_theta, random_rts,
                           warp)
from ..sims.bank import BankError, BankSettings, MemoryBank, build_bank
from ..sims.canvas import (Canvas, SimulationSettings, compose, crop_tensor, map_box, paint_order,
                           placement_matrix, rect_matrix, sample_crop, sampling_theta, simulate_canvas, square_window,
                           union_box, unpremultiply)
from ..sims.ordering import bank_pair_masks, order_input, order_inputs, pair_probability
from ..sims.retrieval import RetrievalSettings, Retriever
from ..sims.segments import adjacent_pairs, class_ranks, heuristic_front, square_box
from .base import InferenceControls, Method
from .crn import AdamConfig, PerceptualConfig, build_balancer, build_vgg


# ---------------------------------------------------------------------------------------------------------
# Settings (one YAML section each)
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SIMSModelConfig:
    """Synthesis network f (§3.4). Lists are per encoder level, shallow → deep; each level halves the size."""

    encoder_widths: tuple[int, ...] = (32, 64, 128, 192, 256)
    encoder_convs: tuple[int, ...] = (2, 2, 2, 2, 2)
    decoder_widths: tuple[int, ...] = (64, 128, 192, 256, 256)  # decoder block at the scale of each level
    final_width: int = 64  # the full-resolution block
    void_channel: bool = True  # official: 19 classes + void = 20 layout channels
    layout_resize: str = "bilinear"  # official (align_corners) | area (CRN)
    # what every decoder level and the final block see besides features: full = layout ⊕ canvas ⊕ mask (official
    # synthesis_*.py) | layout = the layout alone (earlier inverseg wiring; canvas only via encoder features)
    decoder_input: str = "full"


@dataclass
class SIMSLossConfig(PerceptualConfig):
    """The CRN perceptual loss (§3.4, reused from losses/perceptual.py) + the official semantic head."""

    semantic_weight: float = 0.0  # official synthesis_*.py: 10 × softmax cross-entropy of a 20-class head


@dataclass
class SIMSBankConfig(BankSettings):
    """The memory bank: where it lives and which training data it is cut from."""

    path: str | None = None  # a bank directory (reused if it exists, built there otherwise); None: cache dir
    data: DataConfig | None = None  # the training data to build it from — normally the same as the run's data


@dataclass
class TransformConfig:
    """Transformation network T (§3.2) and how it is trained on bank segments."""

    enabled: bool = True
    params: str = "rts"  # rts: translation, rotation, scale (paper) | affine: 6 free parameters (official)
    window: int = 48  # side of the square window T sees, in pixels
    window_enlarge: float = 1.25  # window side = this × the longer side of the segment's box
    widths: tuple[int, ...] = (16, 32, 64, 64)  # one conv block + 2×2 average pool per entry
    convs: tuple[int, ...] = ()  # convs per block; () = 2 each (official VGG-like: 2, 2, 3, 3, 3)
    steps: int = 1000  # trained during the first N trainer steps
    batch_size: int = 8  # segments per step (official: 10 proposals of one image)
    lr: float = 1.0e-3  # official: 1e-5 (min(1e-4·1.1^(e−1), 1e-5)) for 100 epochs
    max_translation: float = 0.15  # random training transforms, in window half-widths
    max_rotation: float = 15.0  # degrees
    max_log_scale: float = 0.2
    crop_prob: float = 0.5  # "random affine transformations and crops": cut a band off the input segment
    max_crop: float = 0.3  # ... up to this fraction of the window
    min_area: int = 16  # pixels: smaller bank segments are not used to train T
    round_to_identity: bool = False  # official Cityscapes test setting: tf.round(θ) (≈ identity)
    reject_if_worse: bool = False  # official test_generate_canvas.m: keep θ only if it raises the mask IoU


@dataclass
class OrderConfig:
    """Ordering network (§3.3)."""

    mode: str = "network"  # network (paper) | heuristic (the layout heuristic that labels the training pairs)
    input_size: tuple[int, int] = (24, 32)  # official: the full 256×512 layout
    widths: tuple[int, ...] = (16, 32, 64, 64)
    convs: tuple[int, ...] = ()  # () = 2 per block
    hidden: int = 128  # official: 1×1 conv with 1024 maps
    dropout: float = 0.5  # official
    steps: int = 1500
    batch_size: int = 16  # official: 10
    lr: float = 1.0e-3  # official: 1e-5 for 100 epochs


@dataclass
class CanvasConfig:
    """Test-time canvas (§3.3)."""

    elision: float = 0.035  # band elided around every pasted segment, fraction of the image height (official
    #                         inner elision: strel('square', 0.035·H); other official elements 0.04–0.08 × H)
    # noise: half the pixels of the inner band set to white, still covered (official, like the training canvases) |
    # erode: the band uncovered (this library's earlier elision)
    elision_mode: str = "noise"
    elision_noise: float = 0.5  # official elision_ratio 0.5
    # official test_generate_canvas.m: the layout is rewritten to what was pasted (query regions void, pasted pixels
    # their segment's class, background classes — sky and stuff, class rank ≤ 1 — restored where left void)
    modify_layout: bool = True
    # pasted segments are cut to their query segment's region (not in the official code, which pastes the whole
    # transformed segment and lets the rewritten layout follow it); false = official
    clip_to_query: bool = True


@dataclass
class SIMSSettings:
    model: SIMSModelConfig = field(default_factory=SIMSModelConfig)
    loss: SIMSLossConfig = field(default_factory=SIMSLossConfig)
    optim: AdamConfig = field(default_factory=AdamConfig)
    bank: SIMSBankConfig = field(default_factory=SIMSBankConfig)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    transform: TransformConfig = field(default_factory=TransformConfig)
    order: OrderConfig = field(default_factory=OrderConfig)
    canvas: CanvasConfig = field(default_factory=CanvasConfig)
    simulate: SimulationSettings = field(default_factory=SimulationSettings)


# ---------------------------------------------------------------------------------------------------------
# The bank: where it is and building it on first use
# ---------------------------------------------------------------------------------------------------------
def bank_location(config: SIMSBankConfig, image_size: tuple[int, int]) -> Path:
    """``bank.path``, or a cache directory keyed by the data and segment settings (so runs share banks)."""
    if config.path:
        return Path(config.path).expanduser()
    if config.data is None:
        raise BankError("SIMS needs a memory bank: set bank.path to a built bank (inverseg bank build …) or "
                        "bank.data to the training data it should be built from")
    from ..paths import cache_dir

    data = {**asdict(config.data), "size": list(image_size)}
    key = json.dumps({"data": data, "segments": config.to_dict()}, sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    split = config.data.split or "default"
    return cache_dir() / "sims-banks" / f"{config.data.dataset}-{split}-{image_size[0]}x{image_size[1]}-{digest}"


def open_or_build_bank(config: SIMSBankConfig, spec: LabelSpec, image_size: tuple[int, int],
                       progress: bool = True) -> MemoryBank:
    """Open the configured bank (checking it fits the model), building it first if it does not exist yet."""
    path = bank_location(config, image_size)
    if not (path / "bank.json").is_file():
        if config.data is None:
            raise BankError(f"{path}: no memory bank there and bank.data is not set to build one; build it with "
                            f"'inverseg bank build --dataset KIND --data PATH --out {path}'")
        from ..data import open_dataset

        data = DataConfig(**{**asdict(config.data), "size": tuple(image_size)})
        if data.size and config.data.size and tuple(config.data.size) != tuple(image_size):
            raise BankError(f"bank.data.size {list(config.data.size)} differs from the model size "
                            f"{list(image_size)}; set bank.data.size to {list(image_size)}")
        dataset = open_dataset(data, split=data.split, augment=False, setting="bank.data.path")
        if progress:
            print(f"note: building the SIMS memory bank at {path} from {len(dataset)} "
                  f"{data.dataset} {data.split or 'train'} samples (once)", file=sys.stderr)
        build_bank(dataset, path, config, spec=dataset.spec, source=f"{data.dataset}:{data.path or ''}",
                   progress=progress)
    bank = MemoryBank(path)
    bank.check_compatible(spec, image_size, config)
    return bank


# ---------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------
class SIMS(Method):
    name = "sims"
    export_graph = "sims"
    Settings = SIMSSettings
    checkpoint_modules = ("synthesis", "transformer", "orderer", "balancer")
    inference_modules = ("synthesis", "transformer", "orderer")
    transfer_modules = ("synthesis", "transformer", "orderer")  # --init-from: λ is measured afresh

    @classmethod
    def check_config(cls, run) -> list[str]:
        return run.settings.loss.schedule_problems(run.train.steps)

    def __init__(self, settings: SIMSSettings, spec: LabelSpec, image_size: tuple[int, int], training: bool = True):
        super().__init__(settings, spec, image_size, training)
        for section in (settings.bank, settings.retrieval, settings.simulate):
            section.validate()
        if settings.order.mode not in ("network", "heuristic"):
            raise ValueError(f"order.mode must be 'network' or 'heuristic', got {settings.order.mode!r}")
        model = settings.model
        layout_channels = spec.input_channels(model.void_channel)
        self.synthesis = SynthesisNetwork(
            layout_channels=layout_channels, encoder_widths=model.encoder_widths, encoder_convs=model.encoder_convs,
            decoder_widths=model.decoder_widths, final_width=model.final_width,
            semantic_classes=layout_channels if settings.loss.semantic_weight > 0 else 0,
            layout_resize=model.layout_resize, decoder_input=model.decoder_input,
        )
        transform = settings.transform
        self.transformer = TransformationNetwork(transform.widths, transform.convs, transform.params) \
            if transform.enabled else None
        order = settings.order
        self.orderer = OrderingNetwork(spec.num_classes, order.widths, order.convs, order.hidden, order.dropout) \
            if order.mode == "network" else None
        self.ranks = class_ranks(spec.class_names, settings.bank.class_ranks)
        self._bank: MemoryBank | None = None
        self._retriever: Retriever | None = None
        self._transform_pool: np.ndarray | None = None
        self._sources: dict[str, int] | None = None
        self._last_sample: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_extras: dict[str, torch.Tensor] = {}
        if not training:
            return  # the bank is opened on the first call to sample()
        self.open_bank()  # stage 0: open or build the memory bank now, before the first step
        loss = settings.loss
        if loss.colour_term:
            raise ValueError("loss.colour_term is a CRN option (methods/crn.py); SIMS does not use it: fix: remove "
                             "loss.colour_term=true")
        vgg = build_vgg(loss, tuple(loss.layers))
        cache = ReferenceCache(dtype=torch.float16, max_bytes=loss.cache_max_mb * 2**20) if loss.cache_reference \
            else None
        self.perceptual = PerceptualLoss(vgg, layers=loss.layers,
                                         balancer=build_balancer(loss, ("pixel", *loss.layers)), cache=cache)
        self.balancer = self.perceptual.balancer
        optim = settings.optim
        self.optimizers = {"synthesis": torch.optim.Adam(self.synthesis.parameters(), lr=optim.lr,
                                                         betas=tuple(optim.betas), eps=optim.eps,
                                                         weight_decay=optim.weight_decay)}
        if self.transformer is not None:
            self.optimizers["transformer"] = torch.optim.Adam(self.transformer.parameters(), lr=transform.lr)
        if self.orderer is not None:
            self.optimizers["orderer"] = torch.optim.Adam(self.orderer.parameters(), lr=order.lr)

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], modules: tuple[str, ...] | None = None) -> None:
        """Strict loading, with a clear error for runs trained before the official decoder wiring became the
        default (their final block sees the layout alone: load them with ``model.decoder_input=layout``)."""
        weight = state.get("synthesis.final.conv1.weight")
        if weight is not None and "synthesis" in (modules or self.checkpoint_modules):
            expected = self.synthesis.final.conv1.in_channels
            if weight.shape[1] != expected:
                from ..train.checkpoint import CheckpointError

                layout_only = expected - (4 if self.synthesis.decoder_input == "full" else -4)
                other = "layout" if self.synthesis.decoder_input == "full" else "full"
                hint = (f"it was trained with model.decoder_input={other} (runs from before the official wiring "
                        f"became the default have no such key); add 'decoder_input: {other}' to the model section of "
                        f"the run's config (state.json) or retrain" if weight.shape[1] == layout_only
                        else "its model section differs from this one")
                raise CheckpointError(f"SIMS checkpoint does not fit: the synthesis network's final block takes "
                                      f"{weight.shape[1]} input channels, this model {expected}; {hint}")
        super().load_checkpoint_state(state, modules)

    # ------------------------------------------------------------------ bank and retrieval
    def open_bank(self) -> MemoryBank:
        """The memory bank, opened (or built from ``bank.data``) on first use."""
        if self._bank is None:
            self._bank = open_or_build_bank(self.settings.bank, self.spec, self.image_size)
        return self._bank

    @property
    def bank(self) -> MemoryBank:
        return self.open_bank()

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = Retriever(self.bank, self.settings.retrieval)
        return self._retriever

    def encode(self, label: torch.Tensor) -> torch.Tensor:
        return self.spec.one_hot(label, mode="area", void_channel=self.settings.model.void_channel)

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        logs: dict[str, float] = {}
        if self.transformer is not None and step < self.settings.transform.steps:
            logs.update(self._transform_step())
        if self.orderer is not None and step < self.settings.order.steps and len(self.bank.pairs):
            logs.update(self._order_step())
        logs.update(self._synthesis_step(batch))
        return logs

    def simulated_canvases(self, image: torch.Tensor, label: torch.Tensor, names: list[str] | None = None,
                           generator: torch.Generator | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training canvases (§3.4) for a batch: (B, 3, H, W) in [-1, 1], (B, 1, H, W) masks and the (B, H, W)
        layouts the network gets (with the official procedure's void holes), on the batch's device.  ``names``
        (the samples' names) keep an image's own segments out of its retrieval, as officially."""
        canvases, masks, layouts = [], [], []
        void = self.spec.ignore_index if self.spec.ignore_index is not None else self.spec.num_classes
        for n, (picture, ids) in enumerate(zip(image.detach().cpu(), label.cpu())):
            decomposition = self.bank.settings.decompose(ids.numpy(), self.spec)
            source = self._source_index(names[n]) if names is not None else None
            canvas, mask, layout = simulate_canvas(picture.float(), decomposition, self.settings.simulate, generator,
                                                   bank=self.bank, source=source, ranks=self.ranks, void_id=void)
            canvases.append(canvas)
            masks.append(mask)
            layouts.append(layout)
        return (torch.stack(canvases).to(image.device), torch.stack(masks)[:, None].float().to(image.device),
                torch.stack(layouts).to(label.device))

    def _source_index(self, name: str) -> int | None:
        """The bank's index of the training image called ``name`` (None: not in the bank)."""
        if self._sources is None:
            self._sources = {source: index for index, source in enumerate(self.bank.meta.get("sources", []))}
        return self._sources.get(str(name))

    def _synthesis_step(self, batch: dict) -> dict[str, float]:
        image, label = batch["image"], batch["label"]
        names = batch.get("name")
        canvas, mask, layout = self.simulated_canvases(image, label, list(names) if names is not None else None)
        rgb, semantic = self.synthesis(self.encode(layout), canvas, mask)
        keys = names if self.perceptual.cache is not None else None
        loss, logs = self.perceptual(rgb, image, keys=keys)
        result = {key.replace("weighted/", "w_"): float(value) for key, value in logs.items()
                  if key.startswith("weighted/")}
        if semantic is not None:  # official: the target is the original label, not the perturbed input
            cross_entropy = F.cross_entropy(semantic, self._semantic_target(label), ignore_index=-100)
            loss = loss + self.settings.loss.semantic_weight * cross_entropy
            result["semantic_ce"] = float(cross_entropy.detach())
        self.optimizer_step("synthesis", loss)
        return {"loss": float(loss.detach()), **result, "canvas_coverage": float(mask.mean())}

    def _semantic_target(self, label: torch.Tensor) -> torch.Tensor:
        """Class ids; void pixels → the void channel (official: 20 classes incl. void) or ignored."""
        void = (label < 0) | (label >= self.spec.num_classes)
        fill = self.spec.num_classes if self.settings.model.void_channel else -100
        return torch.where(void, torch.full_like(label, fill), label)

    def _transform_step(self) -> dict[str, float]:
        """L_T (§3.2): undo a random affine transform + crop of bank segments; L1 on colour."""
        config = self.settings.transform
        if self._transform_pool is None:
            self._transform_pool = np.flatnonzero(np.asarray(self.bank.segments["area"]) >= config.min_area)
        if len(self._transform_pool) == 0:
            return {}
        picks = torch.randint(len(self._transform_pool), (config.batch_size,))
        windows, perturbed = self.transform_examples(self.bank, [int(self._transform_pool[int(i)]) for i in picks])
        theta = self.transformer(torch.cat([perturbed, windows[:, 3:4]], dim=1))
        loss = (warp(perturbed, theta)[:, :3] - windows[:, :3]).abs().mean()
        self.optimizer_step("transformer", loss)
        baseline = (perturbed[:, :3] - windows[:, :3]).abs().mean()
        return {"transform_l1": float(loss.detach()), "transform_l1_unaligned": float(baseline)}

    def transform_examples(self, bank: MemoryBank, indices: list[int], generator: torch.Generator | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training examples of T from bank segments: their windows P (B, 4, S, S) — premultiplied RGB in [0, 1]
        and mask — and P̂, the same after a random rts transform and a random crop ("random affine
        transformations and crops", §3.2).  T must map P̂ back to P."""
        config = self.settings.transform
        windows = torch.stack([self.segment_window(bank, index) for index in indices]).to(self.device)
        perturb = params_to_theta(random_rts(len(indices), config.max_translation, math.radians(config.max_rotation),
                                             config.max_log_scale, generator)).to(self.device)
        perturbed = warp(windows, perturb)
        if config.crop_prob > 0:
            perturbed = perturbed * self._random_crop_masks(len(indices), config, generator).to(self.device)
        return windows, perturbed

    @staticmethod
    def _random_crop_masks(count: int, config: TransformConfig, generator: torch.Generator | None = None
                           ) -> torch.Tensor:
        """(count, 1, S, S) masks cutting a band off a random side (with probability crop_prob)."""
        size = config.window
        masks = torch.ones(count, 1, size, size)
        for index in range(count):
            if float(torch.rand((), generator=generator)) >= config.crop_prob:
                continue
            band = int(float(torch.rand((), generator=generator)) * config.max_crop * size)
            side = int(torch.randint(4, (), generator=generator))
            if band == 0:
                continue
            if side == 0:
                masks[index, :, :band] = 0
            elif side == 1:
                masks[index, :, -band:] = 0
            elif side == 2:
                masks[index, :, :, :band] = 0
            else:
                masks[index, :, :, -band:] = 0
        return masks

    def segment_window(self, bank: MemoryBank, index: int) -> torch.Tensor:
        """Bank segment ``index`` at its own place, in a square window around its box → (4, S, S)."""
        config = self.settings.transform
        rgb, mask = bank.crop(index)
        crop = crop_tensor(rgb, mask)
        box = bank.box(index)
        window = square_window(box, config.window_enlarge)
        whole_crop = (0.0, 0.0, float(crop.shape[-2]), float(crop.shape[-1]))
        theta = sampling_theta(tuple(crop.shape[-2:]), placement_matrix(whole_crop, box), window, None, window)
        return sample_crop(crop, theta, (config.window, config.window))

    def _order_step(self) -> dict[str, float]:
        """Cross-entropy on the class of the front segment of random adjacent bank pairs (§3.3)."""
        picks = torch.randint(len(self.bank.pairs), (self.settings.order.batch_size,))
        inputs, targets, class_a, class_b, a_in_front = self.order_examples(self.bank, picks.tolist())
        logits = self.orderer(inputs)
        loss = F.cross_entropy(logits, targets)
        self.optimizer_step("orderer", loss)
        with torch.no_grad():
            correct = ((pair_probability(logits.detach(), class_a, class_b) >= 0.5) == a_in_front).float().mean()
        return {"order_ce": float(loss.detach()), "order_accuracy": float(correct)}

    def order_examples(self, bank: MemoryBank, pair_indices: list[int]):
        """Inputs (P, 2C+1, h, w), front-class targets, the pairs' classes and "a is in front" for bank pairs."""
        inputs, targets, class_a, class_b, fronts = [], [], [], [], []
        for i in pair_indices:
            pair = bank.pairs[i]
            layout, mask_a, mask_b, cls_a, cls_b = bank_pair_masks(bank, pair)
            inputs.append(order_input(layout, mask_a, mask_b, cls_a, cls_b, self.spec.num_classes,
                                      tuple(self.settings.order.input_size)))
            front = int(pair["front"])
            targets.append(cls_a if front == 0 else cls_b)
            class_a.append(cls_a)
            class_b.append(cls_b)
            fronts.append(front == 0)
        device = self.device
        return (torch.stack(inputs).to(device), torch.tensor(targets, device=device),
                torch.tensor(class_a, device=device), torch.tensor(class_b, device=device),
                torch.tensor(fronts, device=device))

    # ------------------------------------------------------------------ test-time canvas
    @torch.no_grad()
    def build_canvas(self, label: torch.Tensor, rank: int = 0) -> Canvas:
        """Retrieve, align, order and paste (§3.1–3.3) for one (H, W) layout; ``rank`` picks the rank-th
        candidate of every segment (rank 0 = the best match; k outputs use ranks 0 … k−1)."""
        label = label.detach().cpu().long()
        query = self.retriever.query(label.numpy())
        matches = self.retriever.retrieve(query)
        chosen = [(j, int(match.indices[min(rank, len(match) - 1)])) for j, match in enumerate(matches)
                  if match is not None]
        if not chosen:
            return Canvas.empty(label)
        height, width = label.shape
        config, geometry = self.settings.transform, self.settings.retrieval.geometry
        crops, placements, windows, targets = [], [], [], []
        for j, index in chosen:
            rgb, mask = self.bank.crop(index)
            crop = crop_tensor(rgb, mask)
            query_box = tuple(float(v) for v in query.decomposition.segments[j].box)
            whole_crop = (0.0, 0.0, float(crop.shape[-2]), float(crop.shape[-1]))
            if geometry == "box":  # uniform scale + shift: the square around the crop onto the query's square
                placement = placement_matrix(square_box(whole_crop), square_box(query_box))
                placed_box = map_box(placement, whole_crop)
            else:  # official: the segment stays where it was photographed
                placed_box = tuple(float(v) for v in self.bank.box(index))
                placement = placement_matrix(whole_crop, placed_box)
            crops.append(crop)
            placements.append(placement)
            windows.append(square_window(union_box(query_box, placed_box), config.window_enlarge))
            targets.append(torch.from_numpy(query.decomposition.mask(j)))
        thetas = self._predict_transforms(crops, placements, windows, targets, (height, width))
        colours, masks = [], []
        for n, crop in enumerate(crops):
            colour, mask = self._render(crop, placements[n], windows[n], thetas[n] if thetas is not None else None,
                                        (height, width))
            if thetas is not None and config.reject_if_worse:
                plain_colour, plain_mask = self._render(crop, placements[n], windows[n], None, (height, width))
                if _iou(plain_mask, targets[n]) >= _iou(mask, targets[n]):
                    colour, mask = plain_colour, plain_mask
            colours.append(colour)
            masks.append(mask)
        if self.settings.canvas.clip_to_query:
            masks = [mask & target for mask, target in zip(masks, targets)]
        classes = [query.decomposition.segments[j].class_id for j, _ in chosen]
        order = paint_order(len(chosen), self._pair_beliefs(query.decomposition, [j for j, _ in chosen], label))
        elision = int(round(self.settings.canvas.elision * height))
        void = self.spec.ignore_index if self.spec.ignore_index is not None else self.spec.num_classes
        background = tuple(int(c) for c in np.flatnonzero(self.ranks <= 1))
        options = self.settings.canvas
        return compose(colours, masks, order, elision, label, classes, options.modify_layout,
                       query_masks=targets, keep_classes=background, void_id=void, elision_mode=options.elision_mode,
                       noise_fraction=options.elision_noise, generator=torch.Generator().manual_seed(rank))

    @staticmethod
    def _render(crop, placement, window, theta, size) -> tuple[torch.Tensor, torch.Tensor]:
        full = (0.0, 0.0, float(size[0]), float(size[1]))
        sampled = sample_crop(crop, sampling_theta(tuple(crop.shape[-2:]), placement, window, theta, full), size)
        return unpremultiply(sampled)

    def _predict_transforms(self, crops, placements, windows, targets, size) -> torch.Tensor | None:
        """θ per segment from T on (placed colour, placed mask, target mask) windows; None when T is off
        (``transform.enabled`` is read at call time, so a trained T can be switched off for comparisons)."""
        if self.transformer is None or not self.settings.transform.enabled:
            return None
        side = self.settings.transform.window
        image_rect = torch.linalg.inv(rect_matrix((0.0, 0.0, float(size[0]), float(size[1]))))
        inputs = []
        for crop, placement, window, target in zip(crops, placements, windows, targets):
            placed = sample_crop(crop, sampling_theta(tuple(crop.shape[-2:]), placement, window, None, window),
                                 (side, side))
            to_image = (image_rect @ rect_matrix(window))[:2].float()
            target_window = warp(target[None, None].float(), to_image[None], size=(side, side))[0]
            inputs.append(torch.cat([placed, target_window]))
        theta = self.transformer(torch.stack(inputs).to(self.device)).cpu()
        if self.settings.transform.round_to_identity:
            theta = theta.round()  # official: tf.round(transform_param) "to avoid bilinear interpolation"
        return theta

    def _pair_beliefs(self, decomposition, pasted: list[int], label: torch.Tensor) -> list[tuple[int, int, float]]:
        """(a, b, P(a in front of b)) for touching pasted segments (positions in ``pasted``)."""
        position = {j: n for n, j in enumerate(pasted)}
        pairs = [(a, b) for a, b in adjacent_pairs(decomposition.component_map) if a in position and b in position]
        if not pairs:
            return []
        segments = decomposition.segments
        if self.orderer is None or self.settings.order.mode == "heuristic":
            beliefs = [1.0 - heuristic_front(segments[a], segments[b], self.ranks) for a, b in pairs]
        else:
            size = tuple(self.settings.order.input_size)
            component_map = torch.from_numpy(decomposition.component_map)
            inputs = order_inputs(label, [(component_map == a, component_map == b, segments[a].class_id,
                                           segments[b].class_id) for a, b in pairs], self.spec.num_classes, size)
            was_training = self.orderer.training
            self.orderer.eval()
            logits = self.orderer(inputs.to(self.device))
            self.orderer.train(was_training)
            class_a = torch.tensor([segments[a].class_id for a, _ in pairs], device=self.device)
            class_b = torch.tensor([segments[b].class_id for _, b in pairs], device=self.device)
            beliefs = pair_probability(logits, class_a, class_b).cpu().tolist()
        return [(position[a], position[b], float(p)) for (a, b), p in zip(pairs, beliefs)]

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def synthesize(self, canvas: torch.Tensor, mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """f(C, L) for given canvases (B, 3, H, W), masks (B, H, W) and layouts (B, H, W) → (B, 3, H, W)."""
        rgb, _ = self.synthesis(self.encode(label.to(self.device)), canvas.to(self.device),
                                mask.float()[:, None].to(self.device) if mask.dim() == 3 else mask.to(self.device))
        return rgb.clamp(-1.0, 1.0)

    def inference_controls(self) -> InferenceControls:
        """Output u pastes the u-th retrieved candidate: up to ``retrieval.top_k`` images; the canvas is shown."""
        return InferenceControls(max_k=self.settings.retrieval.top_k, canvas=True)

    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               canvas: str = "retrieved", **style) -> torch.Tensor:
        """(B, H, W) → (B, k, 3, H, W).  Output u pastes the u-th ranked candidate of every segment (variety comes
        from the bank).  ``canvas="empty"`` synthesises from the layout alone (the paper's lower bound, §3.4).
        Afterwards ``last_extras["canvas"]`` holds the canvases (B, k, 3, H, W)."""
        if style:
            raise TypeError(f"SIMS has no style inputs; got {', '.join(style)}")
        if canvas not in ("retrieved", "empty"):
            raise ValueError(f"canvas must be 'retrieved' or 'empty', got {canvas!r}")
        top_k = self.settings.retrieval.top_k
        if k > top_k:
            raise ValueError(f"SIMS draws output u from the u-th retrieved candidate; k={k} > retrieval.top_k="
                             f"{top_k}; fix: ask for k ≤ {top_k} or raise retrieval.top_k")
        canvases = [Canvas.empty(ids.cpu()) if canvas == "empty" else self.build_canvas(ids, rank)
                    for ids in label for rank in range(k)]
        images = self.synthesize(torch.stack([c.image for c in canvases]), torch.stack([c.mask for c in canvases]),
                                 torch.stack([c.layout for c in canvases]))
        displays = torch.stack([c.display() for c in canvases])
        batch = label.shape[0]
        self.last_extras = {"canvas": displays.view(batch, k, *displays.shape[1:])}
        self._last_sample = (label.detach().cpu().clone(), self.last_extras["canvas"])
        return images.view(batch, k, *images.shape[1:])

    def gallery_extras(self, labels: torch.Tensor) -> tuple[list[str], list[list[torch.Tensor]]]:
        """The canvas column of the training gallery (layout | canvas | output | reference)."""
        if self._last_sample is not None and torch.equal(self._last_sample[0], labels.detach().cpu()):
            displays = self._last_sample[1][:, 0]
        else:
            displays = torch.stack([self.build_canvas(ids).display() for ids in labels])
        return ["canvas"], [[display] for display in displays]

    def extra_state(self) -> dict:
        state = {}
        if hasattr(self, "balancer"):
            state["lambda"] = self.balancer.describe()
        if self._bank is not None:
            described = self._bank.describe()
            state["bank"] = {key: described[key] for key in ("path", "segments", "images", "pairs", "order_labels")}
        state["stages"] = {"transform_steps": self.settings.transform.steps if self.transformer is not None else 0,
                           "order_steps": self.settings.order.steps if self.orderer is not None else 0}
        return state


def _iou(first: torch.Tensor, second: torch.Tensor) -> float:
    union = int((first | second).sum())
    return int((first & second).sum()) / union if union else 0.0


__all__ = ["CanvasConfig", "OrderConfig", "SIMS", "SIMSBankConfig", "SIMSLossConfig", "SIMSModelConfig",
           "SIMSSettings", "TransformConfig", "bank_location", "open_or_build_bank"]
