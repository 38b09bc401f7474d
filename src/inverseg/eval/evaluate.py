"""One evaluation: generated images + their input layouts + the real images → every number and its protocol.

Protocol (pinned, written into every result):

* Evaluation resolution H×W: the evaluator's (our evaluators are trained at one resolution), else ``size``,
  else the generated images' size.  Real images: the dataset pipeline — the original file resized with PIL
  bicubic straight to H×W; labels nearest.  Generated images of another size: PIL bicubic to H×W; input
  layouts: nearest.
* Segmentation: the evaluator segments generated image 0 of every layout; scores against the layout (void
  pixels excluded); the same evaluator on the real images of the split gives the reference ceiling.
* Fréchet and kernel distances: generated image 0 of every layout vs the real images of the split; next to it
  the real-vs-real value (the other split — train — vs the split) so a reader can judge the size of the
  number for sets this small.
* Diversity (k ≥ 2): mean pairwise LPIPS-style distance between the k images of a layout, averaged over layouts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data import DataConfig, open_dataset
from ..labels import LabelSpec
from ..utils.images import from_uint8, to_uint8
from .diversity import DIVERSITY_NAME, LPIPS_LAYERS, PerceptualDistance
from .features import FeatureExtractor, cached_features, stats_key
from .metrics import confusion_matrix, frechet_distance_features, kernel_distance, segmentation_scores
from .segmenter import MobileNetSegmenter

EVAL_FORMAT = "inverseg-eval/1"
IMAGE_RESIZE = "PIL bicubic from the original file to exactly H×W (aspect ratio not preserved)"
GENERATED_RESIZE = "PIL bicubic to H×W when the generated size differs (none otherwise)"


@dataclass
class GeneratedSet:
    """Generated images grouped by layout: ``images[i]`` are the k samples (3,H,W in [-1,1]) for ``labels[i]``."""

    names: list[str]
    images: list[list[torch.Tensor]]
    labels: list[torch.Tensor]
    generated_size: tuple[int, int]

    @property
    def k(self) -> int:
        return min(len(samples) for samples in self.images) if self.images else 0


@dataclass
class EvalData:
    """Which real data the evaluation compares against."""

    dataset: str
    path: str
    split: str = "val"
    palette: str | None = None
    ignore_id: int | None = None

    def config(self, size: tuple[int, int] | None) -> DataConfig:
        return DataConfig(dataset=self.dataset, path=self.path, size=size, resize="exact", palette=self.palette,
                          ignore_id=self.ignore_id)

    def open(self, size: tuple[int, int] | None, split: str | None = None):
        return open_dataset(self.config(size), split=split or self.split, augment=False)

    def reference_split(self) -> str:
        return "val" if self.split == "train" else "train"


# ---------------------------------------------------------------------------------------------------------
# Resizing at the I/O boundary
# ---------------------------------------------------------------------------------------------------------
def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3,h,w) [-1,1] → (3,H,W) with PIL bicubic on the uint8 image, the same filter as the dataset pipeline."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    picture = Image.fromarray(to_uint8(image)).resize((size[1], size[0]), Image.BICUBIC)
    return from_uint8(np.array(picture))


def resize_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    picture = Image.fromarray(label.numpy().astype(np.int32)).resize((size[1], size[0]), Image.NEAREST)
    return torch.from_numpy(np.asarray(picture).astype(np.int64))


# ---------------------------------------------------------------------------------------------------------
# Producing the generated set
# ---------------------------------------------------------------------------------------------------------
def synthesize_split(pipe, data: EvalData, size: tuple[int, int], k: int = 1, seed: int = 0,
                     limit: int | None = None, progress=None) -> GeneratedSet:
    """Run the Pipeline on every layout of the split; layout i uses seed ``seed + i`` (reproducible).

    The generator gets each label map exactly as in training — the dataset pipeline's nearest resize of the
    original file to the model's size — and the layout it is scored against is the same file resized nearest
    to the evaluation resolution ``size``.
    """
    inputs = data.open(tuple(pipe.image_size))
    scoring = inputs if tuple(size) == tuple(pipe.image_size) else data.open(tuple(size))
    indices = list(range(len(inputs)))[:limit]
    names, images, labels = [], [], []
    for index in (progress(indices) if progress else indices):
        sample = inputs[index]
        pictures = pipe(sample["label"], k=k, seed=seed + index)
        names.append(sample["name"])
        images.append([from_uint8(np.array(p.convert("RGB"))) for p in pictures])
        labels.append(scoring[index]["label"] if scoring is not inputs else sample["label"])
    return GeneratedSet(names, images, labels, tuple(pipe.image_size))


def read_image_folder(images_dir: str | Path, labels_dir: str | Path, spec: LabelSpec, palette=None) -> GeneratedSet:
    """Images matched to label files by name: ``NAME.png`` or ``NAME_0.png, NAME_1.png, …`` (what
    ``inverseg synthesize --k K`` writes) for the label ``NAME.png``.  A label without images is an error;
    images without a label are an error too (a typo would otherwise silently shrink the set)."""
    from ..data.base import IMAGE_SUFFIXES, list_files, read_label, read_rgb

    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder not found")
    label_files = {p.stem: p for p in list_files(labels_dir, (".png", ".bmp", ".tif", ".tiff"))}
    if not label_files:
        raise FileNotFoundError(f"{labels_dir}: no label PNGs")
    groups: dict[str, list[tuple[int, Path]]] = {}
    unmatched = []
    for path in list_files(images_dir, IMAGE_SUFFIXES):
        stem = path.stem
        if stem in label_files:
            groups.setdefault(stem, []).append((0, path))
            continue
        base, _, number = stem.rpartition("_")
        if number.isdigit() and base in label_files:
            groups.setdefault(base, []).append((int(number), path))
        else:
            unmatched.append(path.name)
    if unmatched:
        raise FileNotFoundError(f"{images_dir}: {len(unmatched)} image(s) match no label file in {labels_dir} "
                                f"(e.g. {unmatched[0]}); names must be LABEL.png or LABEL_i.png")
    missing = sorted(set(label_files) - set(groups))
    if missing:
        raise FileNotFoundError(f"{labels_dir}: {len(missing)} label(s) have no generated image in {images_dir} "
                                f"(e.g. {missing[0]})")
    names, images, labels, sizes = [], [], [], set()
    for name in sorted(groups):
        samples = [from_uint8(read_rgb(path)) for _, path in sorted(groups[name])]
        sizes.update(tuple(s.shape[-2:]) for s in samples)
        names.append(name)
        images.append(samples)
        labels.append(torch.from_numpy(read_label(label_files[name], spec, palette)))
    if len(sizes) != 1:
        raise ValueError(f"{images_dir}: images have different sizes {sorted(sizes)}; generate them at one size")
    return GeneratedSet(names, images, labels, sizes.pop())


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------
def _segment(segmenter, images: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int,
             batch_size: int) -> torch.Tensor:
    confusion = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64)
    for start in range(0, len(images), batch_size):
        batch = torch.stack(images[start:start + batch_size])
        target = torch.stack(labels[start:start + batch_size])
        confusion += confusion_matrix(segmenter.predict(batch), target, num_classes)
    return confusion


def evaluate_set(generated: GeneratedSet, data: EvalData, segmenter, extractor: FeatureExtractor,
                 size: tuple[int, int], perceptual: PerceptualDistance | None = None, source: dict | None = None,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, batch_size: int = 16,
                 use_cache: bool = True, log=print) -> dict:
    """Every number of one evaluation, with the protocol that produced it (a JSON-ready dict)."""
    started = time.monotonic()
    real = data.open(size)
    spec = real.spec
    if isinstance(segmenter, MobileNetSegmenter) and tuple(segmenter.size) != tuple(size):
        raise ValueError(f"the evaluator was trained at {segmenter.size[0]}x{segmenter.size[1]}, not at "
                         f"{size[0]}x{size[1]}; train one at this resolution")
    first = [resize_image(samples[0], size) for samples in generated.images]
    layouts = [resize_label(label, size) for label in generated.labels]
    for label, name in zip(layouts, generated.names):
        spec.validate(label, source=f"layout {name}")

    log(f"segmenting {len(first)} generated and {len(real)} real images at {size[0]}x{size[1]}")
    real_samples = [real[i] for i in range(len(real))]
    real_images = [s["image"] for s in real_samples]
    generated_conf = _segment(segmenter, first, layouts, spec.num_classes, batch_size)
    real_conf = _segment(segmenter, real_images, [s["label"] for s in real_samples], spec.num_classes,
                         batch_size)

    log(f"features ({extractor.fd_name}): generated, real {data.split}, real {data.reference_split()}")
    generated_features = extractor.features(first, batch_size)
    real_features, real_status = cached_features(
        stats_key(data.dataset, data.path, data.split, spec.name, size, IMAGE_RESIZE,
                  [s["name"] for s in real_samples], extractor),
        lambda: extractor.features(real_images, batch_size), use_cache)
    reference = _reference_features(data, size, spec, extractor, batch_size, use_cache, log)

    kid = kernel_distance(generated_features, real_features, kid_subsets, kid_subset_size)
    frechet = {"name": extractor.fd_name,
               "generated_vs_real": frechet_distance_features(generated_features, real_features)}
    kernel = {"name": extractor.kd_name, "generated_vs_real": kid}
    if reference is not None:
        ref_features, ref_split = reference
        frechet["real_reference_vs_real"] = frechet_distance_features(ref_features, real_features)
        kernel["real_reference_vs_real"] = kernel_distance(ref_features, real_features, kid_subsets,
                                                           kid_subset_size)
        frechet["reference_split"] = kernel["reference_split"] = ref_split

    diversity = None
    if generated.k >= 2:
        perceptual = perceptual or PerceptualDistance()
        log(f"diversity: {generated.k} samples × {len(generated.images)} layouts")
        values = [perceptual.mean_pairwise(torch.stack([resize_image(s, size) for s in samples[:generated.k]]))
                  for samples in generated.images]
        diversity = {"name": DIVERSITY_NAME, "mean": float(np.mean(values)), "std": float(np.std(values)),
                     "layouts": len(values), "k": generated.k, "backbone": perceptual.description,
                     "weights": perceptual.record, "layers": list(LPIPS_LAYERS)}

    generated_scores = segmentation_scores(generated_conf, spec.class_names)
    real_scores = segmentation_scores(real_conf, spec.class_names)
    protocol = {
        "resolution": list(size),
        "generated_size": list(generated.generated_size),
        "real_image_resize": IMAGE_RESIZE,
        "generated_image_resize": GENERATED_RESIZE,
        "label_resize": "nearest",
        "ignore_index": spec.ignore_index,
        "id_mapping": segmenter.id_mapping,
        "evaluator": segmenter.identity,
        "feature_extractor": extractor.identity(),
        "samples_per_layout": generated.k,
        "scored_sample": "sample 0 of each layout for segmentation, FD and KD; all k for diversity",
        "kid": {"kernel": "(x·y/d + 1)^3", "subsets": kid["subsets"], "subset_size": kid["subset_size"]},
        "num_images": {"generated": len(first), "real": len(real_samples),
                       "real_reference": len(reference[0]) if reference is not None else 0},
        "real_stats": real_status,
    }
    result = {
        "format": EVAL_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": source or {},
        "dataset": {"kind": data.dataset, "path": str(Path(data.path).resolve()), "split": data.split,
                    "label_set": spec.name, "num_classes": spec.num_classes, "class_names": list(spec.class_names)},
        "protocol": protocol,
        "metrics": {
            "segmentation": {"generated": generated_scores, "real": real_scores},
            "frechet": frechet,
            "kernel": kernel,
            "diversity": diversity,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    result["summary"] = summarize(result)
    return result


def _reference_features(data: EvalData, size, spec, extractor, batch_size, use_cache, log):
    """Features of the other split's real images (train when scoring val), or None when it does not exist."""
    split = data.reference_split()
    try:
        reference = data.open(size, split=split)
    except Exception as error:  # e.g. a folder dataset without a train split: the value is simply not reported
        log(f"no real-vs-real reference ({split} split unavailable: {error})")
        return None
    names = [pair.name for pair in reference.pairs] if hasattr(reference, "pairs") else [str(len(reference))]
    features, _ = cached_features(
        stats_key(data.dataset, data.path, split, spec.name, size, IMAGE_RESIZE, names, extractor),
        lambda: extractor.features((reference[i]["image"] for i in range(len(reference))), batch_size), use_cache)
    return features, split


def summarize(result: dict) -> dict:
    """The flat row ``inverseg compare`` prints."""
    metrics, source = result["metrics"], result.get("source", {})
    segmentation = metrics["segmentation"]
    return {
        "name": source.get("name", ""),
        "method": source.get("method", ""),
        "parameters": source.get("parameters"),
        "step": source.get("step"),
        "train_cpu_seconds": source.get("train_cpu_seconds"),
        "fd_name": metrics["frechet"]["name"],
        "fd": metrics["frechet"]["generated_vs_real"],
        "fd_real": metrics["frechet"].get("real_reference_vs_real"),
        "kd_name": metrics["kernel"]["name"],
        "kd": metrics["kernel"]["generated_vs_real"]["mean"],
        "miou_generated": segmentation["generated"]["miou"],
        "miou_real": segmentation["real"]["miou"],
        "pixel_accuracy_generated": segmentation["generated"]["pixel_accuracy"],
        "pixel_accuracy_real": segmentation["real"]["pixel_accuracy"],
        "diversity": metrics["diversity"]["mean"] if metrics["diversity"] else None,
        "resolution": result["protocol"]["resolution"],
        "evaluator_sha256": result["protocol"]["evaluator"].get("sha256"),
        "extractor": result["protocol"]["feature_extractor"]["name"],
        "extractor_sha256": result["protocol"]["feature_extractor"]["sha256"],
        "dataset": f"{result['dataset']['kind']}/{result['dataset']['split']}",
        "perception": perception_summary(source.get("perception"), source.get("kind")),
        "ema": ema_summary(source.get("ema"), source.get("kind")),
        "init_from": source.get("init_from"),  # train CPU time does not include the run it started from
        "init_from_cpu_seconds": source.get("init_from_cpu_seconds"),
    }


def ema_summary(record: dict | None, kind: str | None = "checkpoint") -> str:
    """One line saying what the run's EMA generator went through before it was saved (OASIS: spectral-norm
    re-normalisation, batch-norm re-estimation and on which training images), from its state.json."""
    if kind == "images":
        return "unknown (images, not a run)"
    record = record or {}
    method, data = record.get("method"), record.get("data")
    if not method and not data:
        return "not recorded (no EMA recalibration, or the run's state.json predates the record)"
    parts = []
    if method is not None:
        layers = method.get("spectral_renormalised_layers", 0)
        parts.append(f"spectral norm re-normalised ({layers} layers)" if layers else
                     "spectral norm NOT re-normalised (averaged power-iteration vectors)")
    if data:
        estimate = f", {method['bn_estimate']}" if method and method.get("bn_estimate") else ""
        parts.append(f"batch-norm statistics re-estimated on {data['batches']} batches × {data['batch_size']} = "
                     f"{data['images']} of {data['split_images']} '{data['split']}' images, {data['order']}{estimate}")
    elif method is not None and not method.get("bn_batches"):
        parts.append("batch-norm statistics not re-estimated")
    return "; ".join(parts)


def perception_summary(records: dict | None, kind: str | None = "checkpoint") -> str:
    """One line naming the perception networks (and weights files) a run trained with, from its state.json."""
    if kind == "images":
        return "unknown (images, not a run)"
    if records is None:
        return "not recorded (the run's state.json predates the record)"
    if not records:
        return "none (no perception network in training)"
    return " | ".join(f"{name}: {record.get('summary')}" for name, record in records.items())
