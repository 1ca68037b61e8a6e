"""``facemask``: the command line of modelscope-facemask (also ``python -m modelscope_facemask.cli``).

Subcommands: embed, compare, annotate, evaluate, env, regress (create | check), pack, publish, demo. Exit codes:
0 success, 1 a failure the command detected (regression, no face, remote verification), 2 a usage error (missing
file, bad option, unusable model or reference, unreachable hub); expected failures never print a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from typing import Iterator, Sequence

from ..version import __version__
from . import annotate, compare, demo, embed, env, evaluate, pack, publish, regress
from .common import UsageError

SUBCOMMANDS = (embed, compare, annotate, evaluate, env, regress, pack, publish, demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``facemask`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="facemask", description="FaceMask face recognition (RetinaFace + IResNet) on ModelScope: embed, "
        "compare and annotate faces, evaluate and calibrate, check embeddings against a reference, pack and publish "
        "model repositories.", epilog="Exit codes: 0 success, 1 failure detected (e.g. regression), 2 usage error.")
    parser.add_argument("--version", action="version", version=f"modelscope-facemask {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(commands)
    return parser


@contextlib.contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    """Our warnings as ``facemask: WARNING: ...`` on stderr; ModelScope's INFO chatter only with ``-v``."""
    from ..log import LOGGER_NAME

    ours, theirs = logging.getLogger(LOGGER_NAME), logging.getLogger("modelscope")
    saved = (ours.level, theirs.level, ours.propagate)
    ours.propagate = False  # ours is a child of ModelScope's logger: print each line once, in our format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("facemask: %(levelname)s: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    theirs.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(saved[0])
        theirs.setLevel(saved[1])
        ours.propagate = saved[2]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also for ``--help`` and usage errors)."""
    from ..errors import FaceMaskError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, argparse usage errors
        return int(exc.code or 0)
    args.verbose = getattr(args, "verbose", False)
    with _logging(args.verbose):
        try:
            return int(args.handler(args))
        except (UsageError, FaceMaskError, OSError) as exc:  # OSError: unreadable/unwritable files given by the user
            command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
            if args.verbose:
                traceback.print_exc()
            print(f"facemask {command}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("facemask: interrupted", file=sys.stderr)
            return 130


__all__ = ["build_parser", "main"]
