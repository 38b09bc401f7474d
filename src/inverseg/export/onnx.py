"""``inverseg export --format onnx``: a method's inference network as one ONNX graph with its random inputs exposed.

What the graph computes is exactly the eager ``method.sample`` for *given* random inputs: the label encoding
(one-hot [+ void / don't-care channel] [+ instance edges]) is part of the graph, the random draws are not:

===========  ================================================  =================================================
graph        graph inputs (all batch-first, batch dynamic)       output
===========  ================================================  =================================================
crn          label                                             images (B, k, 3, H, W), the model's k outputs
spade        label [, instance] [, layout inputs (SAFM: spd     image (B, 3, H, W)
             (B, 72, H, W))] [, z (B, z_dim) with the VAE]
oasis        label [, noise (B, z_dim, H, W)]                  image
pix2pixhd    label [, instance] [, features (B, feat, H, W)]   image
sims         label, canvas (B, 3, H, W), mask (B, 1, H, W)     image
sesame       label [, instance], photo (B, 3, H, W), hole      image (composited with the photo outside the hole)
===========  ================================================  =================================================

A method names its graph with ``Method.export_graph``: SPADE's forks that sample as SPADE does (CC-FPSE, LGGAN,
SAFM) inherit ``spade``; a layout channel a graph cannot compute (SAFM's shape descriptor, a flood fill) is declared
by the method's ``layout_inputs`` hook and becomes an input after ``instance``.

``label`` / ``instance`` are int64 ids (B, H, W) at the model's size (values outside the classes = void, as in
``LabelSpec.one_hot``); images are in [-1, 1].  The style encoder (VAE) of SPADE and its forks is a second file
``NAME.style.onnx`` (photo → μ, log σ²) because a graph cannot skip it when z is drawn from N(0, I).

Everything the runtime needs (method, classes and colours, size, inputs, how to draw the random inputs,
pix2pixHD's cluster table) is stored as ``inverseg.*`` entries of the model's ``metadata_props``, so the runtime
never opens the checkpoint.  The legacy TorchScript exporter is used (``dynamo=False``): the dynamo exporter
needs ``onnxscript``, which is not a dependency; the graphs here are static, so both give the same ONNX.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InversegError

FORMAT_VERSION = 1
DEFAULT_OPSET = 17
EXPORTABLE_METHODS = ("crn", "spade", "oasis", "pix2pixhd", "sims", "sesame", "ccfpse", "lggan", "safm")
# What the eager method offers (``Method.inference_controls``) that its graph's runtime cannot do: OASIS's regional
# re-sampling and pix2pixHD's style photo (instance pooling of the encoder) have no graph form, and a SIMS graph is
# fed one canvas, so its candidates give one image.  The rest of the controls are stored with the file.
GRAPH_LIMITS = {"oasis": {"resample": False}, "pix2pixhd": {"style_image": False}, "sims": {"max_k": 1}}


class ExportError(InversegError, RuntimeError):
    """A run that cannot be exported (unsupported method or option, missing package)."""


@dataclass(frozen=True)
class GraphInput:
    """One graph input: name, dtype, shape with symbolic dims, and what it means (stored in the metadata)."""

    name: str
    dtype: str  # int64 | float32
    shape: tuple[str | int, ...]
    about: str


# --------------------------------------------------------------------------------------------- label encoding
def one_hot(label: torch.Tensor, classes: torch.Tensor, void_channel: bool) -> torch.Tensor:
    """(B,H,W) ids → (B,C[+1],H,W): ``LabelSpec.one_hot`` at full resolution, written with a comparison
    instead of an in-place scatter so that it traces to ONNX (ids outside 0…C−1 give an all-zero column)."""
    encoded = (label.unsqueeze(1) == classes.view(1, -1, 1, 1)).float()
    if void_channel:
        encoded = torch.cat([encoded, (1.0 - encoded.sum(1, keepdim=True)).clamp(min=0.0)], dim=1)
    return encoded


def edge_map(instance: torch.Tensor) -> torch.Tensor:
    """(B,H,W) ids → (B,1,H,W): ``labels.spec.instance_edges`` without in-place ``|=`` (not exportable)."""
    horizontal = (instance[:, :, 1:] != instance[:, :, :-1]).float()
    vertical = (instance[:, 1:, :] != instance[:, :-1, :]).float()
    edge = torch.maximum(F.pad(horizontal, (1, 0)), F.pad(horizontal, (0, 1)))
    edge = torch.maximum(edge, torch.maximum(F.pad(vertical, (0, 0, 1, 0)), F.pad(vertical, (0, 0, 0, 1))))
    return edge.unsqueeze(1)


class Encoding(nn.Module):
    """The conditioning every method builds from (label [, instance]): one-hot, void channel, edge channel."""

    def __init__(self, num_classes: int, void_channel: bool, edges: bool):
        super().__init__()
        self.register_buffer("classes", torch.arange(num_classes), persistent=False)
        self.void_channel = void_channel
        self.edges = edges

    def forward(self, label: torch.Tensor, instance: torch.Tensor | None = None) -> torch.Tensor:
        encoded = one_hot(label, self.classes, self.void_channel)
        if not self.edges:
            return encoded
        return torch.cat([encoded, edge_map(label if instance is None else instance)], dim=1)


# --------------------------------------------------------------------------------------------- graphs
class CRNGraph(nn.Module):
    def __init__(self, method):
        super().__init__()
        self.encoding = Encoding(method.spec.num_classes, method.settings.model.void_channel, edges=False)
        self.generator = method.generator

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoding(label)).clamp(-1.0, 1.0)


class SPADEGraph(nn.Module):
    """SPADE and the forks that sample like it (CC-FPSE, LGGAN, SAFM): the generator on [encoding, the method's
    ``layout_inputs``] [and z]."""

    def __init__(self, method):
        super().__init__()
        model = method.settings.model
        self.encoding = Encoding(method.spec.num_classes, model.dontcare_channel, model.instance_edges)
        self.generator = method.generator
        self.with_z = method.encoder is not None
        self.layout_inputs = len(method.layout_inputs())

    def forward(self, label: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        instance = rest[0] if self.encoding.edges else None
        layout = self.encoding(label, instance)
        first = int(self.encoding.edges)
        if self.layout_inputs:
            layout = torch.cat([layout, *rest[first:first + self.layout_inputs]], dim=1)
        if self.with_z:
            return self.generator(layout, rest[-1]).clamp(-1.0, 1.0)
        return self.generator(layout).clamp(-1.0, 1.0)


class StyleGraph(nn.Module):
    """The VAE encoder of SPADE and its forks: photo (B,3,H,W) → (μ, log σ²)."""

    def __init__(self, method):
        super().__init__()
        self.encoder = method.encoder

    def forward(self, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(photo)
        return mu, logvar


class OASISGraph(nn.Module):
    def __init__(self, method):
        super().__init__()
        self.encoding = Encoding(method.spec.num_classes, method.settings.model.dontcare_channel, edges=False)
        self.generator = method.generator
        self.with_noise = bool(method.settings.model.z_dim)

    def forward(self, label: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        layout = self.encoding(label)
        if self.with_noise:
            return self.generator(layout, noise[0]).clamp(-1.0, 1.0)
        return self.generator(layout).clamp(-1.0, 1.0)


class Pix2PixHDGraph(nn.Module):
    def __init__(self, method):
        super().__init__()
        model = method.settings.model
        self.encoding = Encoding(method.spec.num_classes, model.void_channel, model.instance_edges)
        self.generator = method.generator
        self.with_features = method.encoder is not None

    def forward(self, label: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        layout = self.encoding(label, rest[0] if self.encoding.edges else None)
        if self.with_features:
            layout = torch.cat([layout, rest[-1]], dim=1)
        return self.generator(layout).clamp(-1.0, 1.0)


class SIMSGraph(nn.Module):
    def __init__(self, method):
        super().__init__()
        self.encoding = Encoding(method.spec.num_classes, method.settings.model.void_channel, edges=False)
        self.synthesis = method.synthesis

    def forward(self, label: torch.Tensor, canvas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rgb, _ = self.synthesis(self.encoding(label), canvas, mask)
        return rgb.clamp(-1.0, 1.0)


class SESAMEGraph(nn.Module):
    """``SESAME.semantics`` + ``SESAME.inpaint`` for a given photo and hole (1 = re-render)."""

    def __init__(self, method):
        super().__init__()
        model = method.settings.model
        self.encoding = Encoding(method.spec.num_classes, model.dontcare_channel, model.instance_edges)
        self.generator = method.generator
        self.inside_hole_only = bool(model.layout_inside_hole_only)
        self.mix_real_fake = bool(model.mix_real_fake)

    def forward(self, label: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        photo, hole = rest[-2], rest[-1]
        layout = self.encoding(label, rest[0] if self.encoding.edges else None)
        if self.inside_hole_only:
            layout = layout * hole
        generated = self.generator(photo * (1.0 - hole), torch.cat([layout, hole], dim=1))
        if self.mix_real_fake:
            generated = (1.0 - hole) * photo + hole * generated
        return generated.clamp(-1.0, 1.0)


# --------------------------------------------------------------------------------------------- per method
def graph_name(method) -> str:
    """The method's graph (``Method.export_graph``), or the one-line ExportError of a method that has none."""
    name = getattr(method, "export_graph", None)
    if name not in GRAPHS:
        raise ExportError(f"ONNX export of {method.name} runs is not supported (supported: "
                          f"{', '.join(EXPORTABLE_METHODS)}); fix: synthesize with --checkpoint RUN")
    return name


def graph_inputs(method) -> tuple[list[GraphInput], dict]:
    """The graph's inputs and the sampling facts the runtime needs to draw them (per graph)."""
    height, width = method.image_size
    label = GraphInput("label", "int64", ("batch", height, width), "class ids at the model size; other values = void")
    instance = GraphInput("instance", "int64", ("batch", height, width),
                          "instance ids for the edge channel (pass the label map when there are none)")
    name = graph_name(method)
    if name == "crn":
        return [label], {"num_outputs": method.settings.model.num_outputs}
    if name == "spade":
        inputs = [label] + ([instance] if method.settings.model.instance_edges else [])
        extra = method.layout_inputs()
        inputs += [GraphInput(key, "float32", ("batch", facts["channels"], height, width), facts["about"])
                   for key, facts in extra.items()]
        sampling = {"layout_inputs": extra} if extra else {}
        if method.encoder is None:  # the eager refusal's advice travels with the file (LGGAN has no VAE mode)
            return inputs, {"z_dim": 0, "vae_fix": method.vae_fix, **sampling}
        vae = method.settings.vae
        inputs.append(GraphInput("z", "float32", ("batch", vae.z_dim),
                                 "latent code: N(0, I), or μ + σ·ε of a style photo (NAME.style.onnx)"))
        return inputs, {"z_dim": vae.z_dim, "style_z": vae.style_z, **sampling}
    if name == "oasis":
        z_dim = method.settings.model.z_dim
        if not z_dim:
            return [label], {"z_dim": 0}
        noise = GraphInput("noise", "float32", ("batch", z_dim, height, width),
                           f"3D noise ({method.settings.model.noise_mode} by default; see models/oasis.draw_noise)")
        return [label, noise], {"z_dim": z_dim, "noise_mode": method.settings.model.noise_mode}
    if name == "pix2pixhd":
        inputs = [label] + ([instance] if method.settings.model.instance_edges else [])
        if method.encoder is None:
            return inputs, {"feat_num": 0}
        features = method.settings.features
        inputs.append(GraphInput("features", "float32", ("batch", features.feat_num, height, width),
                                 "one cluster centre per instance, broadcast over its pixels (§3.4)"))
        clusters = method.clusters
        return inputs, {"feat_num": features.feat_num, "n_clusters": features.n_clusters,
                        "centers": clusters.centers.tolist(), "counts": clusters.counts.tolist()}
    if name == "sims":
        return [label, GraphInput("canvas", "float32", ("batch", 3, height, width), "pasted segments in [-1, 1]"),
                GraphInput("mask", "float32", ("batch", 1, height, width), "1 where the canvas holds pixels")], {}
    if name == "sesame":
        inputs = [label] + ([instance] if method.settings.model.instance_edges else [])
        inputs += [GraphInput("photo", "float32", ("batch", 3, height, width), "the photo in [-1, 1] (zeros: none)"),
                   GraphInput("hole", "float32", ("batch", 1, height, width), "1 = re-render, 0 = keep the photo")]
        return inputs, {}
    raise AssertionError(f"graph {name} has no inputs")  # unreachable: graph_name checks GRAPHS


GRAPHS = {"crn": CRNGraph, "spade": SPADEGraph, "oasis": OASISGraph, "pix2pixhd": Pix2PixHDGraph,
          "sims": SIMSGraph, "sesame": SESAMEGraph}


def build_graph(method) -> tuple[nn.Module, list[GraphInput], dict]:
    """The module to trace (sharing the method's weights), its inputs and the sampling facts."""
    inputs, sampling = graph_inputs(method)
    return GRAPHS[graph_name(method)](method).eval(), inputs, sampling


def inference_copy(module: nn.Module) -> nn.Module:
    """``module`` with parametrized weights (spectral norm) replaced by the tensors they give at inference.

    In eval mode ``parametrizations.spectral_norm`` divides by σ from its stored u, v without a power iteration,
    so the copy computes exactly what the eager module does; ONNX has no ``vdot`` to compute σ in the graph, and
    the tracer refuses cached parametrizations.  A deep copy, because ``remove_parametrizations`` would also strip
    the weight property from the class the original shares.
    """
    from torch.nn.utils import parametrize

    if not any(parametrize.is_parametrized(child) for child in module.modules()):
        return module
    plain = copy.deepcopy(module).eval()
    with torch.no_grad():
        for child in list(plain.modules()):
            if not parametrize.is_parametrized(child):
                continue
            values = {name: getattr(child, name).detach().clone() for name in child.parametrizations.keys()}
            child.__class__ = child.__class__.__bases__[0]  # the un-parametrized class (e.g. nn.Conv2d)
            del child._modules["parametrizations"]
            for name, value in values.items():
                child.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return plain


def example_inputs(inputs: list[GraphInput], spec, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs of the right shapes (label ids include void) — for tracing and for checking."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for item in inputs:
        shape = (batch, *item.shape[1:])
        if item.dtype == "int64":
            high = spec.num_classes + (1 if spec.ignore_index is not None else 0)
            ids = torch.randint(0, high, shape, generator=generator)
            if spec.ignore_index is not None:
                ids = torch.where(ids == spec.num_classes, torch.full_like(ids, spec.ignore_index), ids)
            tensors.append(ids)
        elif item.name in ("mask", "hole"):
            tensors.append((torch.rand(shape, generator=generator) > 0.5).float())
        elif item.name in ("canvas", "photo"):
            tensors.append(torch.rand(shape, generator=generator) * 2 - 1)
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tensors


# --------------------------------------------------------------------------------------------- writing
def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' package; fix: pip install 'inverseg[onnx]'") from None
    return onnx


def _trace(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
           opset: int) -> None:
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    module = inference_copy(module)
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)


def _write_metadata(path: Path, entries: dict[str, str], doc: str) -> None:
    onnx = _require_onnx()
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.doc_string = doc
    onnx.save(model, str(path))


def export_onnx(pipe, out: str | Path, opset: int = DEFAULT_OPSET) -> list[Path]:
    """Write ``pipe``'s inference network to ``out`` (and SPADE's style encoder next to it); returns the files.

    ``pipe`` is a :class:`~inverseg.pipeline.Pipeline` (weights loaded, EMA when the run has it).
    """
    _require_onnx()
    method = pipe.method
    graph = graph_name(method)  # before any file is written: an unsupported method is a one-line error
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module, inputs, sampling = build_graph(method)
    names = [item.name for item in inputs]
    output = "images" if graph == "crn" else "image"
    _trace(module, tuple(example_inputs(inputs, pipe.spec)), out, names, [output], opset)
    written = [out]
    height, width = pipe.image_size
    outputs = [{"name": output, "dtype": "float32",
                "shape": ["batch", *(["k"] if output == "images" else []), 3, height, width],
                "about": "images in [-1, 1]"}]
    if graph == "spade" and method.encoder is not None:
        style_path = out.with_name(out.stem + ".style.onnx")
        style_input = GraphInput("photo", "float32", ("batch", 3, height, width), "style photo in [-1, 1]")
        _trace(StyleGraph(method).eval(), (example_inputs([style_input], pipe.spec)[0],), style_path,
               ["photo"], ["mu", "logvar"], opset)
        _write_metadata(style_path, {"inverseg.role": f"{method.name} style encoder", "inverseg.generator": out.name},
                        f"{method.name}'s VAE image encoder: photo (B,3,H,W) in [-1,1] → mu, logvar (B, z_dim)")
        sampling["style_encoder"] = style_path.name
        written.append(style_path)
    config = getattr(pipe, "config", None)
    entries = {
        "inverseg.format": str(FORMAT_VERSION),
        "inverseg.method": method.name,
        "inverseg.graph": graph,
        "inverseg.image_size": json.dumps(list(pipe.image_size)),
        "inverseg.spec": json.dumps(pipe.spec.to_dict()),
        "inverseg.inputs": json.dumps([asdict(item) for item in inputs]),
        "inverseg.outputs": json.dumps(outputs),
        "inverseg.sampling": json.dumps(sampling),
        "inverseg.controls": json.dumps(replace(method.inference_controls(), **GRAPH_LIMITS.get(graph, {})).as_dict()),
        "inverseg.source": str(getattr(pipe, "source", "")),
        "inverseg.torch": torch.__version__,
    }
    if config is not None and hasattr(config, "to_dict"):
        entries["inverseg.config"] = json.dumps(config.to_dict())
    doc = (f"inverseg {method.name} at {height}x{width}: inputs {', '.join(names)} → {output} in [-1, 1]; "
           f"see the inverseg.* metadata")
    _write_metadata(out, entries, doc)
    return written


def check_export(pipe, path: str | Path, batch: int = 2, tolerance: float = 1e-3) -> float:
    """Run the written graph once on random inputs against the eager network; the max abs difference.

    An ExportError when it exceeds ``tolerance``.  The tests hold 1e-4 on tiny models; wide networks sum more
    terms per output in a different order (oneDNN vs onnxruntime's MLAS): a random-weight ``crn-256p`` differs
    by up to 5.5e-3 (benchmarks/onnx_speed.py), still below one uint8 level (7.8e-3).
    """
    from .runtime import open_session

    module, inputs, _ = build_graph(pipe.method)
    tensors = example_inputs(inputs, pipe.spec, batch=batch, seed=1)
    with torch.no_grad():
        eager = module(*tensors).numpy()
    session = open_session(Path(path))
    output = session.run(None, {item.name: tensor.numpy() for item, tensor in zip(inputs, tensors)})[0]
    difference = float(abs(output - eager).max())
    if not difference <= tolerance:
        raise ExportError(f"{path}: onnxruntime differs from the eager network by {difference:.2e} (> {tolerance}); "
                          f"fix: accept it with --tolerance (one uint8 level is 7.8e-3), or use --checkpoint RUN")
    return difference
