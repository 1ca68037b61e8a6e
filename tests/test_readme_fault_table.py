"""The "Bad input and faults" table (docs/faults.md, linked from the README) names, beside every row, tests that
exist."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: `test_x.py::name`, `::name` (same file as the previous reference), with an optional `[param]`, or `test_x.py`
_REFERENCE = re.compile(r"`(?:(test_\w+\.py))?::(\w+)(?:\[[^\]]*\])?`|`(test_\w+\.py)`")


def _rows() -> list[str]:
    text = (ROOT / "docs" / "faults.md").read_text(encoding="utf-8")
    start = text.index("# Bad input and faults")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    return [line for line in text[start:end].splitlines() if re.match(r"^\| \d+ \|", line)]


def test_rows_are_numbered_in_order_and_every_named_test_exists():
    rows = _rows()
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, len(rows) + 1))
    missing = []
    for row in rows:
        cell, current = row.rstrip(" |").split(" | ")[-1], None
        references = list(_REFERENCE.finditer(cell))
        assert references, f"row without a test: {row[:80]}"
        for match in references:
            if match.group(3):
                if not (ROOT / "tests" / match.group(3)).is_file():
                    missing.append(match.group(3))
                continue
            current = match.group(1) or current
            path = ROOT / "tests" / (current or "?")
            if not path.is_file() or f"def {match.group(2)}(" not in path.read_text(encoding="utf-8"):
                missing.append(f"{current}::{match.group(2)}")
    assert missing == []
