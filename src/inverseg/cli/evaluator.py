"""``inverseg evaluator train``: the segmentation network that scores generated images (mIoU, pixel accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

from ..data import DATASET_KINDS, DataConfig
from ..eval.paths import default_evaluator_dir, parse_size
from .main import UserError, add_command


def register(subparsers) -> None:
    evaluator = subparsers.add_parser("evaluator", help="train the segmentation network used by 'inverseg evaluate'")
    commands = evaluator.add_subparsers(dest="evaluator_command", metavar="SUBCOMMAND", required=True)
    train = add_command(
        commands, "train",
        "train the evaluator segmenter (ImageNet MobileNetV2 + light decoder) on a dataset's real images, "
        "within a CPU time budget; reports its own mIoU on the real validation images",
        "  inverseg evaluator train --dataset camvid --data ../shared/data/camvid --size 96x128 --minutes 12\n"
        "  inverseg evaluator train --dataset camvid --data ../shared/data/camvid --steps 1200 --out ev/camvid\n"
        "  inverseg evaluator train --dataset cmp --data ../shared/data/cmp_facade --size 128x96 --out ev/cmp\n"
        "  inverseg evaluator train --dataset folder --data my_data --size 128x128 --minutes 30 --threads 8\n",
    )
    train.add_argument("--dataset", required=True, choices=[k for k in DATASET_KINDS if k != "synthetic"])
    train.add_argument("--data", required=True, metavar="PATH", help="dataset root folder")
    train.add_argument("--out", metavar="DIR",
                       help="output folder (default: the cache folder 'inverseg evaluate' looks in, "
                            "$INVERSEG_CACHE/evaluators/<label set>-<H>x<W>)")
    train.add_argument("--size", default="96x128", metavar="HxW", help="evaluation resolution (default 96x128)")
    train.add_argument("--minutes", type=float,
                       help="wall-clock training budget (default 12 unless --steps is given)")
    train.add_argument("--steps", type=int, help="step budget, independent of the machine's load (with --minutes: "
                                                 "the first budget to run out ends training)")
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--lr", type=float, default=1e-3, help="decoder learning rate (backbone: × 0.5)")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--val-every", type=int, default=0, metavar="STEPS",
                       help="also log validation mIoU every STEPS steps (default: only at the end)")
    train.add_argument("--palette", help="TSV palette for colour-coded label PNGs (folder datasets)")
    train.add_argument("--ignore-id", type=int, help="palette id meaning void (folder datasets)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)


def run_train(args) -> int:
    from ..data import open_dataset
    from ..eval.train_segmenter import EvaluatorTrainConfig, train_evaluator

    try:
        size = parse_size(args.size)
    except ValueError as error:
        raise UserError(str(error)) from None
    data = DataConfig(dataset=args.dataset, path=args.data, palette=args.palette, ignore_id=args.ignore_id)
    if args.out:
        out = Path(args.out)
    else:
        spec = open_dataset(DataConfig(**{**data.__dict__, "size": size}), split="train", augment=False).spec
        out = default_evaluator_dir(spec.name, size)
    minutes = args.minutes if args.minutes is not None or args.steps is not None else 12.0
    config = EvaluatorTrainConfig(size=size, minutes=minutes, steps=args.steps, batch_size=args.batch_size,
                                  lr=args.lr, threads=args.threads, seed=args.seed, val_every=args.val_every)
    try:
        summary = train_evaluator(data, out, config, show_progress=not args.quiet)
    except ValueError as error:
        raise UserError(str(error)) from None
    validation = summary["validation"]
    print(json.dumps({key: summary[key] for key in ("out", "sha256", "steps", "seconds")}))
    print(f"real-image validation ({validation['images']} images at {size[0]}x{size[1]}): "
          f"mIoU {validation['miou']:.3f}, pixel accuracy {validation['pixel_accuracy']:.3f}")
    for name, iou in validation["per_class_iou"].items():
        print(f"  {name:<24} {'—' if iou is None else f'{iou:.3f}'}")
    print(f"evaluator: {out}")
    return 0
