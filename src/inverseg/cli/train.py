"""``inverseg train``: train a preset (with key=value overrides) or resume a run directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import ConfigError, load_run_config, preset_names, preset_summary
from ..train import Trainer
from ..train.init_from import InitFromError
from .main import UserError, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "train", "train a method from a YAML preset, or resume a run",
        "  inverseg train --config crn-cpu train.minutes=10\n"
        "  inverseg train --config crn-camvid-cpu data.path=../shared/data/camvid --out runs/crn-camvid\n"
        "  inverseg train --resume runs/crn-camvid train.steps=20000\n"
        "  inverseg train --config crn-512p --init-from runs/crn-256p --init-exclude generator.to_rgb\n"
        "  inverseg train --config crn-1024p --init-from runs/crn-512p --init-exclude generator.to_rgb \\\n"
        "      --freeze-loaded --unfreeze generator.refine.7\n"
        "  inverseg train --list\n",
    )
    parser.add_argument("--config", help="preset name (see --list) or a YAML file")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    parser.add_argument("--out", help="run directory (default: runs/PRESET-YYYYmmdd-HHMMSS)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    init = parser.add_argument_group("start from another run's weights (train.init.*)")
    init.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT",
                      help="copy the tensors whose names and shapes match from this run or checkpoint directory")
    init.add_argument("--init-exclude", metavar="PREFIX", action="append", default=[],
                      help="leave this module (e.g. generator.to_rgb) freshly initialised; repeatable")
    init.add_argument("--init-rename", metavar="SRC=DST", action="append", default=[],
                      help="source module path SRC is DST here (e.g. generator.body=generator.global_generator.body)"
                           "; repeatable")
    init.add_argument("--freeze-loaded", action="store_true", help="do not train the loaded parameters")
    init.add_argument("--unfreeze", metavar="PREFIX", action="append", default=[],
                      help="with --freeze-loaded: still train this loaded module; repeatable")
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
            if args.init_from or args.init_exclude or args.init_rename or args.freeze_loaded or args.unfreeze:
                raise UserError("--init-from and its options start a new run; a resumed run keeps what it loaded "
                                "and froze (its state.json 'init_from')")
            trainer = Trainer.resume(args.resume, args.overrides, show_progress=not args.quiet)
        else:
            if not args.config:
                raise UserError("pass --config PRESET (see inverseg train --list) or --resume RUN_DIR")
            config = load_run_config(args.config, args.overrides)
            _apply_init_options(config.train.init, args)
            out = Path(args.out) if args.out else Path("runs") / f"{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
            if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
                raise UserError(f"{out} already holds checkpoints; fix: --resume {out} or choose another --out")
            trainer = Trainer(config, out, show_progress=not args.quiet)
    except (ConfigError, KeyError, InitFromError) as error:
        raise UserError(str(error).strip("'\"")) from None
    summary = trainer.fit()
    print(json.dumps(summary))
    if summary.get("gallery"):
        print(f"gallery: {Path(summary['gallery']).parent / 'index.html'}")
    return 0


def _apply_init_options(init, args) -> None:
    """--init-* flags on top of the preset's ``train.init`` section (lists extend it, flags switch it on)."""
    if args.init_from:
        init.source = args.init_from
    init.exclude = [*init.exclude, *args.init_exclude]
    for item in args.init_rename:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise UserError(f"--init-rename {item!r} is not SRC=DST "
                            f"(e.g. generator.body=generator.global_generator.body)")
        init.rename[source] = target
    init.freeze_loaded = init.freeze_loaded or args.freeze_loaded
    init.unfreeze = [*init.unfreeze, *args.unfreeze]
    if not init.source and (init.exclude or init.rename or init.freeze_loaded or init.unfreeze):
        raise UserError("--init-exclude, --init-rename, --freeze-loaded and --unfreeze need --init-from RUN")
