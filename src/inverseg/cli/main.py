"""Entry point of the ``inverseg`` command.

Every command lives in its own module exposing ``register(subparsers)``; the handler is stored as the parser's
``func`` default and receives the parsed arguments.  Errors the user can fix (bad labels, missing files) are
printed as one line ``error: …`` and exit with status 2 instead of a traceback: every project error derives from
``inverseg.errors.InversegError``; missing or unreadable files (``OSError``) are reported the same way.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InversegError

COMMAND_MODULES = ("data", "weights", "train", "synthesize", "edit", "serve", "demo", "study", "bank", "evaluator",
                   "evaluate", "compare", "export")


class UserError(InversegError, RuntimeError):
    """Something the user can fix; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inverseg",
        description="Semantic image synthesis: turn semantic label maps into photographs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  inverseg data preview synthetic --out preview.png\n  inverseg weights fetch\n",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def add_command(subparsers, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with worked examples."""
    return subparsers.add_parser(
        name, help=help, description=help, epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def one_line(error: BaseException) -> str:
    """The message on one line (a multi-line message would break scripts that read the first line)."""
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except InversegError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # missing, unreadable or unwritable files the command did not wrap itself
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
