"""``inverseg demo``: the README's main command — from nothing to a gallery of synthesized street scenes.

1. fetch the offline perception weights (no-op when present);
2. write a preview of the procedural training data;
3. train the CPU CRN on procedural scenes for a bounded time;
4. synthesize held-out procedural layouts (the test split, never seen in training) into a gallery:
   coloured label | output | reference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..config import load_run_config
from ..data import DataConfig, open_dataset
from ..pipeline import Pipeline
from ..train import Trainer
from ..train.gallery import sample_grid, write_page
from ..utils.images import fit_height, grid, save_png, to_uint8
from .main import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "demo", "fetch weights, preview the data, train a CPU CRN, synthesize a gallery",
        "  inverseg demo                 # about 15 minutes on 2 CPU cores\n"
        "  inverseg demo --minutes 3     # shorter training, blurrier results\n"
        "  inverseg demo --out runs/my-demo --preset crn-cpu-diversity\n",
    )
    parser.add_argument("--minutes", type=float, default=13.0, help="training time budget (default 13)")
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--preset", default="crn-cpu", help="training preset (default crn-cpu)")
    parser.add_argument("--layouts", type=int, default=8, help="held-out layouts in the gallery (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..perception.weights import fetch

    out = Path(args.out)
    print("[1/4] perception weights")
    fetch()

    print("[2/4] preview of the procedural training data")
    preview = open_dataset(DataConfig(dataset="synthetic", size=(192, 256)), split="train", augment=False)
    spec = preview.spec
    rows = [[spec.colorize(s["label"]), to_uint8(s["image"])] for s in (preview[i] for i in range(6))]
    print(f"      wrote {save_png(grid(rows, titles=['label', 'image']), out / 'preview.png')}")

    print(f"[3/4] training CRN ({args.preset}) for at most {args.minutes:g} minutes")
    config = load_run_config(args.preset, [f"train.minutes={args.minutes}"])
    run_dir = out / f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = Trainer(config, run_dir).fit()
    print(f"      {summary['step']} steps in {summary['seconds'] / 60:.1f} min; run directory {run_dir}")

    print("[4/4] synthesizing held-out layouts (procedural test split)")
    pipe = Pipeline.from_pretrained(run_dir)
    test = open_dataset(DataConfig(dataset="synthetic", size=tuple(config.data.size)), split="test", augment=False)
    k = config.settings.model.num_outputs if hasattr(config.settings, "model") else 1
    labels, outputs, references = [], [], []
    for index in range(min(args.layouts, len(test))):
        sample = test[index]
        images = pipe(sample["label"], k=min(k, 3), seed=index)
        labels.append(fit_height(spec.colorize(sample["label"]), 192, nearest=True))
        outputs.append([fit_height(np.asarray(image), 192) for image in images])
        references.append(fit_height(to_uint8(sample["image"]), 192))
    gallery_dir = out / "gallery"
    save_png(sample_grid(labels, outputs, references), gallery_dir / "gallery.png")
    page = write_page(gallery_dir, f"inverseg demo — {args.preset}",
                      f"Held-out procedural layouts (never seen in training), after {summary['step']} training "
                      f"steps ({summary['seconds'] / 60:.1f} min on this machine). "
                      f"Columns: coloured label | output | reference.", [("gallery", "gallery.png")])
    print(f"done. Open {page.resolve()} in a browser "
          f"(training samples over time: {(run_dir / 'samples' / 'index.html').resolve()})")
    print(f"Paint your own layouts with this run in the studio: inverseg serve --checkpoint {run_dir}  "
          f"(then open http://127.0.0.1:8000/)")
    return 0
