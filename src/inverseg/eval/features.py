"""Image embeddings for distribution distances, and the cache of the real images' features.

Two extractors, never confused in reports:

* ``fid-inception`` — pytorch-fid's FID Inception v3 (``pt_inception-2015-12-05-6726825d.pth``, looked up in
  torch hub's checkpoint folder), 2048-d pool3 features of images resized bilinearly to 299×299.  Distances
  are called **FID** and **KID**: the standard numbers (at this project's resolution and image sets).
* ``mobilenet_v2`` — the offline ImageNet MobileNetV2, 1280-d globally pooled features of images resized
  bilinearly to 224×224 (aspect ratio not kept, as pytorch-fid does at 299).  Used when the Inception file
  is absent; distances are called **FD-MobileNetV2** and **KD-MobileNetV2** everywhere and are not comparable
  with any published FID.

``auto`` picks the Inception when its file is present.  The real images' features are cached under
``$INVERSEG_CACHE/stats`` keyed by everything that changes them: dataset, data folder, split, the file names,
resolution, resize method, extractor and the sha256 of its weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..perception.weights import cached_sha256
from ..utils.io import atomic_write_bytes, atomic_write_json
from .paths import slug, stats_dir

STATS_VERSION = 1


@dataclass
class FeatureExtractor:
    key: str  # fid-inception | mobilenet_v2
    fd_name: str  # FID | FD-MobileNetV2
    kd_name: str  # KID | KD-MobileNetV2
    dim: int
    input: str  # how images are prepared
    description: str
    sha256: str
    embed: Callable[[torch.Tensor], torch.Tensor]

    @torch.no_grad()
    def features(self, images: Iterable[torch.Tensor] | torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """(N,3,H,W) in [-1,1] (a tensor or an iterable of (3,H,W)) → (N, dim) float32."""
        images = list(images) if not isinstance(images, torch.Tensor) else list(images.unbind(0))
        out = [self.embed(torch.stack(images[i:i + batch_size]).float()).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def identity(self) -> dict:
        return {"name": self.key, "fd_name": self.fd_name, "kd_name": self.kd_name, "dim": self.dim,
                "input": self.input, "weights": self.description, "sha256": self.sha256}


def load_extractor(name: str = "auto") -> FeatureExtractor:
    """``auto`` (FID Inception when its weights file is present, else MobileNetV2), ``fid-inception`` or
    ``mobilenet_v2``."""
    from ..perception.weights import OFFLINE_MOBILENET_V2, WeightsMissingError, offline_path, resolve_inception

    if name not in ("auto", "fid-inception", "mobilenet_v2"):
        raise ValueError(f"feature extractor must be auto, fid-inception or mobilenet_v2, got {name!r}")
    if name in ("auto", "fid-inception"):
        try:
            path = resolve_inception()
        except WeightsMissingError:
            if name == "fid-inception":
                raise
        else:
            from ..perception.inception import FID_FEATURE_DIM, load_fid_inception

            network = load_fid_inception(path)
            return FeatureExtractor("fid-inception", "FID", "KID", FID_FEATURE_DIM,
                                    "bilinear resize to 299×299 (pytorch-fid)", network.weights_description,
                                    cached_sha256(path), network.pooled_features)
    from ..perception import FEATURE_DIM, load_mobilenet_v2

    network = load_mobilenet_v2()
    path = offline_path(OFFLINE_MOBILENET_V2)

    def embed(images: torch.Tensor) -> torch.Tensor:
        return network.pooled_features(F.interpolate(images, size=(224, 224), mode="bilinear",
                                                     align_corners=False))

    return FeatureExtractor("mobilenet_v2", "FD-MobileNetV2", "KD-MobileNetV2", FEATURE_DIM,
                            "bilinear resize to 224×224", network.weights_description, cached_sha256(path), embed)


# ---------------------------------------------------------------------------------------------------------
# Cache of real-image features
# ---------------------------------------------------------------------------------------------------------
def stats_key(dataset: str, path: str | None, split: str, label_set: str, size: tuple[int, int],
              image_resize: str, names: list[str], extractor: FeatureExtractor) -> dict:
    """Everything the cached features depend on; its hash names the cache file."""
    return {
        "version": STATS_VERSION,
        "dataset": dataset,
        "path": str(Path(path).resolve()) if path else None,
        "split": split,
        "label_set": label_set,
        "resolution": [int(size[0]), int(size[1])],
        "image_resize": image_resize,
        "images": len(names),
        "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        "extractor": extractor.key,
        "extractor_sha256": extractor.sha256,
    }


def stats_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{slug(key['dataset'])}-{slug(key['split'])}-{key['resolution'][0]}x{key['resolution'][1]}-" \
           f"{key['extractor']}-{digest}"
    return stats_dir() / f"{name}.npz"


def cached_features(key: dict, compute: Callable[[], np.ndarray], use_cache: bool = True) -> tuple[np.ndarray, str]:
    """Features for ``key``, from the cache when present; returns (features, "cached"|"computed")."""
    path = stats_path(key)
    if use_cache and path.is_file():
        with np.load(path) as stored:
            if json.loads(str(stored["key"])) == key:
                return stored["features"], "cached"
    features = np.asarray(compute(), dtype=np.float32)
    if use_cache:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, features=features, key=np.array(json.dumps(key, sort_keys=True)),
                 mu=features.mean(0), sigma=np.cov(features, rowvar=False) if len(features) > 1 else
                 np.zeros((features.shape[1],) * 2))
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_json(path.with_suffix(".json"), key)
    return features, "computed"
