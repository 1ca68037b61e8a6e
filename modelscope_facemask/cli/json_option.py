"""``--json`` and ``--json-out FILE``: the same meaning in every command that has them.

``--json`` prints one JSON document on stdout and nothing else there (the text report is left out; a one-line
summary, where the command has one, goes to stderr). ``--json-out FILE`` writes the same document to FILE,
atomically, with the checks of every output (:mod:`.output_paths`: never an input, never inside a gallery or a
folder the command reads, an existing file only with ``--overwrite``). Both may be given.

The commands whose ``--json`` took a file in 0.1.0 (evaluate, gallery build/add, regress check) still accept
``--json FILE`` for one release, as a deprecated spelling of ``--json-out FILE`` that warns on stderr.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Iterable

#: the value of ``--json`` given without a file name
_PRINT = "\0print"


def add_json_options(parser: argparse.ArgumentParser, what: str, *, legacy_file: bool = False,
                     positionals: bool = False, out_note: str = "") -> None:
    """``--json`` (print ``what`` on stdout) and ``--json-out FILE`` (write it); ``legacy_file``: ``--json FILE``
    is still accepted, as a deprecated alias of ``--json-out FILE`` (``positionals``: the command has positional
    arguments, which the help warns about); ``out_note`` ends the help of ``--json-out``."""
    help_print = f"print {what} as one JSON document on stdout, and nothing else there"
    if legacy_file:
        order = (" Give --json after the positional arguments, or it takes the next one as FILE."
                 if positionals else "")
        parser.add_argument("--json", nargs="?", const=_PRINT, default=None, metavar="FILE",
                            help=f"{help_print}. Deprecated: `--json FILE` (its meaning in 0.1.0) still writes "
                                 f"FILE, with a warning, as --json-out FILE does; it will be removed.{order}")
    else:
        parser.add_argument("--json", action="store_true", help=help_print)
    parser.add_argument("--json-out", metavar="FILE", default=None,
                        help=f"write {what} as JSON to FILE (atomically; never one of the inputs; an existing FILE "
                             f"only with --overwrite){out_note}")


def resolve_json_options(args: argparse.Namespace) -> None:
    """Turn the parsed options into ``args.json`` (bool: print) and ``args.json_out`` (a path or None); the
    deprecated ``--json FILE`` becomes ``--json-out FILE`` with a warning. Raises UsageError when both name files."""
    from .common import UsageError

    value = getattr(args, "json", None)
    if isinstance(value, str) and value != _PRINT:
        if args.json_out is not None:
            raise UsageError(f"--json {value!r} (the deprecated spelling of --json-out FILE) and --json-out "
                             f"{args.json_out!r} both name a file: give --json-out FILE only")
        from ..support.log import logger

        logger.warning("--json FILE is deprecated: use --json-out %s (--json alone now prints the JSON on stdout); "
                       "the old spelling is removed in the next release", value)
        args.json_out, args.json = value, False
    else:
        args.json = bool(value)


def check_json_out(args: argparse.Namespace, *, reads: Iterable[Any] = (),
                   folders: dict[str, str] | None = None) -> None:
    """``--json-out`` checked before any work (:func:`.output_paths.check_output_file`)."""
    from .output_paths import check_output_file

    if args.json_out is not None:
        check_output_file(args.json_out, "--json-out", reads=reads, folders=folders,
                          overwrite=getattr(args, "overwrite", False))


def emit_json(args: argparse.Namespace, document: Any, *, indent: int | None = 2) -> None:
    """Print ``document`` on stdout (``--json``) and write it to ``--json-out`` (strict JSON: NaN and infinities as
    null)."""
    from ..support.json_output import json_text, write_json

    if args.json:
        print(json_text(document, indent=indent))
    if args.json_out is not None:
        write_json(args.json_out, document)


def text_stream(args: argparse.Namespace) -> Any:
    """Where a command's one-line summary goes: stderr when stdout holds the JSON document, else stdout."""
    return sys.stderr if args.json else sys.stdout


def say_written(args: argparse.Namespace, what: str) -> None:
    """``what -> FILE`` after ``--json-out FILE`` was written (on :func:`text_stream`)."""
    from ..support.printable import printable

    if args.json_out is not None:
        print(f"{what} -> {printable(args.json_out)}", file=text_stream(args))
