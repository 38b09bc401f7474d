"""``inverseg compare``: one table of several evaluated runs or result JSONs (the papers' FID/mIoU table)."""

from __future__ import annotations

import json
import sys

from .main import UserError, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "compare",
        "print one table (method, params, FID or FD-MobileNetV2, KID/KD, mIoU, pixel accuracy, diversity) of "
        "several evaluations",
        "  inverseg compare runs/crn-camvid runs/pix2pixhd-camvid\n"
        "  inverseg compare results/*.json --markdown >> README.md\n"
        "  inverseg compare runs/crn-camvid runs/spade-camvid --figure crn-vs-spade.png\n",
    )
    parser.add_argument("results", nargs="+", metavar="RUN_OR_JSON",
                        help="run directory (its newest eval/*.json) or a result JSON from 'inverseg evaluate'")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (for a README)")
    parser.add_argument("--figure", metavar="PNG", help="also write layout | each run's output | real image for "
                        "the sample layouts of the reports")
    parser.add_argument("--rows", type=int, default=4, help="layouts in --figure (default 4, at most 6)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..eval.report import compare_figure, compare_table, load_result
    from ..utils.images import save_png

    results = []
    for path in args.results:
        try:
            results.append(load_result(path))
        except (ValueError, json.JSONDecodeError) as error:
            raise UserError(str(error).splitlines()[0]) from None
    print(compare_table(results, markdown=args.markdown), end="")
    if args.figure:
        try:
            figure = compare_figure(results, rows=args.rows)
        except ValueError as error:
            raise UserError(str(error)) from None
        print(f"figure: {save_png(figure, args.figure)}", file=sys.stderr)  # stdout stays the table
    return 0
