"""``inverseg serve``: the studio — paint a layout and watch it become a photo, or edit a photo by its layout."""

from __future__ import annotations

import sys
from pathlib import Path

from .main import UserError, add_command

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "serve",
        "the studio: a local web page to paint a layout and watch it become a photo, and to edit a photo by its "
        "layout (sesame runs); also a JSON/HTTP API (docs: README 'The studio')",
        "  inverseg serve --checkpoint runs/spade-camvid\n"
        "  inverseg serve --checkpoint runs/sesame-camvid --checkpoint runs/oasis-camvid --port 8001\n"
        "  inverseg serve --checkpoint runs/sesame-camvid --segmenter ev/camvid   # reads photos' layouts\n",
    )
    parser.add_argument("--checkpoint", action="append", required=True, metavar="RUN",
                        help="run or checkpoint directory; repeat for several runs (a model picker on the page)")
    parser.add_argument("--name", action="append", metavar="NAME",
                        help="display name per --checkpoint, in order (default: the run directory's name)")
    parser.add_argument("--segmenter", metavar="PATH",
                        help="evaluator folder or segmenter JSON that reads uploaded photos' layouts (default: the "
                             "evaluator of each run's label set in the cache, when there is one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: only this machine; anything else prints a "
                             "warning, since anyone who reaches it can use the models)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default="cpu", help="device for the models (default cpu)")
    parser.add_argument("--max-upload-mb", type=float, default=8.0, help="largest request body (default 8 MB)")
    parser.add_argument("--max-pixels", type=int, default=4096 * 4096,
                        help="largest uploaded image in pixels (default 4096²)")
    parser.add_argument("--queue", type=int, default=4, help="renders waiting per model before refusing (default 4)")
    parser.set_defaults(func=run)


def load_models(checkpoints: list[str], names: list[str] | None, segmenter: str | None, device: str):
    from ..app.server import StudioModel
    from ..eval.study.sources import default_name, find_checkpoint
    from ..pipeline import Pipeline
    from ..train.checkpoint import CheckpointError

    if names and len(names) != len(checkpoints):
        raise UserError(f"give one --name per --checkpoint ({len(checkpoints)}), got {len(names)}")
    models, seen = [], set()
    for index, path in enumerate(checkpoints):
        checkpoint = find_checkpoint(Path(path))
        if checkpoint is None:
            raise UserError(f"{path}: not a run or checkpoint directory (written by 'inverseg train')")
        try:
            pipe = Pipeline.from_pretrained(checkpoint, device=device)
        except CheckpointError as error:
            raise UserError(str(error)) from None
        name = names[index] if names else default_name(Path(path), checkpoint)
        if name in seen:
            raise UserError(f"two runs are named {name!r}; fix: --name A --name B")
        seen.add(name)
        models.append(StudioModel(name, str(checkpoint), pipe, segmenter))
    return models


def run(args) -> int:
    try:
        from ..app.server import Limits, create_app
        from ..utils.web import serve
    except ImportError as missing:
        raise UserError(f"{missing.name} is not installed; fix: pip install 'inverseg[web]'") from None
    from .study import _check_port

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_pixels <= 0 or args.queue < 1:
        raise UserError("--max-upload-mb, --max-pixels and --queue must be positive")
    models = load_models(args.checkpoint, args.name, args.segmenter, args.device)
    for model in models:
        segmenter = "yes" if model.segmenter_available() else "none (photos need an uploaded label map)"
        print(f"{model.name}: {model.pipe.method.name}, {model.spec.name} {model.pipe.image_size[0]}×"
              f"{model.pipe.image_size[1]}, segmenter {segmenter}", file=sys.stderr)
    _check_port(args.host, args.port)
    limits = Limits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels, queue=args.queue)
    app = create_app(models, limits)
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: anyone who can reach this address can use the studio and its "
              f"models; use the default --host 127.0.0.1 unless you mean it", file=sys.stderr)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    shown_host = f"[{shown_host}]" if ":" in shown_host else shown_host
    print(f"studio: http://{shown_host}:{args.port}/   (Ctrl-C to stop)", flush=True)
    serve(app, args.host, args.port)
    return 0
