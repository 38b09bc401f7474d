"""Region-wise average pooling: pix2pixHD's instance-wise feature pooling (§3.4), vectorised.

The official encoder loops in Python over instance ids × batch items × feature channels.  Here a segment is a
(sample, instance id, class) triple; every pixel gets the index of its segment once (``segment_index``), and the
means are one ``index_add`` and one ``bincount`` — differentiable, on any device.  When instance ids already
determine the class (pix2pixHD's ``class·1000 + k`` convention) the class in the key changes nothing; otherwise
it splits an instance id that spans several classes.
"""

from __future__ import annotations

import torch


def segment_index(instance: torch.Tensor, label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,H,W) instance ids [+ (B,H,W) classes] → (per-pixel segment index (B,H,W) in 0…S−1, keys (S,3)).

    ``keys[s] = (sample, instance id, class)``, sorted; ``label=None`` uses the instance map as the class too.
    """
    if instance.dim() != 3:
        raise ValueError(f"expected (B,H,W) instance ids, got shape {tuple(instance.shape)}")
    label = instance if label is None else label
    if label.shape != instance.shape:
        raise ValueError(f"instance map {tuple(instance.shape)} and label map {tuple(label.shape)} differ in shape")
    instance, label = instance.long(), label.long()
    batch = torch.arange(instance.shape[0], device=instance.device).view(-1, 1, 1).expand_as(instance)
    ins = instance - instance.min()
    lab = label - label.min()
    n_ins, n_lab = int(ins.max()) + 1, int(lab.max()) + 1
    key = (batch * n_ins + ins) * n_lab + lab  # one int64 per pixel, ordered like (sample, instance, class)
    unique, inverse = torch.unique(key, return_inverse=True)
    keys = torch.stack([unique // (n_ins * n_lab), (unique // n_lab) % n_ins + instance.min(),
                        unique % n_lab + label.min()], dim=1)
    return inverse.view_as(instance), keys


def segment_mean(features: torch.Tensor, index: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,F,H,W) features, (B,H,W) segment index → (mean feature per segment (S,F), pixel count per segment (S,))."""
    channels = features.shape[1]
    flat = features.permute(0, 2, 3, 1).reshape(-1, channels)
    index = index.reshape(-1)
    sums = torch.zeros(num_segments, channels, dtype=features.dtype, device=features.device).index_add(0, index, flat)
    counts = torch.bincount(index, minlength=num_segments)
    return sums / counts.clamp(min=1).unsqueeze(1).to(features.dtype), counts


def broadcast_segments(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(S,F) per-segment values, (B,H,W) segment index → (B,F,H,W) map."""
    return values[index].permute(0, 3, 1, 2)


def instance_average_pool(features: torch.Tensor, instance: torch.Tensor, label: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """Replace every feature by the mean over its segment (pix2pixHD's ``Encoder.forward`` pooling)."""
    index, keys = segment_index(instance, label)
    means, _ = segment_mean(features, index, len(keys))
    return broadcast_segments(means, index)
