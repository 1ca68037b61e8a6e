"""Pieces stay small enough to read: no function over 60 lines and no module over 400 lines in the package and the
benchmarks, except the ones listed here with the reason they read better whole."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
LONG_MODULES: dict[str, str] = {  # path -> why it reads better whole
}
LONG_FUNCTIONS: dict[str, str] = {  # "path:function" -> why it reads better whole
}


def _sources() -> list[Path]:
    return sorted([*(ROOT / "modelscope_facemask").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])


def test_no_module_is_too_long():
    long = {str(p.relative_to(ROOT)): n for p in _sources()
            if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES}
    assert sorted(set(long) - set(LONG_MODULES)) == [], f"modules over {MAX_MODULE_LINES} lines: {long}"
    assert sorted(set(LONG_MODULES) - set(long)) == [], "listed as long but no longer: remove from LONG_MODULES"


def test_no_function_is_too_long():
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert sorted(set(long) - set(LONG_FUNCTIONS)) == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"
    assert sorted(set(LONG_FUNCTIONS) - set(long)) == [], "listed as long but no longer: remove from LONG_FUNCTIONS"
