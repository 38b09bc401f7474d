"""LabelSpec: what the integers in a label map mean, and every conversion of a label map the methods need.

Inside inverseg a label map is an integer array whose values are either a class id ``0 … num_classes-1`` or the
spec's ``ignore_index`` (void / unlabelled / don't-care).  Files on disk may store other numbers (Cityscapes
labelIds, ADE20K's 1-based ids, colour-coded PNGs); ``raw_to_id`` translates them when a file is read.

Strict validation is the point of this module: a value that is neither a class nor the ignore index is reported
with the file name, the offending values and their pixel counts, and the allowed set.  The official
repositories clamp silently or crash later with a device-side assert (implementations.md §12.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InversegError

RGB = tuple[int, int, int]


class LabelError(InversegError, ValueError):
    """A label map holds values (or colours) the spec does not know. The message is one line with the fix."""


def _describe_values(values: np.ndarray, counts: np.ndarray, limit: int = 8) -> str:
    order = np.argsort(-counts)
    parts = [f"{int(values[i])} ({int(counts[i])} px)" for i in order[:limit]]
    if len(values) > limit:
        parts.append(f"… {len(values) - limit} more")
    return ", ".join(parts)


@dataclass(frozen=True)
class LabelSpec:
    """Class names, colours, the void/ignore id and the file-value translation of one labelling scheme.

    ``void_channel`` one-hot encodings add the CRN "void" channel (1 − Σ classes, paper §3.1: "one of the c
    possible labels is 'void'"); SPADE's "dontcare as an extra input channel" is the same channel with nearest
    resizing.
    """

    name: str
    class_names: tuple[str, ...]
    colors: tuple[RGB, ...]
    ignore_index: int | None = None
    void_color: RGB = (0, 0, 0)
    # raw_to_id[v] = id for a file value v; -1 marks a value that is not allowed in files of this scheme.
    raw_to_id: tuple[int, ...] | None = field(default=None, repr=False)
    raw_description: str = ""

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.colors):
            raise ValueError(f"LabelSpec {self.name}: {len(self.class_names)} names but {len(self.colors)} colours")
        if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"LabelSpec {self.name}: ignore_index {self.ignore_index} collides with a class id")

    # ------------------------------------------------------------------ basic facts
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def allowed_description(self) -> str:
        text = f"class ids 0–{self.num_classes - 1}"
        if self.ignore_index is not None:
            text += f" and void {self.ignore_index}"
        return text

    def raw_allowed_description(self) -> str:
        if self.raw_to_id is None:
            return self.allowed_description()
        return self.raw_description or "file values " + ", ".join(
            str(v) for v, i in enumerate(self.raw_to_id) if i >= 0
        )

    # ------------------------------------------------------------------ validation and file values
    def validate(self, ids: np.ndarray | torch.Tensor, source: str = "label map") -> None:
        """Raise LabelError when ``ids`` holds a value that is neither a class id nor the ignore index."""
        array = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        values, counts = np.unique(array, return_counts=True)
        bad = (values < 0) | (values >= self.num_classes)
        if self.ignore_index is not None:
            bad &= values != self.ignore_index
        if bad.any():
            raise LabelError(
                f"{source}: label values {_describe_values(values[bad], counts[bad])} are not in the "
                f"'{self.name}' label set ({self.allowed_description()}); fix: remap them in the file, or pick the "
                f"matching --dataset / --palette"
            )

    def ids_from_raw(self, raw: np.ndarray, source: str = "label map") -> np.ndarray:
        """Translate file values to ids (Cityscapes labelIds → trainIds, ADE20K 1-based → 0-based, …)."""
        raw = np.asarray(raw)
        if self.raw_to_id is None:
            ids = raw.astype(np.int64)
            self.validate(ids, source)
            return ids
        lut = np.asarray(self.raw_to_id, dtype=np.int64)
        values, counts = np.unique(raw, return_counts=True)
        bad = (values < 0) | (values >= len(lut))
        bad[~bad] = lut[values[~bad]] < 0
        if bad.any():
            raise LabelError(
                f"{source}: label values {_describe_values(values[bad], counts[bad])} are not in the "
                f"'{self.name}' file encoding ({self.raw_allowed_description()}); fix: remap them in the file, or "
                f"pick the matching --dataset / --palette"
            )
        return lut[raw.astype(np.int64)]

    # ------------------------------------------------------------------ encodings
    def one_hot(
        self,
        label: torch.Tensor,
        size: tuple[int, int] | None = None,
        mode: str = "area",
        void_channel: bool = False,
    ) -> torch.Tensor:
        """(B,H,W) or (H,W) ids → (B,C,h,w) float one-hot.

        ``mode="area"`` averages the full-resolution one-hot over each output cell, giving soft class fractions
        (CRN's ``tf.image.resize_area``, implementations.md §14.9); ``"nearest"`` picks one pixel (SPADE/OASIS).
        Void pixels are all-zero; with ``void_channel`` a last channel 1 − Σ classes is appended.
        """
        if label.dim() == 2:
            label = label.unsqueeze(0)
        if label.dim() != 3:
            raise ValueError(f"one_hot expects (B,H,W) or (H,W) ids, got shape {tuple(label.shape)}")
        label = label.long()
        if mode not in ("area", "nearest"):
            raise ValueError(f"one_hot mode must be 'area' or 'nearest', got {mode!r}")
        if mode == "nearest" and size is not None and tuple(size) != tuple(label.shape[-2:]):
            label = F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()
        valid = (label >= 0) & (label < self.num_classes)
        unknown = ~valid if self.ignore_index is None else (~valid) & (label != self.ignore_index)
        if bool(unknown.any()):
            self.validate(label)  # raises the one-line LabelError instead of a scatter/device assert later
        index = torch.where(valid, label, torch.zeros_like(label))
        encoded = torch.zeros(label.shape[0], self.num_classes, *label.shape[1:], device=label.device)
        encoded.scatter_(1, index.unsqueeze(1), valid.unsqueeze(1).float())
        if mode == "area" and size is not None and tuple(size) != tuple(label.shape[-2:]):
            encoded = F.interpolate(encoded, size=tuple(size), mode="area")
        if void_channel:
            encoded = torch.cat([encoded, (1.0 - encoded.sum(1, keepdim=True)).clamp_(min=0.0)], dim=1)
        return encoded

    def input_channels(self, void_channel: bool) -> int:
        return self.num_classes + int(void_channel)

    def colorize(self, label: np.ndarray | torch.Tensor) -> np.ndarray:
        """(H,W) ids → (H,W,3) uint8 with the spec's colours (void and unknown values → void colour)."""
        ids = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        table = np.array(list(self.colors) + [self.void_color], dtype=np.uint8)
        index = np.where((ids >= 0) & (ids < self.num_classes), ids, self.num_classes)
        return table[index]

    def palette(self) -> "Palette":
        return Palette(
            ids=tuple(range(self.num_classes)), names=self.class_names, colors=self.colors,
        )

    def class_name(self, class_id: int) -> str:
        if 0 <= class_id < self.num_classes:
            return self.class_names[class_id]
        if class_id == self.ignore_index:
            return "void"
        return f"<unknown {class_id}>"

    def to_dict(self) -> dict:
        """JSON-friendly form stored with every run, so a checkpoint knows its classes without the dataset."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
            "void_color": list(self.void_color),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSpec":
        return cls(
            name=data["name"],
            class_names=tuple(data["class_names"]),
            colors=tuple(tuple(int(v) for v in c) for c in data["colors"]),  # type: ignore[misc]
            ignore_index=data.get("ignore_index"),
            void_color=tuple(data.get("void_color", (0, 0, 0))),  # type: ignore[arg-type]
        )


# ---------------------------------------------------------------------------------------------------------
# Instance boundaries (pix2pixHD §3.4 / SPADE input)
# ---------------------------------------------------------------------------------------------------------
def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """(B,H,W) or (H,W) instance ids → float edge map, 1 where a pixel differs from any 4-neighbour."""
    squeeze = instance.dim() == 2
    if squeeze:
        instance = instance.unsqueeze(0)
    edge = torch.zeros_like(instance, dtype=torch.bool)
    horizontal = instance[:, :, 1:] != instance[:, :, :-1]
    vertical = instance[:, 1:, :] != instance[:, :-1, :]
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical
    edge = edge.float().unsqueeze(1)
    return edge[0] if squeeze else edge


# ---------------------------------------------------------------------------------------------------------
# Palettes: colour-coded label images
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Palette:
    """id ↔ colour table read from a TSV file (``id<TAB>name<TAB>R,G,B`` lines, ``#`` comments)."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[RGB, ...]
    source: str = "<palette>"

    @classmethod
    def from_tsv(cls, path: str | Path) -> "Palette":
        path = Path(path)
        ids, names, colors = [], [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            try:
                if len(fields) != 3:
                    raise ValueError(f"expected 3 tab-separated fields, got {len(fields)}")
                rgb = tuple(int(v) for v in fields[2].split(","))
                if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                    raise ValueError(f"colour {fields[2]!r} is not R,G,B in 0–255")
                ids.append(int(fields[0]))
            except ValueError as error:
                raise LabelError(
                    f"{path}:{number}: {error}; fix: write lines as id<TAB>name<TAB>R,G,B"
                ) from None
            if ids[-1] in ids[:-1]:  # to_spec would otherwise renumber the classes wrongly
                raise LabelError(f"{path}:{number}: id {ids[-1]} is listed twice; fix: give every entry its own id")
            names.append(fields[1])
            colors.append(rgb)
        if not ids:
            raise LabelError(f"{path}: no palette entries; fix: add lines id<TAB>name<TAB>R,G,B")
        if len(set(colors)) != len(colors):
            raise LabelError(f"{path}: two ids share one colour; fix: give every id its own colour")
        return cls(tuple(ids), tuple(names), tuple(colors), source=str(path))  # type: ignore[arg-type]

    def to_tsv(self) -> str:
        lines = ["# id\tname\tcolor_rgb"]
        lines += [f"{i}\t{n}\t{r},{g},{b}" for i, n, (r, g, b) in zip(self.ids, self.names, self.colors)]
        return "\n".join(lines) + "\n"

    def decode(self, rgb: np.ndarray, source: str = "label image") -> np.ndarray:
        """(H,W,3) uint8 colours → (H,W) int64 ids; an unknown colour is a LabelError naming it."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] < 3:
            raise LabelError(f"{source}: expected an RGB label image, got shape {rgb.shape}")
        key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        table = np.array([(r << 16) | (g << 8) | b for r, g, b in self.colors], dtype=np.int64)
        order = np.argsort(table)
        position = np.searchsorted(table[order], key)
        position = np.clip(position, 0, len(table) - 1)
        found = table[order][position] == key
        if not found.all():
            values, counts = np.unique(key[~found], return_counts=True)
            shown = sorted(zip(counts.tolist(), values.tolist()), reverse=True)[:6]
            described = ", ".join(f"({v >> 16},{(v >> 8) & 255},{v & 255}) ({c} px)" for c, v in shown)
            raise LabelError(
                f"{source}: colours {described} are not in palette {self.source} "
                f"({len(self.colors)} colours); fix: add them to the palette or repaint those pixels"
            )
        return np.asarray(self.ids, dtype=np.int64)[order][position]

    def to_spec(self, name: str, ignore_id: int | None = None) -> LabelSpec:
        """A LabelSpec whose classes are the palette's ids in increasing order (renumbered 0…N-1).

        The palette's ids are the values stored in index files (or produced by ``decode``); ``raw_to_id`` maps
        them to the contiguous class ids, and ``ignore_id`` (if any) to the internal ignore index 255.
        """
        by_id = {i: (n, c) for i, n, c in zip(self.ids, self.names, self.colors)}
        class_ids = sorted(i for i in self.ids if i != ignore_id)
        if min(self.ids) < 0 or max(self.ids) > 65535:
            raise LabelError(f"{self.source}: palette ids must be in 0–65535; fix: renumber the palette")
        if ignore_id is not None and not 0 <= ignore_id <= 65535:
            raise LabelError(f"{self.source}: ignore id {ignore_id} is not in 0–65535; fix: pass a file value")
        mapping = {raw: new for new, raw in enumerate(class_ids)}
        if ignore_id is not None:
            mapping[ignore_id] = 255
        if len(class_ids) > 255:
            raise LabelError(f"{self.source}: {len(class_ids)} classes; at most 255 are supported with a palette")
        void_color = by_id[ignore_id][1] if ignore_id in by_id else (0, 0, 0)
        return LabelSpec(
            name=name,
            class_names=tuple(by_id[i][0] for i in class_ids),
            colors=tuple(by_id[i][1] for i in class_ids),
            ignore_index=255,
            void_color=void_color,
            raw_to_id=make_lut(mapping, size=max(256, max(self.ids) + 1, (ignore_id or 0) + 1)),
            raw_description=f"the ids of palette {self.source}",
        )


def guess_ignore_id(palette: Palette) -> int | None:
    """Convention for classes.tsv files: an entry whose name mentions 'void', 'ignore' or 'unlabel' is void."""
    for class_id, name in zip(palette.ids, palette.names):
        lowered = name.lower()
        if any(word in lowered for word in ("void", "ignore", "unlabel", "unused")):
            return class_id
    return None


def make_lut(mapping: dict[int, int], size: int = 256, default: int = -1) -> tuple[int, ...]:
    lut = [default] * size
    for raw, target in mapping.items():
        lut[raw] = target
    return tuple(lut)


def spread_colors(count: int, seed: int = 7) -> tuple[RGB, ...]:
    """Distinct deterministic colours for schemes without an official palette (documented as such)."""
    rng = np.random.default_rng(seed)
    accepted = np.zeros((count, 3), dtype=np.int64)
    size = 0
    while size < count:  # a candidate must differ from every accepted colour by > 40 (L1), up to 401 colours
        candidate = rng.integers(20, 236, size=3)
        if size > 400 or size == 0 or np.abs(accepted[:size] - candidate).sum(axis=1).min() > 40:
            accepted[size] = candidate
            size += 1
    return tuple((int(r), int(g), int(b)) for r, g, b in accepted)
