"""``inverseg data check`` and ``inverseg data preview``: look at a dataset before training on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data import DATASET_KINDS, DataConfig, open_dataset
from ..data.base import PairDataset
from ..errors import InversegError
from ..utils.images import fit_height, grid, save_png, to_uint8
from .main import UserError, add_command


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="check or preview a dataset")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    check = add_command(
        commands, "check", "scan a dataset: pairs, classes present, problems (exit status 1 on problems)",
        "  inverseg data check ../shared/data/camvid --dataset camvid --split val --json\n"
        "  inverseg data check ../shared/data/cmp_facade --dataset cmp\n"
        "  inverseg data check my_data --dataset folder --palette my_data/classes.tsv\n",
    )
    check.add_argument("path", help="dataset root folder")
    check.add_argument("--dataset", required=True, choices=[k for k in DATASET_KINDS if k != "synthetic"])
    _add_common(check)
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.set_defaults(func=run_check)

    preview = add_command(
        commands, "preview", "write a grid of (coloured label | image) pairs to look at",
        "  inverseg data preview synthetic --out preview.png --n 8\n"
        "  inverseg data preview ../shared/data/camvid --dataset camvid --split val --out camvid.png\n",
    )
    preview.add_argument("path", help="'synthetic' for the procedural street scenes, or a dataset root folder")
    preview.add_argument("--dataset", choices=DATASET_KINDS, help="dataset kind (default: synthetic)")
    _add_common(preview)
    preview.add_argument("--out", required=True, help="output PNG file")
    preview.add_argument("--n", type=int, default=6, help="number of pairs (default 6)")
    preview.add_argument("--height", type=int, default=192, help="tile height in pixels (default 192)")
    preview.set_defaults(func=run_preview)


def _add_common(parser) -> None:
    parser.add_argument("--split", help="split to read (default: train; CMP: all)")
    parser.add_argument("--palette", help="TSV palette (id<TAB>name<TAB>R,G,B) for colour-coded label PNGs")
    parser.add_argument("--ignore-id", type=int, help="palette id meaning void (folder datasets)")


def _open(args, size=None) -> PairDataset:
    config = DataConfig(dataset=args.dataset, path=args.path, split=args.split, size=size, palette=args.palette,
                        ignore_id=args.ignore_id, on_problem="skip")
    return open_dataset(config, augment=False)


def run_check(args) -> int:
    try:
        dataset = _open(args)
    except InversegError as error:  # an empty or missing dataset is itself the finding
        report = {"dataset": args.dataset, "path": args.path, "split": args.split, "pairs": 0,
                  "num_classes": None, "classes_present": [], "problems": [str(error)]}
        _print_report(report, args.json)
        return 1
    spec = dataset.spec
    counts = np.zeros(spec.num_classes + 1, dtype=np.int64)
    problems = list(dataset.problems)
    good = 0
    for pair in tqdm(dataset.pairs, desc="checking", unit="pair", file=sys.stderr, disable=None):
        try:
            _, label, _ = dataset.load_arrays(pair)
        except InversegError as error:  # every problem is listed, nothing aborts the scan
            problems.append(str(error))
            continue
        good += 1
        valid = (label >= 0) & (label < spec.num_classes)
        counts[:-1] += np.bincount(label[valid], minlength=spec.num_classes)
        counts[-1] += int((~valid).sum())
    report = {
        "dataset": args.dataset,
        "path": str(Path(args.path)),
        "split": dataset.source.rsplit(", ", 1)[-1].rstrip(")"),
        "scheme": spec.name,
        "pairs": good,
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
        "ignore_index": spec.ignore_index,
        "classes_present": [int(i) for i in np.flatnonzero(counts[:-1])],
        "pixel_fraction": {spec.class_names[i]: round(float(counts[i] / max(1, counts.sum())), 5)
                           for i in range(spec.num_classes)},
        "void_fraction": round(float(counts[-1] / max(1, counts.sum())), 5),
        "has_instances": dataset.has_instances,
        "problems": problems,
    }
    _print_report(report, args.json)
    return 1 if problems else 0


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
        return
    print(f"{report['path']} ({report['dataset']}, split {report['split']}): {report['pairs']} pairs, "
          f"{report['num_classes']} classes, present {report['classes_present']}")
    for problem in report["problems"]:
        print(f"problem: {problem}")
    if not report["problems"]:
        print("no problems")


def run_preview(args) -> int:
    if args.path == "synthetic" or args.dataset in (None, "synthetic"):
        if args.path != "synthetic" and args.dataset is None:
            raise UserError(f"{args.path}: pass --dataset KIND for a dataset folder ({', '.join(DATASET_KINDS)})")
        dataset = open_dataset(DataConfig(dataset="synthetic", size=(args.height, args.height * 4 // 3)),
                               split=args.split or "train", augment=False)
    else:
        dataset = _open(args)
    count = min(args.n, len(dataset))
    rows = []
    step = max(1, len(dataset) // count)
    for index in range(0, step * count, step):
        sample = dataset[index]
        label = fit_height(dataset.spec.colorize(sample["label"]), args.height, nearest=True)
        image = fit_height(to_uint8(sample["image"]), args.height)
        rows.append([label, image])
    path = save_png(grid(rows, titles=["label", "image"]), args.out)
    print(f"wrote {path} ({count} pairs from {len(dataset)}: coloured label | image)")
    return 0
