"""Segment retrieval (SIMS §3.1): for each query segment L_j, the bank segments of its class that fit best.

    σ(j) = argmax_i  IoU(P_i^mask, L_j^mask) + IoU(P_i^cont, L_j^cont)     over i with class(P_i) = class(L_j)

Both terms are computed on the fixed G×G bit grids of :mod:`inverseg.sims.segments`, so a whole class of the bank
is scored at once with AND + popcount over 64-bit words (the bit-level form of the matrix products
|A ∩ B| = a·b):

* mask IoU = |P ∩ L| / (|P| + |L| − |P ∩ L|);
* context IoU of the multi-channel one-hot contexts (P^cont ∈ {0,1}^{h×w×c}): the intersection counts cells where
  both carry the same class, Σ_c |P_c ∩ L_c| (only the classes present in L_j can contribute), and the union is
  Σ_c |P_c ∪ L_c| = n_P + n_L − intersection, n = non-void cells.

Options (``RetrievalSettings``):
* ``geometry: box`` compares masks/contexts normalised to the segment's box (shape and surroundings, any position
  and size; the canvas then fits the retrieved segment into the query's box); ``image`` compares them in image
  coordinates (shape *and* location; the paper's h×w definitions, and the official ``search_segments.m``).
* ``context: false`` drops the context term.  The official release has no context term ("search based on context
  iou will be added soon", README) and uses image coordinates, top-10, queries > 1000 px at 256×512: that is
  ``RetrievalSettings.official()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bank import MemoryBank
from .segments import Decomposition, SegmentGrids

# official search_segments.m: only query segments with more than 1000 pixels at 256×512 are searched
OFFICIAL_MIN_QUERY_AREA = 1000 / (256 * 512)


@dataclass
class RetrievalSettings:
    geometry: str = "box"  # box | image (official and the paper's h×w masks)
    context: bool = True  # the paper's context term; the official code has none
    top_k: int = 10  # candidates kept per segment (official: 10)
    min_query_area: float = 0.0  # fraction of the image; smaller query segments get no candidate

    def validate(self) -> None:
        if self.geometry not in ("box", "image"):
            raise ValueError(f"retrieval.geometry must be 'box' or 'image', got {self.geometry!r}")
        if self.top_k < 1:
            raise ValueError(f"retrieval.top_k must be ≥ 1, got {self.top_k}")

    @classmethod
    def official(cls) -> "RetrievalSettings":
        """xjqicuhk/SIMS search_segments.m: plain mask IoU in image coordinates, top-10, > 1000 px at 256×512."""
        return cls(geometry="image", context=False, top_k=10, min_query_area=OFFICIAL_MIN_QUERY_AREA)


@dataclass
class Match:
    """The best bank segments for one query segment, best first, with their score terms."""

    indices: np.ndarray
    scores: np.ndarray
    mask_iou: np.ndarray
    context_iou: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class Query:
    """A query layout: its segments and their grids (computed with the bank's own settings)."""

    decomposition: Decomposition
    grids: SegmentGrids


def _popcount_rows(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a (..., W) uint64 array, summed over the last axis."""
    return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)


class Retriever:
    """Scores query segments against a bank; the chosen geometry's bit grids are held in RAM, sorted by class."""

    def __init__(self, bank: MemoryBank, settings: RetrievalSettings | None = None):
        self.bank = bank
        self.settings = settings or RetrievalSettings()
        self.settings.validate()
        prefix = "grid_image_" if self.settings.geometry == "image" else "grid_"
        classes = bank.classes
        self.order = np.argsort(classes, kind="stable")  # class-contiguous rows: one slice per class
        self.bounds = np.searchsorted(classes[self.order], np.arange(bank.spec.num_classes + 1))
        self.mask_bits = np.ascontiguousarray(bank.grids(prefix + "mask")[self.order])
        self.context_bits = np.ascontiguousarray(bank.grids(prefix + "context")[self.order]) \
            if self.settings.context else None
        counts = np.asarray(bank.grids("grid_counts"))[self.order]
        column = 2 if self.settings.geometry == "image" else 0
        self.mask_count, self.context_count = counts[:, column].astype(np.int64), counts[:, column + 1].astype(np.int64)
        self.sources = np.asarray(bank.segments["source"])[self.order]

    # ------------------------------------------------------------------ queries
    def query(self, label: np.ndarray) -> Query:
        """Decompose a query layout exactly as the bank's layouts were decomposed."""
        decomposition = self.bank.settings.decompose(np.asarray(label), self.bank.spec)
        return Query(decomposition, self.bank.settings.grids(decomposition, self.bank.spec))

    def retrieve(self, query: Query, top_k: int | None = None, exclude_sources: set[int] | None = None
                 ) -> list[Match | None]:
        """One :class:`Match` per query segment (None: too small, or no bank segment of its class)."""
        top_k = top_k or self.settings.top_k
        image_area = query.decomposition.label.size
        column = 2 if self.settings.geometry == "image" else 0
        query_masks = query.grids.image_mask if column else query.grids.mask
        query_contexts = query.grids.image_context if column else query.grids.context
        results: list[Match | None] = []
        for j, segment in enumerate(query.decomposition.segments):
            if segment.area < self.settings.min_query_area * image_area:
                results.append(None)
                continue
            start, stop = self.bounds[segment.class_id], self.bounds[segment.class_id + 1]
            rows = np.arange(start, stop)
            if exclude_sources:
                rows = rows[~np.isin(self.sources[rows], list(exclude_sources))]
            if len(rows) == 0:
                results.append(None)
                continue
            mask_iou = self._iou(self.mask_bits[rows] & query_masks[j], self.mask_count[rows],
                                 int(query.grids.counts[j, column]))
            if self.context_bits is not None:
                present = np.flatnonzero(np.bitwise_count(query_contexts[j]).sum(-1))
                bits = self.context_bits[rows[:, None], present[None, :]] & query_contexts[j, present]
                context_iou = self._iou(bits.reshape(len(rows), -1), self.context_count[rows],
                                        int(query.grids.counts[j, column + 1]))
            else:
                context_iou = np.zeros_like(mask_iou)
            scores = mask_iou + context_iou
            keep = min(top_k, len(rows))
            best = np.argpartition(-scores, keep - 1)[:keep] if keep < len(rows) else np.arange(len(rows))
            best = best[np.lexsort((rows[best], -scores[best]))]  # by score, ties by bank order
            results.append(Match(indices=self.order[rows[best]], scores=scores[best], mask_iou=mask_iou[best],
                                 context_iou=context_iou[best]))
        return results

    @staticmethod
    def _iou(intersection_words: np.ndarray, count_bank: np.ndarray, count_query: int) -> np.ndarray:
        intersection = _popcount_rows(intersection_words)
        union = count_bank + count_query - intersection
        return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)


__all__ = ["OFFICIAL_MIN_QUERY_AREA", "Match", "Query", "RetrievalSettings", "Retriever"]
