"""The ONNX side of ``inverseg synthesize --model model.onnx``: a Pipeline whose "method" runs onnxruntime.

:class:`OnnxSampler` stands in for a ``Method`` in :class:`~inverseg.pipeline.Pipeline` (``sample``, ``device``,
``last_extras``), so label reading, resizing, style photos and SESAME's ``edit`` work unchanged.  Its ``sample``
draws the random graph inputs with the same torch calls, in the same order, as the eager ``method.sample`` — so
``seed=s`` gives the same images on both backends (up to float rounding, checked ≤ 1e-4 by the tests); SAFM's
shape descriptor, an input of its graph, is computed here with the eager code.  Only the model file is read:
classes, size and sampling facts come from its ``inverseg.*`` metadata.  Sampling is per graph
(``inverseg.graph``: SPADE's forks CC-FPSE, LGGAN and SAFM use ``_sample_spade``).

Not on this backend (a TypeError with the fix): OASIS's ``resample_classes`` / ``resample_mask``, pix2pixHD's
``style_image`` (its instance pooling has no graph form), and SIMS's retrieved canvases (the memory bank and the
retrieval networks stay in Python): SIMS renders from an empty canvas, or from ``canvas=(image, mask)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import build_run_config
from ..labels import LabelSpec
from ..methods.base import InferenceControls
from .onnx import FORMAT_VERSION, ExportError


def _runtime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("the ONNX backend needs onnxruntime; fix: pip install 'inverseg[onnx]'") from None
    return onnxruntime


def open_session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session; ``threads`` (default: torch's intra-op threads) so that both backends use the
    same number of cores."""
    runtime = _runtime()
    options = runtime.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    return runtime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def read_metadata(session, path: Path) -> dict[str, str]:
    props = dict(session.get_modelmeta().custom_metadata_map)
    if "inverseg.method" not in props:
        raise ExportError(f"{path}: not an inverseg export (no inverseg.* metadata); fix: write it with "
                          f"inverseg export --checkpoint RUN --format onnx --out {path.name}")
    if int(props.get("inverseg.format", "0")) > FORMAT_VERSION:
        raise ExportError(f"{path}: exported by a newer inverseg (format {props['inverseg.format']}); "
                          f"fix: upgrade inverseg")
    return props


class OnnxSampler:
    """A method's ``sample`` on onnxruntime (see the module docstring)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such ONNX file; fix: inverseg export --checkpoint RUN --format onnx "
                              f"--out {self.path}")
        self.threads = threads
        self.session = open_session(self.path, threads)
        meta = read_metadata(self.session, self.path)
        self.name = meta["inverseg.method"]
        self.graph = meta.get("inverseg.graph", self.name)  # files of format 1 before it was stored: = method
        if not hasattr(self, f"_sample_{self.graph}"):
            raise ExportError(f"{self.path}: its graph {self.graph!r} is unknown to this inverseg; fix: upgrade "
                              f"inverseg")
        self.spec = LabelSpec.from_dict(json.loads(meta["inverseg.spec"]))
        self.image_size = tuple(json.loads(meta["inverseg.image_size"]))
        self.input_names = [item["name"] for item in json.loads(meta["inverseg.inputs"])]
        self.sampling = json.loads(meta["inverseg.sampling"])
        self.controls_stored = json.loads(meta.get("inverseg.controls", "{}"))
        self.config = build_run_config(json.loads(meta["inverseg.config"])) if "inverseg.config" in meta else None
        self.edits_photos = self.graph == "sesame"
        self.last_extras: dict[str, torch.Tensor] = {}
        self.last_noise: torch.Tensor | None = None
        self._style_session = None
        self._clusters = None
        self._spd_cache = None
        self.device = torch.device("cpu")

    def eval(self) -> "OnnxSampler":
        return self

    def inference_controls(self) -> InferenceControls:
        """The eager method's controls less what its graph cannot do (``GRAPH_LIMITS``), as stored at export; a file
        written before they were stored offers one image and no options (re-export it for more)."""
        return InferenceControls(**self.controls_stored)

    # ------------------------------------------------------------------ running the graph
    def run(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Feed the named inputs (torch tensors) and return the graph's output as a tensor."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise TypeError(f"{self.path.name} needs the inputs {', '.join(self.input_names)}; missing "
                            f"{', '.join(missing)}")
        feeds = {name: inputs[name].detach().cpu().contiguous().numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def _instance(self, label: torch.Tensor, instance) -> dict[str, torch.Tensor]:
        """The ``instance`` feed when the graph has one: the given map (resized like the eager code) or the label."""
        if "instance" not in self.input_names:
            return {}
        if instance is None:
            return {"instance": label}
        instance = torch.as_tensor(instance)
        instance = instance.unsqueeze(0) if instance.dim() == 2 else instance
        if instance.shape[-2:] != label.shape[-2:]:
            instance = torch.nn.functional.interpolate(instance[:, None].float(), size=label.shape[-2:],
                                                       mode="nearest")[:, 0]
        return {"instance": instance.long().expand_as(label)}

    @staticmethod
    def _deterministic(name: str, k: int) -> None:
        if k > 1:
            raise ValueError(f"this {name} export is deterministic: ask for k=1")

    # ------------------------------------------------------------------ sampling, per method
    @torch.no_grad()
    def sample(self, label: torch.Tensor, k: int = 1, generator: torch.Generator | None = None,
               **style) -> torch.Tensor:
        """(B,H,W) ids → (B,k,3,H,W) in [-1, 1], drawing the random inputs as the eager method does."""
        label = label.long().cpu()
        return getattr(self, f"_sample_{self.graph}")(label, k, generator, **style)

    def _sample_crn(self, label, k, generator, **style):
        if style:
            raise TypeError(f"CRN has no style inputs; got {', '.join(style)}")
        available = self.sampling["num_outputs"]
        if k > available:
            raise ValueError(f"this CRN emits {available} image(s) per layout (model.num_outputs={available}); "
                             f"fix: ask for k ≤ {available}")
        return self.run(label=label)[:, :k]

    def _layout_inputs(self, label: torch.Tensor, instance) -> dict[str, torch.Tensor]:
        """The graph's ``layout_inputs`` (``SPADE.layout_inputs``), computed from the maps as the method does."""
        feeds = {}
        for name, facts in self.sampling.get("layout_inputs", {}).items():
            if name != "spd":
                raise ExportError(f"{self.path}: input {name!r} is unknown to this inverseg; fix: upgrade inverseg")
            from ..labels.shape_context import SPDCache, shape_descriptor
            from ..methods.safm import spd_regions

            if self._spd_cache is None:
                self._spd_cache = SPDCache(facts.get("cache_mb", 0.0))
            regions = spd_regions(label, instance, facts["source"], facts["min_instance_id"], self.spec.num_classes)
            feeds[name] = shape_descriptor(regions, self._spd_cache).float()
        return feeds

    def _sample_spade(self, label, k, generator, style_image=None, instance=None, **unknown):
        """SPADE and its forks (CC-FPSE, LGGAN, SAFM): the messages name the method as its eager ``sample`` does."""
        from ..models.spade import reparameterize

        name = self.name.upper()
        if unknown:
            raise TypeError(f"{name} takes style_image=IMAGE or instance=MAP; got {', '.join(unknown)}")
        feeds = {"label": label, **self._instance(label, instance), **self._layout_inputs(label, instance)}
        z_dim = self.sampling["z_dim"]
        if not z_dim:
            if style_image is not None:
                fix = self.sampling.get("vae_fix", "train with vae.enabled=true")
                raise TypeError(f"this {name} was trained without the VAE image encoder, so it cannot take a style "
                                f"image; fix: {fix}")
            self._deterministic(name, k)
            return self.run(**feeds)[:, None]
        batch = label.shape[0]
        if style_image is not None:
            image = style_image.float().cpu()
            image = image.expand(batch, -1, -1, -1) if image.shape[0] == 1 else image
            mu, logvar = (torch.from_numpy(array) for array in
                          self.style_session().run(None, {"photo": image.contiguous().numpy()}))
        outputs = []
        for _ in range(k):
            if style_image is None:
                z = torch.randn(batch, z_dim, generator=generator)
            elif self.sampling.get("style_z") == "mean":
                z = mu
            else:
                z = reparameterize(mu, logvar, generator)
            outputs.append(self.run(**feeds, z=z))
        return torch.stack(outputs, dim=1)

    def style_session(self):
        """The VAE style encoder, ``NAME.style.onnx`` next to the model (opened on first use)."""
        if self._style_session is None:
            path = self.path.with_name(self.sampling.get("style_encoder") or self.path.stem + ".style.onnx")
            if not path.is_file():
                raise ExportError(f"{path}: the style encoder of {self.path.name} is missing; fix: keep the "
                                  f"files inverseg export wrote together")
            self._style_session = open_session(path, self.threads)
        return self._style_session

    def _sample_oasis(self, label, k, generator, noise=None, noise_mode=None, **unknown):
        from ..models.oasis import NOISE_MODES, draw_noise

        if unknown:
            hint = " (re-sampling a region needs the checkpoint: use --checkpoint RUN)" \
                if {"resample_classes", "resample_mask"} & set(unknown) else ""
            raise TypeError(f"the ONNX OASIS takes noise= and noise_mode=; got {', '.join(unknown)}{hint}")
        z_dim = self.sampling["z_dim"]
        if not z_dim:
            if noise is not None:
                raise ValueError("this OASIS has no 3D noise (model.z_dim=0): it is deterministic")
            self._deterministic("OASIS", k)
            self.last_noise = None
            return self.run(label=label)[:, None]
        mode = noise_mode or self.sampling["noise_mode"]
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")
        batch, size = label.shape[0], tuple(label.shape[-2:])
        if noise is None:
            if generator is None:  # as the eager sample: a fresh unseeded generator, the global RNG untouched
                generator = torch.Generator()
                generator.seed()
            noises = torch.stack([draw_noise(label, z_dim, mode, self.spec.num_classes, generator)
                                  for _ in range(k)], dim=1)
        else:
            noises = torch.as_tensor(np.asarray(noise) if not isinstance(noise, torch.Tensor) else noise).float()
            noises = noises[None, None] if noises.dim() == 3 else noises
            noises = (noises[:, None] if noises.shape[0] in (1, batch) else noises[None]) if noises.dim() == 4 \
                else noises
            if noises.dim() != 5 or tuple(noises.shape[2:]) != (z_dim, *size) or noises.shape[0] not in (1, batch) \
                    or noises.shape[1] not in (1, k):
                raise ValueError(f"noise must have shape (B, k, {z_dim}, {size[0]}, {size[1]}) or "
                                 f"(B, {z_dim}, {size[0]}, {size[1]}), got {tuple(noises.shape)}")
            noises = noises.expand(batch, k, -1, -1, -1)
        self.last_noise = noises
        return torch.stack([self.run(label=label, noise=noises[:, i]) for i in range(k)], dim=1)

    def clusters(self):
        """pix2pixHD's per-class cluster centres, rebuilt from the metadata."""
        if self._clusters is None:
            from ..models.pix2pixhd import FeatureClusters

            centers = torch.tensor(self.sampling["centers"], dtype=torch.float32)
            self._clusters = FeatureClusters(centers.shape[0], centers.shape[1], centers.shape[2])
            self._clusters.centers.copy_(centers)
            self._clusters.counts.copy_(torch.tensor(self.sampling["counts"], dtype=torch.long))
        return self._clusters

    def _cluster_styles(self, style, rows: torch.Tensor):
        """``style``: one cluster index for every segment, or {class id or name: cluster} (others random)."""
        n_clusters = self.sampling["n_clusters"]

        def index(value) -> int:
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise TypeError(f"style must be a cluster index (int) or a mapping class → cluster, got {value!r}")
            if not 0 <= int(value) < n_clusters:
                raise ValueError(f"style must be a cluster index 0–{n_clusters - 1}, got {value}")
            return int(value)

        if not isinstance(style, dict):
            return index(style)
        per_row = torch.full((self.spec.num_classes + 1,), -1, dtype=torch.long)
        for key, cluster in style.items():
            if isinstance(key, str) and not key.lstrip("-").isdigit():
                if key not in self.spec.class_names:
                    raise ValueError(f"style: no class named {key!r}; classes: {', '.join(self.spec.class_names)}")
                key = self.spec.class_names.index(key)
            if not 0 <= int(key) < self.spec.num_classes:
                raise ValueError(f"style: class {key} is not one of 0–{self.spec.num_classes - 1}")
            per_row[int(key)] = index(cluster)
        return per_row[rows]

    def _sample_pix2pixhd(self, label, k, generator, style=None, style_image=None, instance=None, **unknown):
        from ..methods.pix2pixhd import Pix2PixHD
        from ..nn.pooling import broadcast_segments

        if unknown:
            raise TypeError(f"pix2pixHD takes style=CLUSTER or instance=MAP; got {', '.join(unknown)}")
        feeds = {"label": label, **self._instance(label, instance)}
        if not self.sampling["feat_num"]:
            if style is not None or style_image is not None:
                raise TypeError("this pix2pixHD was trained without the instance-wise feature encoder "
                                "(features.enabled=false), so it has no style")
            self._deterministic("pix2pixHD", k)
            return self.run(**feeds)[:, None]
        if style_image is not None:
            raise TypeError("the ONNX pix2pixHD takes cluster styles only (style=CLUSTER); encoding a style photo "
                            "needs the checkpoint: use --checkpoint RUN")
        index, keys = Pix2PixHD.segments(label, instance)
        classes = keys[:, 2]
        rows = torch.where((classes >= 0) & (classes < self.spec.num_classes), classes,
                           torch.full_like(classes, self.spec.num_classes))
        if style is not None:
            style = self._cluster_styles(style, rows)
        outputs = []
        for _ in range(k):
            features = broadcast_segments(self.clusters().choose(rows, style, generator), index)
            outputs.append(self.run(**feeds, features=features))
        return torch.stack(outputs, dim=1)

    def _sample_sims(self, label, k, generator, canvas="empty", **style):
        if style:
            raise TypeError(f"SIMS has no style inputs; got {', '.join(style)}")
        batch, (height, width) = label.shape[0], label.shape[-2:]
        if isinstance(canvas, str):
            if canvas != "empty":
                raise TypeError("the ONNX SIMS has no memory bank: it renders from canvas='empty' or a given "
                                "canvas=(image (B,3,H,W) in [-1,1], mask (B,H,W)); retrieved canvases need "
                                "--checkpoint RUN")
            image, mask = torch.full((batch, 3, height, width), -1.0), torch.zeros(batch, 1, height, width)
        else:
            image, mask = canvas
            image = torch.as_tensor(image).float().expand(batch, -1, -1, -1)
            mask = torch.as_tensor(mask).float()
            mask = (mask[None] if mask.dim() == 2 else mask)
            mask = (mask[:, None] if mask.dim() == 3 else mask).expand(batch, -1, -1, -1)
        output = self.run(label=label, canvas=image, mask=mask)
        display = torch.where(mask.bool(), image, torch.full_like(image, -1.0))
        self.last_extras = {"canvas": display[:, None].expand(-1, k, -1, -1, -1)}
        return output[:, None].expand(-1, k, -1, -1, -1)  # one canvas: k equal images, as the eager empty canvas

    def _sample_sesame(self, label, k, generator, image=None, mask=None, instance=None, **unknown):
        if unknown:
            raise TypeError(f"SESAME takes image=PHOTO, mask=REGION or instance=MAP; got {', '.join(unknown)}")
        self._deterministic("SESAME", k)
        batch, size = label.shape[0], tuple(label.shape[-2:])
        if image is None:
            if mask is not None:
                raise TypeError("a mask needs the photo it applies to: pass image= as well")
            photo, hole = torch.zeros(batch, 3, *size), torch.ones(batch, 1, *size)
        else:
            if mask is None:
                raise TypeError("an edit needs mask= (the region to re-render, non-zero inside)")
            photo = image.float().cpu().expand(batch, -1, -1, -1)
            hole = torch.as_tensor(mask).cpu()
            hole = (hole[None] if hole.dim() == 2 else hole).ne(0).float()[:, None].expand(batch, -1, -1, -1)
            if tuple(photo.shape[-2:]) != size or tuple(hole.shape[-2:]) != size:
                raise ValueError(f"the photo and mask must be {size} like the layout")
        return self.run(label=label, **self._instance(label, instance), photo=photo, hole=hole)[:, None]


def load_onnx_pipeline(path: str | Path, threads: int | None = None):
    """A :class:`~inverseg.pipeline.Pipeline` running an ``inverseg export`` file on onnxruntime."""
    from ..pipeline import Pipeline

    sampler = OnnxSampler(path, threads)
    return Pipeline(sampler, sampler.spec, sampler.image_size, sampler.config, source=str(sampler.path))
