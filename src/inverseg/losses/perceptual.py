"""CRN perceptual ("content") loss with automatic λ balancing and an optional reference-feature cache.

Paper §3.3 (Chen & Koltun 2017): L = Σ_l λ_l ‖Φ_l(I) − Φ_l(g(L))‖₁ over the input image (Φ_0, term "pixel") and
VGG-19 'conv1_2' … 'conv5_2'.  In the official MatConvNet-based code those names are *post-ReLU* activations, i.e.
``relu1_2 … relu5_2`` in ``inverseg.perception.vgg`` naming.

* λ_l starts as 1 / (number of elements of layer l): each term is a mean absolute difference, which is what the
  official code's ``reduce_mean`` computes (author, issue #13).  Here every term is that mean times a weight w_l
  (initially 1), held by a :class:`LambdaBalancer`.
* "After 100 epochs, λ are rescaled to normalize the expected contribution of each term": the balancer averages
  every unweighted term over a window of steps and then sets w_l = target / mean_l.  The official code contains
  only the resulting constants (plus an unexplained ×10 on conv5_2); they are in :data:`OFFICIAL_LAMBDAS`.
* The pixel term is measured on CRN's 0–255 scale: the official 'input' layer is the mean-subtracted [0, 255]
  image, so |Δ| is 127.5 × the [-1, 1] difference.  The VGG features are whatever the extractor returns for
  [-1, 1] inputs (its ``input_convention`` decides the scale, so re-balance λ when changing it).

The loss exposes :meth:`PerceptualLoss.difference_maps` — per-term channel-mean |Δ| maps — so the diversity loss
(§3.4, ``losses/diversity.py``) can mask them by class with the same extractor and the same λ.

Measured on 2 CPU cores (torch 2.13 CPU, VGG16 random init, relu1_2…relu5_2, one 96×128 image, loss forward +
backward to the generated image):
* reference branch under ``torch.no_grad``: with a frozen extractor and a plain reference tensor autograd
  records nothing for the reference anyway, so the saving is 0 (82.4 MiB saved for backward either way, all of
  it from the generated branch).  It matters when the reference requires grad (e.g. it comes out of a
  differentiable transform) or the extractor has trainable parameters: there it cuts the tensors saved for
  backward from 158.9 MiB to 82.4 MiB and the step from 190 ms to 141 ms.
* ``ReferenceCache`` skips the reference VGG pass: forward 87 → 46 ms, forward + backward 141 → 98 ms per call
  (−30 %), 5.7 MiB per cached 96×128 sample in float32, 2.9 MiB in float16.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

# CRN's conv1_2 … conv5_2 (post-ReLU in the official code) in inverseg.perception.vgg naming.
CRN_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
PIXEL = "pixel"
COLOUR = "colour"
# [-1, 1] → CRN's 0–255 pixel scale; the mean subtraction of the official 'input' layer cancels in the difference.
CRN_PIXEL_SCALE = 127.5

# Final λ constants of the official scripts (implementations.md §1.3), order: pixel, conv1_2 … conv5_2.
# "The weights are collected by taking the inverse of the average of l0, …, l5 in the 100th epoch" (issue #10);
# the ×10 on conv5_2 is in all scripts but not in the paper.
OFFICIAL_LAMBDAS: dict[str, tuple[float, ...]] = {
    "crn-256p": (1.0, 1 / 1.6, 1 / 2.3, 1 / 1.8, 1 / 2.8, 10 / 0.8),    # demo_256p.py
    "crn-512p": (1.0, 1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5),    # demo_512p.py
    "crn-1024p": (1.0, 1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5),   # demo_1024p.py (same as 512p)
    "gta-256p": (1.0, 1 / 1.4, 1 / 1.8, 1 / 1.3, 1 / 2.2, 10 / 0.62),  # GTA_Diversity_256p.py
}

FeatureExtractor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


# ---------------------------------------------------------------------------------------------------------
# λ balancing
# ---------------------------------------------------------------------------------------------------------
class LambdaBalancer(nn.Module):
    """Per-term weights w_l, re-derived from running means of the unweighted terms (paper §3.3).

    ``mode``:
      * ``"once"`` (paper): average each unweighted term over the last ``window`` steps before step
        ``rebalance_at`` (default: all of them), then set w_l = target / mean_l and freeze.  The paper's recipe
        is ``rebalance_at = 100 · steps_per_epoch`` with ``window = steps_per_epoch`` ("the average … in the
        100th epoch", issue #10).
      * ``"every"``: the same every ``rebalance_at`` steps, forever (an option, not in the paper).
      * ``"fixed"``: never change the weights (use :meth:`official` for the published constants).

    After rebalancing every term contributes ``target`` in expectation.  ``final_layer_boost`` multiplies the
    last term's weight at each rebalance — the official scripts use 10 on conv5_2; the default 1 is the paper.
    A term whose running mean is 0 keeps its weight (nothing to normalise).

    All state is in buffers, so a checkpoint of this module resumes the schedule exactly.
    """

    MODES = ("once", "every", "fixed")

    def __init__(
        self,
        term_names: Sequence[str],
        mode: str = "once",
        rebalance_at: int = 1000,
        window: int | None = None,
        target: float = 1.0,
        final_layer_boost: float = 1.0,
        initial_weights: Sequence[float] | None = None,
        boosted_term: str | None = None,
    ):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"LambdaBalancer mode must be one of {self.MODES}, got {mode!r}")
        self.term_names = tuple(term_names)
        if not self.term_names or len(set(self.term_names)) != len(self.term_names):
            raise ValueError(f"term names must be non-empty and unique, got {list(self.term_names)}")
        if mode != "fixed" and rebalance_at < 1:
            raise ValueError(f"rebalance_at must be ≥ 1 step, got {rebalance_at}")
        window = rebalance_at if window is None else int(window)
        if mode != "fixed" and not 1 <= window <= rebalance_at:
            raise ValueError(f"window must be in 1 … rebalance_at ({rebalance_at}), got {window}")
        self.mode, self.rebalance_at, self.window = mode, int(rebalance_at), window
        self.target, self.final_layer_boost = float(target), float(final_layer_boost)
        # The term final_layer_boost multiplies: the last one (conv5_2) unless named, e.g. when the optional
        # "colour" term comes after conv5_2.
        if boosted_term is not None and boosted_term not in self.term_names:
            raise ValueError(f"boosted term {boosted_term!r} is not one of {list(self.term_names)}")
        self.boosted_index = self.term_names.index(boosted_term) if boosted_term else len(self.term_names) - 1
        weights = torch.ones(len(self.term_names)) if initial_weights is None else torch.tensor(
            [float(w) for w in initial_weights])
        if weights.shape != (len(self.term_names),):
            raise ValueError(f"{len(self.term_names)} terms but {weights.numel()} initial weights")
        self.register_buffer("weights", weights)
        self.register_buffer("running_sum", torch.zeros(len(self.term_names)))
        self.register_buffer("running_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # steps since start (or last rebalance)
        self.register_buffer("rebalanced", torch.zeros((), dtype=torch.bool))

    @classmethod
    def official(cls, preset: str, term_names: Sequence[str] = (PIXEL,) + CRN_LAYERS) -> "LambdaBalancer":
        """Fixed weights with the constants of an official script (``OFFICIAL_LAMBDAS``)."""
        if preset not in OFFICIAL_LAMBDAS:
            raise ValueError(f"unknown official λ set {preset!r}; choose one of {', '.join(OFFICIAL_LAMBDAS)}")
        if len(term_names) != 6:
            raise ValueError("the official λ sets have 6 terms: pixel, conv1_2 … conv5_2")
        return cls(term_names, mode="fixed", initial_weights=OFFICIAL_LAMBDAS[preset])

    def current(self) -> torch.Tensor:
        """A copy of the weights for a loss graph: a rebalance updates the buffer in place, which would otherwise
        invalidate a graph built before it (the diversity loss weights its terms before they are observed)."""
        return self.weights.detach().clone()

    def weight(self, name: str) -> torch.Tensor:
        return self.weights[self.term_names.index(name)]

    @torch.no_grad()
    def observe(self, unweighted: torch.Tensor) -> bool:
        """Record one training step's unweighted terms (order = ``term_names``); True when this step rebalanced."""
        if self.mode == "fixed" or (self.mode == "once" and bool(self.rebalanced)):
            return False
        unweighted = unweighted.detach().to(self.running_sum)
        if unweighted.shape != self.running_sum.shape:
            raise ValueError(f"expected {len(self.term_names)} terms, got shape {tuple(unweighted.shape)}")
        self.step += 1
        if int(self.step) > self.rebalance_at - self.window:
            self.running_sum += unweighted
            self.running_count += 1
        if int(self.step) < self.rebalance_at:
            return False
        self.rebalance()
        return True

    @torch.no_grad()
    def rebalance(self) -> None:
        """w_l = target / mean_l from the accumulated window (× boost for the last term), then reset the window."""
        if int(self.running_count) > 0:
            mean = self.running_sum / self.running_count
            new = self.target / mean.clamp_min(torch.finfo(mean.dtype).tiny)
            new[self.boosted_index] *= self.final_layer_boost
            self.weights.copy_(torch.where(mean > 0, new, self.weights))
            self.rebalanced.fill_(True)
        self.running_sum.zero_()
        self.running_count.zero_()
        self.step.zero_()

    def running_mean(self) -> torch.Tensor:
        return self.running_sum / self.running_count.clamp_min(1)

    def describe(self) -> dict:
        """JSON-friendly state for logs and run records."""
        return {
            "mode": self.mode,
            "rebalance_at": self.rebalance_at,
            "window": self.window,
            "target": self.target,
            "final_layer_boost": self.final_layer_boost,
            "rebalanced": bool(self.rebalanced),
            "steps": int(self.step),
            "weights": {n: float(w) for n, w in zip(self.term_names, self.weights.tolist())},
            "running_mean": {n: float(m) for n, m in zip(self.term_names, self.running_mean().tolist())},
        }

    def extra_repr(self) -> str:
        return f"terms={list(self.term_names)}, mode={self.mode}, rebalance_at={self.rebalance_at}"


# ---------------------------------------------------------------------------------------------------------
# Reference-feature cache
# ---------------------------------------------------------------------------------------------------------
class ReferenceCache:
    """Reference-image features kept in memory by sample name, for runs without random augmentation.

    Entries are stored on the device they were computed on, optionally as float16 (half the bytes; the features
    are cast back to float32 for the loss — float16 has ~3 significant digits and flushes activations below
    ~6e-5 towards zero, so keep float32 when deep layers have tiny magnitudes, as with random VGG weights).
    Once ``max_bytes`` is reached new samples are simply not cached: with epoch-wise cycling over a dataset an
    evicting (LRU) cache smaller than the dataset would miss every time, while "first come, stay" keeps a fixed
    fraction hitting.

    Each entry remembers a checksum of the reference image; a mismatch (the image under that name changed,
    e.g. a random crop) raises instead of silently returning stale features.
    """

    def __init__(self, dtype: torch.dtype = torch.float32, max_bytes: int | None = None):
        self.dtype, self.max_bytes = dtype, max_bytes
        self._entries: dict[str, tuple[tuple[float, ...], dict[str, torch.Tensor]]] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    @staticmethod
    def checksum(image: torch.Tensor) -> tuple[float, ...]:
        """Shape plus plain and position-weighted sums: cheap, and changed by flips, crops and shifts."""
        flat = image.detach().flatten().float()  # float32: float64 is missing on some devices (MPS)
        ramp = torch.linspace(0.0, 1.0, flat.numel(), dtype=flat.dtype, device=flat.device)
        return (*map(float, image.shape), float(flat.sum()), float((flat * ramp).sum()),
                float((flat * ramp * ramp).sum()))

    def get(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        checksum, features = entry
        if not all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5) for a, b in zip(checksum, self.checksum(image))):
            raise ValueError(f"reference cache: the image named {key!r} changed since it was cached; the cache is "
                             f"only valid without random augmentation (disable it or the augmentation)")
        self.hits += 1
        return {name: value.float() for name, value in features.items()}

    def put(self, key: str, image: torch.Tensor, features: Mapping[str, torch.Tensor]) -> bool:
        stored = {name: value.detach().to(self.dtype).clone() for name, value in features.items()}
        size = sum(v.numel() * v.element_size() for v in stored.values())
        if self.max_bytes is not None and self.bytes + size > self.max_bytes:
            return False
        self._entries[key] = (self.checksum(image), stored)
        self.bytes += size
        return True

    def describe(self) -> dict:
        return {"entries": len(self), "bytes": self.bytes, "hits": self.hits, "misses": self.misses,
                "dtype": str(self.dtype).replace("torch.", ""), "max_bytes": self.max_bytes}


# ---------------------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------------------
class PerceptualLoss(nn.Module):
    """Σ_l w_l · mean|Φ_l(image) − Φ_l(reference)| over ``pixel`` and the extractor's ``layers`` (paper §3.3).

    ``extractor`` is any callable taking (N, 3, H, W) images in [-1, 1] and returning a dict layer → features
    containing at least ``layers`` (e.g. ``inverseg.perception.vgg.VGGFeatures``); if it is an ``nn.Module`` it
    is registered as a submodule so ``.to(device)`` moves it — checkpoint ``loss.balancer`` rather than the whole
    loss to avoid saving the frozen VGG weights.  ``balancer`` defaults to a paper-style
    ``LambdaBalancer(mode="once")``; it observes the unweighted terms on every forward in training mode (like
    BatchNorm statistics) — call ``.eval()`` on the loss for validation.

    ``forward(image, reference, keys=None)`` returns ``(total, logs)``: ``image`` is (B, 3, H, W) or (B, k, 3,
    H, W) (k outputs each compared with the reference, terms averaged over k), ``reference`` (B, 3, H, W);
    ``logs`` holds detached 0-dim tensors ``unweighted/<term>`` and ``weighted/<term>``.  ``keys`` (one sample
    name per batch element) enables the reference cache when ``cache`` is given.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        layers: Sequence[str] = CRN_LAYERS,
        balancer: LambdaBalancer | None = None,
        pixel_term: bool = True,
        pixel_scale: float = CRN_PIXEL_SCALE,
        cache: ReferenceCache | None = None,
        colour_term: bool = False,
    ):
        super().__init__()
        self.extractor = extractor
        self.layers = tuple(layers)
        self.pixel_term, self.pixel_scale = pixel_term, float(pixel_scale)
        self.colour_term = bool(colour_term)
        self.term_names = ((PIXEL,) if pixel_term else ()) + self.layers + ((COLOUR,) if colour_term else ())
        if not self.term_names:
            raise ValueError("the perceptual loss needs at least one term (pixel or a layer)")
        self.balancer = balancer if balancer is not None else LambdaBalancer(self.term_names)
        if self.balancer.term_names != self.term_names:
            raise ValueError(f"balancer terms {list(self.balancer.term_names)} do not match the loss terms "
                             f"{list(self.term_names)}")
        self.cache = cache

    # ------------------------------------------------------------------ features
    def _layer_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.layers:
            return {}
        features = self.extractor(images)
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise ValueError(f"the feature extractor returned {list(features)} but the loss needs {missing}")
        return {name: features[name] for name in self.layers}

    @torch.no_grad()
    def reference_features(self, reference: torch.Tensor, keys: Sequence[str] | None = None
                           ) -> dict[str, torch.Tensor]:
        """Φ_l(reference) without autograd (it is a fixed target), from the cache when ``keys`` are given."""
        if self.cache is None or keys is None:
            return self._layer_features(reference)
        if len(keys) != reference.shape[0]:
            raise ValueError(f"{len(keys)} cache keys for a batch of {reference.shape[0]} references")
        found = [self.cache.get(key, image) for key, image in zip(keys, reference)]
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            computed = self._layer_features(reference[missing])
            for row, i in enumerate(missing):
                single = {name: value[row:row + 1] for name, value in computed.items()}
                self.cache.put(keys[i], reference[i], single)
                found[i] = single
        return {name: torch.cat([entry[name] for entry in found]).to(reference.device) for name in self.layers}

    def difference_maps(self, image: torch.Tensor, reference: torch.Tensor, keys: Sequence[str] | None = None,
                        label: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """term → (B, k, h, w) mean over channels of |Φ(image) − Φ(reference)| at that term's resolution.

        The shared primitive of the perceptual and diversity losses: the mean over (h, w) of a map is the
        term's mean absolute difference; the diversity loss weights the maps with class masks first.
        ``label`` (B, C, H, W), the layout one-hot, is needed only by the ``colour`` term (see
        :func:`region_colour_map`).
        """
        images, batch, k = self._as_collection(image, reference)
        reference = reference.detach()  # a fixed target: no gradient to it, not even through the pixel term
        maps: dict[str, torch.Tensor] = {}
        signed = None
        if self.pixel_term or self.colour_term:
            signed = images.view(batch, k, 3, *images.shape[-2:]) - reference.unsqueeze(1)
        if self.pixel_term:
            maps[PIXEL] = signed.abs().mean(2) * self.pixel_scale
        if self.colour_term:
            if label is None:
                raise ValueError("the colour term compares class-region mean colours and needs the layout: "
                                 "pass label=(B, C, H, W) one-hot")
            maps[COLOUR] = region_colour_map(signed, label) * self.pixel_scale
        target = self.reference_features(reference, keys)
        for name, value in self._layer_features(images).items():
            value = value.view(batch, k, *value.shape[1:])
            maps[name] = (value - target[name].unsqueeze(1)).abs().mean(2)
        return maps

    @staticmethod
    def _as_collection(image: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if reference.dim() != 4 or reference.shape[1] != 3:
            raise ValueError(f"reference must be (B, 3, H, W), got {tuple(reference.shape)}")
        if image.dim() == 4:
            image = image.unsqueeze(1)
        if image.dim() != 5 or image.shape[2] != 3:
            raise ValueError(f"image must be (B, 3, H, W) or (B, k, 3, H, W), got {tuple(image.shape)}")
        if image.shape[0] != reference.shape[0] or image.shape[-2:] != reference.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and reference {tuple(reference.shape)} differ in batch "
                             f"size or resolution")
        batch, k = image.shape[:2]
        return image.reshape(batch * k, *image.shape[2:]), batch, k

    # ------------------------------------------------------------------ loss
    def combine(self, unweighted: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(T,) unweighted terms → weighted total and logs; observes them in training mode."""
        if self.training and torch.is_grad_enabled():
            self.balancer.observe(unweighted)
        weighted = unweighted * self.balancer.current().to(unweighted)
        logs = {}
        for name, raw, value in zip(self.term_names, unweighted.detach(), weighted.detach()):
            logs[f"unweighted/{name}"] = raw
            logs[f"weighted/{name}"] = value
        return weighted.sum(), logs

    def forward(self, image: torch.Tensor, reference: torch.Tensor, keys: Sequence[str] | None = None,
                label: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        maps = self.difference_maps(image, reference, keys, label=label)
        unweighted = torch.stack([maps[name].mean() for name in self.term_names])
        return self.combine(unweighted)


def region_colour_map(difference: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The ``colour`` term's map: each pixel carries |mean colour difference of its class region| (channel mean).

    ``difference`` (B, k, 3, H, W) is the signed image − reference, ``label`` (B, C, H, W) the layout one-hot
    (soft values allowed).  For region p with mask m_p the mean difference is d_p = Σ m_p Δ / Σ m_p per channel;
    the map is Σ_p m_p · mean_c |d_p|, so its spatial mean is Σ_p (area share of p) · mean_c |d_p|, and masked by
    one class (the diversity loss) it is that class's share.

    Why (an inverseg option, not in the paper or the official code; docs/methods/crn.md "Colour cast"): L1 on
    pixels is minimised by the per-pixel *median* and L1 on post-ReLU VGG features of a not yet textured output
    pulls its flat colours towards switching sparse features off, so an under-trained CRN paints regions darker
    and (with the offline VGG16) with too little red.  The mean colour of a whole region is what this term
    matches; its minimiser for a flat region is the region's mean colour, whatever the texture.
    """
    if label.dim() != 4 or label.shape[0] != difference.shape[0] or label.shape[-2:] != difference.shape[-2:]:
        raise ValueError(f"label must be (B, C, H, W) matching the images {tuple(difference.shape)}, got "
                         f"{tuple(label.shape)}")
    mask = label.to(difference.dtype)
    area = mask.sum((-2, -1))  # (B, C)
    region_sum = torch.einsum("bphw,bkchw->bkpc", mask, difference)
    region_mean = region_sum / area.clamp_min(1e-6)[:, None, :, None]
    per_region = region_mean.abs().mean(-1)  # (B, k, C)
    return torch.einsum("bkp,bphw->bkhw", per_region, mask)


__all__ = ["COLOUR", "CRN_LAYERS", "CRN_PIXEL_SCALE", "OFFICIAL_LAMBDAS", "PIXEL", "LambdaBalancer",
           "PerceptualLoss", "ReferenceCache", "region_colour_map"]
