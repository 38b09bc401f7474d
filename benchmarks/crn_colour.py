"""Colour bias of a trained CRN run: per-channel mean output against the real photos (prints JSON).

    PYTHONPATH=src .venv/bin/python benchmarks/crn_colour.py --run RUN [--splits val train] [--limit 101]

For every split, on the photos' own layouts (0–255 RGB, outputs clamped as at inference):

* ``reference`` / ``output`` / ``error`` — per-channel means over all pixels (error = output − reference);
* ``per_class`` — the same restricted to each class's pixels, with the class's pixel share;
* ``train_class_means_here`` — what a model painting every class in its *training-set* mean colour would score
  on these layouts.  CamVid's val sequence is much darker and bluer than train (train mean ≈ 105, 108, 110;
  val ≈ 80, 85, 88), so on val part of ``error`` is domain shift, not a defect of the method; on the train split
  ``error`` measures the method's own bias.
* ``error_per_output`` — for diversity models (k > 1), the error of each of the k outputs.

Issue 11 §4: "show per-channel mean error near 0 after the same budget"; docs/methods/crn.md has the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from inverseg.data import open_dataset
from inverseg.pipeline import Pipeline


def to_255(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(-1.0, 1.0) + 1.0) * 127.5


def rounded(values) -> list[float]:
    return [round(float(v), 1) for v in values]


def class_sums(images: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) images, (N, H, W) ids → per-class RGB sums (classes, 3) and pixel counts (classes,)."""
    ids = labels.flatten().clamp(0, classes - 1)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1)
    sums = torch.zeros(classes, 3, dtype=torch.float64).index_add_(0, ids, pixels.t().double())
    counts = torch.bincount(ids, minlength=classes).double()
    return sums, counts


def measure(pipe: Pipeline, split: str, limit: int, train_means: torch.Tensor | None, k: int) -> dict:
    dataset = open_dataset(pipe.config.data, split=split, augment=False)
    count = min(limit, len(dataset))
    names = list(pipe.spec.class_names) + ["void"]
    classes = len(names)
    ref_sums = torch.zeros(classes, 3, dtype=torch.float64)
    out_sums = torch.zeros(k, classes, 3, dtype=torch.float64)
    counts = torch.zeros(classes, dtype=torch.float64)
    for index in range(count):
        sample = dataset[index]
        label = sample["label"]
        # void (the ignore index) counted as the last class, as CRN's void input channel
        ids = torch.where((label < 0) | (label >= classes - 1), classes - 1, label)[None]
        outputs = pipe.method.sample(label[None], k=k)[0]  # (k, 3, H, W)
        sums, pixels = class_sums(to_255(sample["image"])[None], ids, classes)
        ref_sums += sums
        counts += pixels
        for u in range(k):
            out_sums[u] += class_sums(to_255(outputs[u])[None], ids, classes)[0]
    total = counts.sum()
    reference = ref_sums.sum(0) / total
    outputs = out_sums.sum(1) / total  # (k, 3)
    result = {
        "layouts": count,
        "reference": rounded(reference),
        "output": rounded(outputs.mean(0)),
        "error": rounded(outputs.mean(0) - reference),
        "mean_abs_channel_error": round(float((outputs.mean(0) - reference).abs().mean()), 2),
    }
    if k > 1:
        result["error_per_output"] = [rounded(row - reference) for row in outputs]
    if train_means is not None:
        here = (train_means * counts[:, None]).sum(0) / total
        result["train_class_means_here"] = rounded(here)
    per_class = {}
    for c, name in enumerate(names):
        if counts[c] == 0:
            continue
        ref = ref_sums[c] / counts[c]
        out = out_sums[:, c].mean(0) / counts[c]
        per_class[name] = {"share": round(float(counts[c] / total), 4), "reference": rounded(ref),
                           "output": rounded(out), "error": rounded(out - ref)}
    result["per_class"] = per_class
    pixel_weighted = torch.stack([torch.tensor(v["error"]) * v["share"] for v in per_class.values()])
    result["per_class_error_mean"] = rounded(pixel_weighted.sum(0))
    unweighted = torch.stack([torch.tensor(v["error"]) for v in per_class.values()]).mean(0)
    result["per_class_error_unweighted"] = rounded(unweighted)
    return result


def train_class_means(pipe: Pipeline, limit: int) -> torch.Tensor:
    """Per-class mean colour (classes, 3) of the training split's photos (void = last class)."""
    dataset = open_dataset(pipe.config.data, split=pipe.config.data.split or "train", augment=False)
    classes = len(pipe.spec.class_names) + 1
    sums = torch.zeros(classes, 3, dtype=torch.float64)
    counts = torch.zeros(classes, dtype=torch.float64)
    for index in range(min(limit, len(dataset))):
        sample = dataset[index]
        label = sample["label"]
        ids = torch.where((label < 0) | (label >= classes - 1), classes - 1, label)[None]
        s, n = class_sums(to_255(sample["image"])[None], ids, classes)
        sums += s
        counts += n
    return sums / counts.clamp_min(1)[:, None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a CRN run directory (or checkpoint)")
    parser.add_argument("--splits", nargs="+", default=["val", "train"])
    parser.add_argument("--limit", type=int, default=400, help="layouts per split (default: all of CamVid's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-train-means", action="store_true", help="skip the train per-class mean baseline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pipe = Pipeline.from_pretrained(args.run)
    k = pipe.config.settings.model.num_outputs
    means = None if args.no_train_means else train_class_means(pipe, args.limit)
    result = {"run": str(args.run), "checkpoint": pipe.source, "outputs_per_layout": k,
              "splits": {split: measure(pipe, split, args.limit, means, k) for split in args.splits}}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
