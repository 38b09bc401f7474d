"""``inverseg train``: train a preset (with key=value overrides) or resume a run directory."""

from __future__ import annotations

import json
import os
import sys
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
        "  inverseg train --config spade-cpu --nproc 2 --out runs/spade-ddp        # 2 processes (torchrun)\n"
        "  torchrun --nproc_per_node 8 -m inverseg train --config spade-cityscapes --out runs/spade-cs\n"
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
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="train with N processes on this machine (starts torchrun --standalone; under an outer "
                             "torchrun, leave it out)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=200")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.nproc is not None:
        return _launch_torchrun(args)
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
            if not args.out and int(os.environ.get("WORLD_SIZE", 1)) > 1:
                raise UserError("under torchrun pass --out RUN_DIR: every process must write to the same run")
            out = Path(args.out) if args.out else _default_out(config.preset)
            if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
                raise UserError(f"{out} already holds checkpoints; fix: --resume {out} or choose another --out")
            trainer = Trainer(config, out, show_progress=not args.quiet)
    except (ConfigError, KeyError, InitFromError) as error:
        raise UserError(str(error).strip("'\"")) from None
    summary = trainer.fit()
    trainer.dist.close()
    if not trainer.dist.is_main:
        return 0
    print(json.dumps(summary))
    if summary.get("gallery"):
        print(f"gallery: {Path(summary['gallery']).parent / 'index.html'}")
    return 0


def _default_out(preset: str) -> Path:
    return Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _launch_torchrun(args) -> int:
    """``--nproc N``: the same command under ``torchrun --standalone --nproc_per_node N`` (one machine).

    The run directory is fixed here, so that every process writes to the same one.
    """
    if args.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {args.nproc}")
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise UserError("--nproc starts torchrun itself; under torchrun leave it out")
    if args.list:
        raise UserError("--list does not train; leave out --nproc")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "inverseg", "train"]
    if args.resume:
        command += ["--resume", args.resume]
    else:
        if not args.config:
            raise UserError("pass --config PRESET (see inverseg train --list) or --resume RUN_DIR")
        preset = Path(args.config).stem if args.config.endswith((".yaml", ".yml")) else args.config
        command += ["--config", args.config, "--out", str(args.out or _default_out(preset))]
    if args.init_from:
        command += ["--init-from", args.init_from]
    for flag, values in (("--init-exclude", args.init_exclude), ("--init-rename", args.init_rename),
                         ("--unfreeze", args.unfreeze)):
        for value in values:
            command += [flag, value]
    command += ["--freeze-loaded"] * args.freeze_loaded + ["--quiet"] * args.quiet + list(args.overrides)
    print(f"starting: torchrun --standalone --nproc_per_node={args.nproc} -m inverseg train "
          f"{' '.join(command[8:])}", file=sys.stderr, flush=True)
    os.execv(sys.executable, command)  # torchrun replaces this process: signals reach it directly


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
