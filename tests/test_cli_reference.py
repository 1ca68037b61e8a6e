"""docs/cli.md is what docs/generate_cli_reference.py makes from the argument parser, and the docs' links resolve."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "docs" / "generate_cli_reference.py"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_cli_reference", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_parser():
    expected = _generator().render()
    actual = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert actual == expected, ("docs/cli.md differs from the argument parser: run `python docs/generate_cli_reference.py` "
                                "and commit docs/cli.md")


def test_every_command_is_documented_once():
    from modelscope_facemask.cli import build_parser

    generator = _generator()
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, _, sub in generator._subcommands(build_parser()):
        assert len(re.findall(rf"^## {re.escape(sub.prog)}$", text, re.M)) == 1, sub.prog


def test_relative_links_in_the_readme_and_docs_resolve():
    """Every relative Markdown link of README.md and docs/*.md names a file or folder of the checkout."""
    missing = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#", 1)[0]).exists():
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert missing == []
