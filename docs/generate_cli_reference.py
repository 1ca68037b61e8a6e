"""Write docs/cli.md, the reference of every ``facemask`` command and option, from the argument parser itself.

    python docs/generate_cli_reference.py            # rewrite docs/cli.md
    python docs/generate_cli_reference.py --stdout   # print it instead

The text comes only from ``modelscope_facemask.cli.build_parser()``: each command's help line, usage, description
and epilog, and for every option its spelling, default and help. Nothing is typed by hand, so the reference cannot
drift from the code: ``tests/test_cli_reference.py`` regenerates it and fails when docs/cli.md differs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "cli.md"
COMMAND = "python docs/generate_cli_reference.py"
#: usage lines are wrapped at this width whatever the terminal (the file must not depend on who generates it)
WIDTH = 100


def _parser() -> argparse.ArgumentParser:
    if str(ROOT) not in sys.path:  # run as a script from a checkout: import the package next to this folder
        sys.path.insert(0, str(ROOT))
    from modelscope_facemask.cli import build_parser

    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help line, parser)`` of each subcommand of ``parser``, in the order they were added."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias names the same parser again
                    continue
                seen.add(id(sub))
                found.append((name, helps.get(name, ""), sub))
    return found


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog=parser.prog, width=WIDTH)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _cell(text: str) -> str:
    """``text`` on one line, safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off" if action.default in (False, None) or isinstance(action, argparse._StoreFalseAction) else "on"
    if not action.option_strings:  # a positional argument
        return "optional" if action.nargs in ("?", "*") else "required"
    if action.required:
        return "required"
    default = action.default
    if default is None or default is argparse.SUPPRESS:
        return "—"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, (str, int, float, Path)):
        return f"`{default}`"
    return "see help"  # a sentinel (e.g. "the model's choice"): its text is in the help


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    formatter = _formatter(parser)
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        spelling = formatter._format_action_invocation(action)
        help_text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| `{_cell(spelling)}` | {_default(action)} | {_cell(help_text)} |")
    if rows:
        yield "| option | default | meaning |"
        yield "| --- | --- | --- |"
        yield from rows
        yield ""


def _text_block(text: str | None) -> Iterator[str]:
    """A description or epilog as written (the parsers keep its line breaks), in a text block."""
    if text:
        yield "```text"
        yield from text.strip("\n").splitlines()
        yield "```"
        yield ""


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading made of words and spaces."""
    return "-".join(title.lower().split())


def _command_sections(parser: argparse.ArgumentParser, level: int) -> Iterator[str]:
    for name, help_line, sub in _subcommands(parser):
        yield f"{'#' * level} {sub.prog}"
        yield ""
        if help_line:
            yield help_line[0].upper() + help_line[1:] + "."
            yield ""
        yield "```text"
        yield _usage(sub)
        yield "```"
        yield ""
        if sub.description and sub.description != help_line:
            yield from _text_block(sub.description)
        yield from _options(sub)
        yield from _text_block(sub.epilog)
        yield from _command_sections(sub, level + 1)


def _index(parser: argparse.ArgumentParser, depth: int = 0) -> Iterator[str]:
    for name, help_line, sub in _subcommands(parser):
        yield f"{'  ' * depth}- [`{sub.prog}`](#{_anchor(sub.prog)}): {help_line}"
        yield from _index(sub, depth + 1)


def render() -> str:
    """The whole of docs/cli.md."""
    parser = _parser()
    lines = [
        "# Command-line reference",
        "",
        f"<!-- Generated from the argument parser by `{COMMAND}`; do not edit by hand. -->",
        "",
        f"Generated from `modelscope_facemask.cli.build_parser()` by `{COMMAND}`; `tests/test_cli_reference.py` "
        "fails when this file and the parser differ. `facemask COMMAND --help` prints the same text. Every command "
        "also takes `-h, --help`.",
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        *_text_block(parser.description),
        *_options(parser),
        *_text_block(parser.epilog),
        "## Commands",
        "",
        *_index(parser),
        "",
        *_command_sections(parser, 2),
    ]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdout", action="store_true", help="print the reference instead of writing docs/cli.md")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
    else:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
