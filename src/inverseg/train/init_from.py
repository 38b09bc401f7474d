"""``inverseg train --init-from RUN``: start a new run from another run's weights.

The papers' progressions need it: CRN fine-tunes 512p from the 256p weights and 1024p from 512p, training only
the two finest modules (implementations.md §1.4); pix2pixHD starts the 1024p local enhancer from the 512p global
generator (``--load_pretrain``, §3.3).  It works for every method the same way:

* the tensors of the method's ``transfer_modules`` (learned weights; not loss schedules such as CRN's λ) are
  matched **by name and shape** with the source checkpoint, after optional prefix renames (``rename``);
* a name present in both with another shape is an error naming the tensors (an architecture change is never
  papered over); tensors under an ``exclude`` prefix, or absent from the source, keep their fresh initialisation;
* with ``freeze_loaded`` the loaded parameters are not trained (``Method.freeze``), except under ``unfreeze``.

What was loaded, left new and frozen is printed and recorded in every checkpoint's state.json (``init_from``);
a resumed run re-freezes the same parameters from that record and never reads the source again.
"""

from __future__ import annotations

from collections import Counter

import torch

from ..config import InitConfig
from ..errors import InversegError
from ..methods.base import Method
from . import checkpoint as ckpt


class InitFromError(InversegError, ValueError):
    """The source does not fit this model, or an option names nothing; the message says which and the fix."""


def under(name: str, prefix: str) -> bool:
    """``name`` is the module/tensor ``prefix`` or inside it (``refine.1`` does not contain ``refine.10``)."""
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


def rename_keys(tensors: dict[str, torch.Tensor], rename: dict[str, str]) -> dict[str, torch.Tensor]:
    """Source names → target names.  Each name is renamed by its longest matching source prefix, once, so that
    rules may swap or shift indices (``scales.0 → scales.1`` together with ``scales.1 → scales.2``)."""
    rules = sorted(((src.rstrip("."), dst.rstrip(".")) for src, dst in rename.items()), key=lambda r: -len(r[0]))
    renamed, used = {}, set()
    for name, tensor in tensors.items():
        for src, dst in rules:
            if under(name, src):
                name = dst + name[len(src):]
                used.add(src)
                break
        renamed[name] = tensor
    unused = [(src, dst) for src, dst in rules if src not in used]
    if unused:
        raise InitFromError(f"--init-rename {unused[0][0]}={unused[0][1]} matches no tensor name of the source; "
                            f"fix: give a module path of the source as it is stored (e.g. generator.body)")
    return renamed


def compress(names, universe) -> list[str]:
    """The fewest module prefixes that cover exactly ``names`` within ``universe``, numbered siblings folded:
    ``generator.refine.{0-6}`` instead of 28 tensor names."""
    names, universe = set(names), list(universe)

    def prefixes(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]

    total = Counter(p for name in universe for p in prefixes(name))
    chosen = Counter(p for name in universe if name in names for p in prefixes(name))
    picked: list[str] = []
    for name in universe:
        if name in names:
            prefix = next(p for p in prefixes(name) if chosen[p] == total[p])
            if prefix not in picked:
                picked.append(prefix)
    folded: list[str] = []
    groups: dict[str, list[int]] = {}
    for prefix in picked:
        parent, _, last = prefix.rpartition(".")
        if parent and last.isdigit():
            if parent not in groups:
                groups[parent] = []
                folded.append(parent)
            groups[parent].append(int(last))
        else:
            folded.append(prefix)
    return [_fold(item, groups[item]) if item in groups else item for item in folded]


def _fold(parent: str, numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"{parent}.{numbers[0]}"
    runs, start = [], numbers[0]
    for previous, current in zip(numbers, numbers[1:] + [None]):
        if current != previous + 1:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    return f"{parent}.{{{','.join(runs)}}}"


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(str(d) for d in tensor.shape) or "scalar"


def _listing(items: list[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f", … ({len(items) - limit} more)" if len(items) > limit else "") \
        if items else "none"


def initialise_from(method: Method, init: InitConfig) -> tuple[dict, list[str]] | None:
    """Copy matching tensors from ``init.source`` into ``method``; returns (record for state.json, lines to print),
    or None when there is no source."""
    if not init.source:
        return None
    where = f"--init-from {init.source}"
    try:
        checkpoint = ckpt.resolve_checkpoint(init.source)
    except ckpt.CheckpointError as error:
        raise InitFromError(f"{where}: {error}") from None
    state = ckpt.read_state(checkpoint)
    source = rename_keys(ckpt.load_weights(checkpoint), init.rename)

    modules = {name: getattr(method, name, None) for name in (method.transfer_modules or method.checkpoint_modules)}
    target = {f"{name}.{key}": value for name, module in modules.items() if module is not None
              for key, value in module.state_dict().items()}
    for prefix in init.exclude:
        if not any(under(name, prefix) for name in target):
            raise InitFromError(f"{where}: --init-exclude {prefix} matches nothing in this {method.name}; fix: give "
                                f"a module path of this model (e.g. {next(iter(target)).rsplit('.', 1)[0]})")
    excluded = {name for name in target if any(under(name, prefix) for prefix in init.exclude)}
    candidates = [name for name in target if name in source and name not in excluded]
    mismatched = [name for name in candidates if source[name].shape != target[name].shape]
    if mismatched:
        details = [f"{name} (source {_shape(source[name])}, here {_shape(target[name])})" for name in mismatched]
        fix = ", ".join(compress(mismatched, target))
        raise InitFromError(f"{where}: {len(mismatched)} tensor(s) have another shape here: {_listing(details, 4)}; "
                            f"fix: leave them new with --init-exclude {fix}, or start from a run of this "
                            f"architecture")
    loaded = set(candidates)
    if not loaded:
        raise InitFromError(f"{where}: no tensor name of the source matches this {method.name} (source: "
                            f"{_listing(compress(source, source), 4)}); fix: --init-rename SRC=DST for renamed modules")

    with torch.no_grad():
        for name, module in modules.items():
            if module is None:
                continue
            part = {key[len(name) + 1:]: source[key] for key in loaded if key.startswith(name + ".")}
            module.load_state_dict(part, strict=False)  # every key of ``part`` exists in ``module``
    method.after_init_from(loaded)

    parameters = [name for name, _ in method.named_parameters()]
    if init.unfreeze and not init.freeze_loaded:
        raise InitFromError(f"{where}: --unfreeze {init.unfreeze[0]} only applies with --freeze-loaded")
    for prefix in init.unfreeze:
        if not any(under(name, prefix) for name in loaded):
            raise InitFromError(f"{where}: --unfreeze {prefix} matches no loaded tensor; fix: give a loaded module "
                                f"path ({_listing(compress(loaded, target), 4)})")
    frozen = [name for name in parameters if name in loaded and init.freeze_loaded
              and not any(under(name, prefix) for prefix in init.unfreeze)]
    method.freeze(frozen)

    new = [name for name in target if name not in loaded]
    unused = [name for name in source if name not in loaded]
    record = {
        "source": str(init.source),
        "checkpoint": str(checkpoint.resolve()),
        "source_method": state.get("method"),
        "source_preset": (state.get("config") or {}).get("preset"),
        "source_step": state.get("step"),
        "source_cpu_seconds": state.get("cpu_seconds"),  # training CPU time already spent on these weights
        "loaded": compress(loaded, target), "loaded_tensors": len(loaded),
        "new": compress(new, target), "new_tensors": len(new),
        "frozen": frozen,
        "unused": compress(unused, source),
        "exclude": list(init.exclude), "rename": dict(init.rename), "unfreeze": list(init.unfreeze),
    }
    lines = [f"init-from {checkpoint} ({record['source_preset'] or record['source_method']}, "
             f"step {record['source_step']}):",
             f"  loaded {len(loaded)} tensors: {_listing(record['loaded'])}",
             f"  new (fresh initialisation) {len(new)} tensors: {_listing(record['new'])}",
             f"  frozen {len(frozen)} parameters: {_listing(compress(frozen, parameters))}",
             f"  not used from the source: {_listing(record['unused'])}"]
    if state.get("method") != method.name:
        lines.append(f"  note: the source is a {state.get('method')} run, this is {method.name}")
    source_classes = (state.get("spec") or {}).get("class_names")
    if source_classes is not None and list(source_classes) != list(method.spec.class_names):
        lines.append("  note: the source was trained on other classes; label channels are matched by position")
    return record, lines


def restore_freezing(method: Method, record: dict | None) -> None:
    """On resume: freeze the parameters the run froze when it was initialised (from state.json)."""
    if record and record.get("frozen"):
        method.freeze(record["frozen"])


__all__ = ["InitFromError", "compress", "initialise_from", "rename_keys", "restore_freezing", "under"]
