"""``inverseg train``: train a preset (with key=value overrides) or resume a run directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import ConfigError, load_run_config, preset_names, preset_summary
from ..train import Trainer
from .main import UserError, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "train", "train a method from a YAML preset, or resume a run",
        "  inverseg train --config crn-cpu train.minutes=10\n"
        "  inverseg train --config crn-camvid-cpu data.path=../shared/data/camvid --out runs/crn-camvid\n"
        "  inverseg train --resume runs/crn-camvid train.steps=20000\n"
        "  inverseg train --list\n",
    )
    parser.add_argument("--config", help="preset name (see --list) or a YAML file")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    parser.add_argument("--out", help="run directory (default: runs/PRESET-YYYYmmdd-HHMMSS)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=200")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.list:
        rows = [preset_summary(name) for name in preset_names()]
        widths = {key: max(len(row[key]) for row in rows) for key in ("name", "method", "dataset", "size")}
        for row in rows:
            print("  ".join(row[key].ljust(widths[key]) for key in widths) + "  " + row["description"])
        return 0
    try:
        if args.resume:
            if args.config:
                raise UserError("use either --config (new run) or --resume RUN_DIR, not both")
            trainer = Trainer.resume(args.resume, args.overrides, show_progress=not args.quiet)
        else:
            if not args.config:
                raise UserError("pass --config PRESET (see inverseg train --list) or --resume RUN_DIR")
            config = load_run_config(args.config, args.overrides)
            out = Path(args.out) if args.out else Path("runs") / f"{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
            if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
                raise UserError(f"{out} already holds checkpoints; fix: --resume {out} or choose another --out")
            trainer = Trainer(config, out, show_progress=not args.quiet)
    except (ConfigError, KeyError) as error:
        raise UserError(str(error).strip("'\"")) from None
    summary = trainer.fit()
    print(json.dumps(summary))
    if summary.get("gallery"):
        print(f"gallery: {Path(summary['gallery']).parent / 'index.html'}")
    return 0
