"""``facemask``: the command line of modelscope-facemask (also ``python -m modelscope_facemask.cli``).

Subcommands: embed, compare, annotate, evaluate, env, regress (create | check), pack, publish, demo, export,
quantize, gallery (build | add | remove | info), identify, serve. Exit codes, the same for every command (the table:
:mod:`modelscope_facemask.cli.exit_codes`): 0 success, 1 a negative result the command found (an image without a
face or unreadable, a regression, a failed upload), 2 a usage error or any error that stopped the command, 3 a
dependency change (regress check). ``--json`` prints one JSON document on stdout, ``--json-out FILE`` writes it
(:mod:`modelscope_facemask.cli.json_option`). No command prints a traceback unless -v is given; an error is one
line, shortened in the middle when long so that its end (what to do) is kept; the hub token is masked in everything
printed.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from typing import Iterator, Sequence

from ..version import __version__
from . import annotate, compare, demo, embed, env, evaluate, export, gallery, identify, pack, publish, quantize, \
    regress, serve
from .common import UsageError

SUBCOMMANDS = (embed, compare, annotate, evaluate, env, regress, pack, publish, demo, export, quantize, gallery,
               identify, serve)


def _exit_code_summary() -> str:
    from .exit_codes import SUMMARY

    return SUMMARY


def build_parser() -> argparse.ArgumentParser:
    """The ``facemask`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="facemask", description="FaceMask face recognition (RetinaFace + IResNet) on ModelScope: embed, "
        "compare and annotate faces, evaluate and calibrate, check embeddings against a reference, pack and publish "
        "model repositories.", epilog=_exit_code_summary())
    parser.add_argument("--version", action="version", version=f"modelscope-facemask {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(commands)
    return parser


class _PrintableFormatter(logging.Formatter):
    """``facemask: LEVEL: message`` with the message's control characters escaped (an input's name cannot forge a
    line); tracebacks attached to a record are left as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        from ..support.printable import printable

        return printable(super().formatMessage(record))


@contextlib.contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    """Our warnings as ``facemask: WARNING: ...`` on stderr; ModelScope's INFO chatter only with ``-v``."""
    from ..support.log import LOGGER_NAME

    ours = logging.getLogger(LOGGER_NAME)
    # ModelScope's own logger, and its hub client's (a separate top-level logger at INFO, with its own handler)
    theirs = [logging.getLogger(name) for name in ("modelscope", "modelscope_hub")]
    saved = (ours.level, [t.level for t in theirs], ours.propagate)
    ours.propagate = False  # ours is a child of ModelScope's logger: print each line once, in our format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("facemask: %(levelname)s: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    for logger in theirs:
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(saved[0])
        for logger, level in zip(theirs, saved[1]):
            logger.setLevel(level)
        ours.propagate = saved[2]


def _one_line(text: str, limit: int = 1000) -> str:
    """``text`` on one line (whitespace runs collapsed, other control characters escaped); over ``limit``
    characters, its middle is cut out: the start says what failed, the end what to do about it."""
    from ..support.printable import printable

    text = printable(" ".join(str(text).split()))
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    return text[:head] + " [...] " + text[len(text) - (limit - head - 7):]


def _error_message(exc: BaseException) -> str:
    """What the user reads: our own errors as they are, anything unexpected with its type and the ``-v`` hint."""
    from ..errors import FaceMaskError

    if isinstance(exc, (UsageError, FaceMaskError, OSError)):  # OSError: unreadable/unwritable files of the user
        return _one_line(str(exc) or type(exc).__name__)
    return _one_line(f"{type(exc).__name__}: {exc}") + " (rerun with -v for the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also for ``--help`` and usage errors).

    No exception escapes: our own errors and file errors print one line and exit 2, anything unexpected prints
    its type and message on one line and exits 2 (the traceback only with ``-v``). The hub token is masked in
    everything the command prints. The codes: :mod:`modelscope_facemask.cli.exit_codes`.
    """
    from ..tools.hub.token_scrubbing import scrubbed_output

    with scrubbed_output():
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, argparse usage errors
            return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
        args.verbose = getattr(args, "verbose", False)
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        with _logging(args.verbose):
            try:
                if hasattr(args, "json_out"):  # the commands with --json / --json-out
                    from .json_option import resolve_json_options

                    resolve_json_options(args)
                return int(args.handler(args))
            except KeyboardInterrupt:
                from .exit_codes import INTERRUPTED

                print("facemask: interrupted", file=sys.stderr)
                return INTERRUPTED
            except Exception as exc:  # noqa: BLE001 - the command line never shows a traceback unless asked (-v)
                if args.verbose:
                    traceback.print_exc()
                print(f"facemask {command}: error: {_error_message(exc)}", file=sys.stderr)
                return _usage_error()


def _usage_error() -> int:
    from .exit_codes import USAGE_ERROR

    return USAGE_ERROR


__all__ = ["build_parser", "main"]
