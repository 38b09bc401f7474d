"""``inverseg study serve`` and ``inverseg study results``: a pairwise "which is more realistic?" study.

The protocol of the CRN and SIMS papers' Mechanical-Turk experiments, run on a local web page: the same
layout by two methods, sides randomized per trial, optionally visible only for a few seconds.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from ..eval.study import StudyError, StudyStore, summarize
from ..eval.study.stats import format_comparison
from .main import UserError, add_command


def register(subparsers) -> None:
    study = subparsers.add_parser("study", help="pairwise human preference study (local web page)")
    commands = study.add_subparsers(dest="study_command", metavar="SUBCOMMAND", required=True)

    serve = add_command(
        commands, "serve", "serve a page asking raters which of two images is more realistic; votes go to SQLite",
        "  inverseg study serve --a out/crn --b out/pix2pixhd --db studies/crn-vs-p2p.sqlite\n"
        "  inverseg study serve --a runs/crn-camvid --b ../shared/data/camvid/val \\\n"
        "      --labels ../shared/data/camvid/valannot --name-b real --time-limit 8\n"
        "  inverseg study serve --a runs/crn --b runs/crn-div --labels layouts/ --prepare-only\n",
    )
    serve.add_argument("--a", required=True, metavar="RUN_OR_DIR",
                       help="method A: a folder of images, or a run directory (synthesized from --labels)")
    serve.add_argument("--b", required=True, metavar="RUN_OR_DIR", help="method B, like --a")
    serve.add_argument("--labels", metavar="DIR", help="label maps to synthesize from (needed for run directories)")
    serve.add_argument("--name-a", help="name of method A (default: the folder or run name)")
    serve.add_argument("--name-b", help="name of method B (default: the folder or run name)")
    serve.add_argument("--db", default="study.sqlite",
                       help="SQLite file of votes (default study.sqlite); synthesized images are cached next to "
                            "it in DBNAME-images/")
    serve.add_argument("--time-limit", type=float, metavar="S",
                       help="hide the images S seconds after they appear (the rater must still answer)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--seed", type=int, default=0, help="seed for synthesizing from run directories (default 0)")
    serve.add_argument("--device", default="cpu", help="device for synthesizing (default cpu)")
    serve.add_argument("--prepare-only", action="store_true",
                       help="synthesize and register the pairs, then exit without serving")
    serve.set_defaults(func=run_serve)

    results = add_command(
        commands, "results", "preference rate per pair of methods with a Wilson interval and an exact binomial p-value",
        "  inverseg study results study.sqlite\n"
        "  inverseg study results studies/crn-vs-p2p.sqlite --json\n",
    )
    results.add_argument("db", help="the SQLite file written by 'inverseg study serve'")
    results.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    results.add_argument("--confidence", type=float, default=0.95, help="interval confidence level (default 0.95)")
    results.set_defaults(func=run_results)


def run_serve(args) -> int:
    try:
        from ..eval.study.server import create_app
        from ..utils.web import serve
    except ImportError as missing:
        raise UserError(f"{missing.name} is not installed; fix: pip install 'inverseg[web]'") from None
    from ..eval.study.sources import match, open_source

    if args.time_limit is not None and not 0 < args.time_limit < float("inf"):
        raise UserError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    db = Path(args.db)
    cache_root = db.parent / f"{db.stem}-images"
    try:
        source_a = open_source(args.a, args.name_a, args.labels, cache_root, args.seed, args.device)
        source_b = open_source(args.b, args.name_b, args.labels, cache_root, args.seed, args.device)
        if source_a.name == source_b.name:
            raise StudyError(f"both methods are named {source_a.name!r}; fix: --name-a NAME --name-b NAME")
        pairs = match(source_a, source_b)
        store = StudyStore(db)
    except StudyError as refused:
        raise UserError(str(refused)) from None
    study_id = store.ensure_study(source_a.name, source_b.name)
    pair_ids = store.add_pairs(study_id, pairs)
    for source in (source_a, source_b):
        unmatched = len(source.images) - len(pairs)
        note = f", {unmatched} without a counterpart (not shown)" if unmatched else ""
        print(f"{source.name}: {source.origin}, {len(source.images)} images{note}", file=sys.stderr)
    print(f"{len(pairs)} pairs of {source_a.name} vs {source_b.name} in {db}", file=sys.stderr)
    if args.prepare_only:
        return 0
    _check_port(args.host, args.port)
    app = create_app(store, pair_ids, time_limit=args.time_limit)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this address can vote", file=sys.stderr)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"study page: http://{shown_host}:{args.port}/   (Ctrl-C to stop; "
          f"results: inverseg study results {db})", flush=True)
    print(f"admin: http://{shown_host}:{args.port}/api/results?token={app.state.admin_token}   "
          f"(the running tally; do not share it with raters)", flush=True)
    serve(app, args.host, args.port)
    return 0


def _check_port(host: str, port: int) -> None:
    """A one-line error for a busy port instead of uvicorn's log and exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); fix: --port ANOTHER") from None


def run_results(args) -> int:
    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence must be between 0 and 1, got {args.confidence}")
    try:
        summary = summarize(StudyStore(args.db, create=False), args.confidence)
    except StudyError as refused:
        raise UserError(str(refused)) from None
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['database']}: {summary['votes']} vote(s) from {summary['raters']} rater(s)")
    for row in summary["comparisons"]:
        print(format_comparison(row))
    return 0
