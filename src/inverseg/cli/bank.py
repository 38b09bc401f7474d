"""``inverseg bank build`` / ``inverseg bank info``: the SIMS memory bank of training segments (SIMS §3.1).

Training a SIMS preset builds (or reuses) its bank automatically; this command builds one explicitly — e.g. once
for several runs (``bank.path=BANK``), or to look at what a dataset decomposes into.
"""

from __future__ import annotations

import json

from ..data import DATASET_KINDS, DataConfig, open_dataset
from .main import UserError, add_command


def register(subparsers) -> None:
    bank = subparsers.add_parser("bank", help="build or inspect a SIMS memory bank")
    commands = bank.add_subparsers(dest="bank_command", metavar="SUBCOMMAND", required=True)

    build = add_command(
        commands, "build", "cut every training layout into segments and store them (SIMS memory bank)",
        "  inverseg bank build --dataset camvid --data ../shared/data/camvid --split train --out banks/camvid\n"
        "  inverseg bank build --dataset synthetic --out banks/synthetic --size 96x128\n"
        "  inverseg bank build --dataset cityscapes --data CITYSCAPES --size 256x512 --out banks/cs256 \\\n"
        "      --merge-thin pole 'traffic light' 'traffic sign'\n",
    )
    build.add_argument("--dataset", required=True, choices=DATASET_KINDS, help="dataset kind")
    build.add_argument("--data", help="dataset root folder (not needed for synthetic)")
    build.add_argument("--split", default="train", help="split to cut (default: train)")
    build.add_argument("--out", required=True, help="bank directory to create")
    build.add_argument("--size", default="96x128", help="HxW the samples are resized to = the model size "
                                                          "(default 96x128)")
    build.add_argument("--grid", type=int, default=32, help="retrieval grid G (masks on G×G cells; default 32)")
    build.add_argument("--min-area", type=float, default=0.0005,
                       help="drop components smaller than this fraction of the image (default 0.0005)")
    build.add_argument("--connectivity", type=int, choices=(4, 8), default=8, help="pixel connectivity (default 8)")
    build.add_argument("--merge-thin", nargs="*", default=[], metavar="CLASS",
                       help="thin classes that bridge other classes' components (official Cityscapes: pole, "
                            "'traffic light', 'traffic sign')")
    build.add_argument("--order-labels", choices=("auto", "depth", "heuristic"), default="auto",
                       help="front/back labels of adjacent pairs: from depth if the data has it (auto), or the "
                            "layout heuristic")
    build.add_argument("--palette", help="TSV palette for colour-coded label PNGs (folder datasets)")
    build.add_argument("--limit", type=int, help="use only the first N samples")
    build.add_argument("--overwrite", action="store_true", help="replace an existing bank at --out")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=run_build)

    info = add_command(commands, "info", "print a bank's summary as JSON",
                       "  inverseg bank info banks/camvid\n")
    info.add_argument("path", help="bank directory")
    info.set_defaults(func=run_info)


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r} is not HxW (e.g. 96x128)") from None
    if height < 1 or width < 1:
        raise UserError(f"--size {text!r} must be positive")
    return height, width


def run_build(args) -> int:
    from ..sims.bank import BankError, BankSettings, build_bank

    size = parse_size(args.size)
    config = DataConfig(dataset=args.dataset, path=args.data, split=args.split, size=size, palette=args.palette)
    dataset = open_dataset(config, split=args.split, augment=False)
    settings = BankSettings(grid=args.grid, min_area=args.min_area, connectivity=args.connectivity,
                            merge_thin=tuple(args.merge_thin), order_labels=args.order_labels)
    try:
        settings.validate()
        bank = build_bank(dataset, args.out, settings, spec=dataset.spec, source=f"{args.dataset}:{args.data or ''}",
                          overwrite=args.overwrite, progress=not args.quiet, limit=args.limit)
    except (BankError, ValueError) as error:
        raise UserError(str(error)) from None
    summary = bank.describe()
    summary["build_seconds"] = bank.meta["build_seconds"]
    print(json.dumps(summary))
    return 0


def run_info(args) -> int:
    from ..sims.bank import BankError, MemoryBank

    try:
        bank = MemoryBank(args.path)
    except BankError as error:
        raise UserError(str(error)) from None
    print(json.dumps({**bank.describe(), "settings": bank.meta["settings"],
                      "build_seconds": bank.meta["build_seconds"]}, indent=1))
    return 0
