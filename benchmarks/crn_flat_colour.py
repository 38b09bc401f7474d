"""Which colour does each CRN loss term pull a texture-less output towards? (prints JSON)

    PYTHONPATH=src .venv/bin/python benchmarks/crn_flat_colour.py pixel
    PYTHONPATH=src .venv/bin/python benchmarks/crn_flat_colour.py relu2_2 [--convention caffe|rgb-mean]

The limit of an under-trained CRN is a flat colour per class.  This fits exactly that — a table of 12 colours
(CamVid's 11 classes + void), painted into each training layout at 96×128 — with the chosen loss terms (unit
weights) on the CamVid train photos, Adam lr 0.03, batch 2, and reports the fitted colours (average of the last 30
steps) and their mean weighted by the val layouts' class shares.  Compare with the photos' per-class mean and median
(``--stats``).  ``--convention rgb-mean`` feeds the offline VGG16 RGB order minus the RGB mean (the MatConvNet
VGG-19 convention) instead of its own BGR Caffe input, to test whether the channel order causes the pull.
docs/methods/crn.md "Colour cast".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types

import torch

from inverseg.config import load_run_config
from inverseg.data import open_dataset
from inverseg.losses.perceptual import COLOUR, LambdaBalancer, PerceptualLoss
from inverseg.perception import load_vgg

RGB_MEAN = (123.68, 116.779, 103.939)


def class_shares(dataset, classes: int) -> torch.Tensor:
    counts = torch.zeros(classes)
    for index in range(len(dataset)):
        counts += torch.bincount(dataset[index]["label"].flatten().clamp(0, classes - 1), minlength=classes)
    return counts / counts.sum()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("terms", help="comma-separated: pixel, colour, relu1_2 … relu5_2")
    parser.add_argument("--convention", choices=["caffe", "rgb-mean"], default="caffe")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stats", action="store_true", help="also print the photos' per-class mean and median")
    parser.add_argument("--weights-from", metavar="STATE_JSON",
                        help="λ of a CRN run (state.json → method_state.lambda.weights) instead of unit weights; "
                             "a term the run lacks (colour) gets the pixel term's weight (same units; "
                             "a balanced run gives it more, as its mean is smaller)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_run_config("crn-camvid-cpu", [])
    train = open_dataset(config.data, split="train", augment=False)
    val = open_dataset(config.data, split="val", augment=False)
    classes = len(train.spec.class_names) + 1
    samples = [train[i] for i in range(len(train))]
    for sample in samples:
        sample["label"] = sample["label"].clamp(0, classes - 1)  # void (ignore id) → the last colour
    terms = tuple(args.terms.split(","))
    layers = tuple(t for t in terms if t not in ("pixel", COLOUR))
    vgg = load_vgg("vgg19", layers=layers or ("relu1_1",), pooling="avg")
    if args.convention == "rgb-mean":
        vgg._mean.copy_(torch.tensor(RGB_MEAN).view(1, 3, 1, 1))
        vgg.preprocess = types.MethodType(lambda self, x: (x + 1.0) * 127.5 - self._mean, vgg)
    weights = None
    if args.weights_from:
        measured = json.loads(open(args.weights_from).read())["method_state"]["lambda"]["weights"]
        weights = [measured.get(t, measured["pixel"]) for t in terms]
    loss = PerceptualLoss(vgg, layers=layers, pixel_term="pixel" in terms, colour_term=COLOUR in terms,
                          balancer=LambdaBalancer(terms, mode="fixed", initial_weights=weights))
    table = torch.zeros(classes, 3, requires_grad=True)  # 0 = mid-grey, where the official output starts
    optimiser = torch.optim.Adam([table], lr=0.03)
    order = torch.Generator().manual_seed(0)
    average = torch.zeros(classes, 3)
    start = time.time()
    for step in range(args.steps):
        picks = torch.randint(len(samples), (2,), generator=order)
        ids = torch.stack([samples[i]["label"] for i in picks])
        photos = torch.stack([samples[i]["image"] for i in picks])
        layout = torch.nn.functional.one_hot(ids, classes).permute(0, 3, 1, 2).float()
        total, _ = loss(table[ids].permute(0, 3, 1, 2), photos, label=layout)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        if step >= args.steps - 30:
            average += table.detach() / 30
    colours = (average.clamp(-1, 1) + 1) * 127.5
    shares = class_shares(val, classes)
    result = {"terms": terms, "weights": weights, "convention": args.convention,
              "seconds": round(time.time() - start),
              "val_weighted_mean": [round(v, 1) for v in (shares[:, None] * colours).sum(0).tolist()],
              "colours": [[round(v) for v in row] for row in colours.tolist()]}
    if args.stats:
        pixels = torch.cat([((s["image"] + 1) * 127.5).flatten(1) for s in samples], 1)
        ids = torch.cat([s["label"].flatten() for s in samples])
        means = torch.stack([pixels[:, ids == c].mean(1) for c in range(classes)])
        medians = torch.stack([pixels[:, ids == c].median(1).values for c in range(classes)])
        result["photo_class_mean_val_weighted"] = [round(v, 1) for v in (shares[:, None] * means).sum(0).tolist()]
        result["photo_class_median_val_weighted"] = [round(v, 1) for v in (shares[:, None] * medians).sum(0).tolist()]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
