"""Size limits that keep each module one idea: a module over 300 lines is a warning (a
module's length follows its idea; 300 is a hint) and over 450 an error; no function over 60
lines, except where a comment beside the definition says why (``# long: <reason>``)."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("search", "models", "data", "common", "predictor")
MODULE_HINT_LINES = 300
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
EXCUSE = "# long:"


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _excused(lines: list[str], node: ast.AST) -> bool:
    """A ``# long: reason`` comment on the line above the definition or on its first line."""
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno  # type: ignore[attr-defined]
    nearby = lines[max(first - 2, 0) : node.lineno]  # type: ignore[attr-defined]
    return any(EXCUSE in line for line in nearby)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{len(lines)} lines: split it into modules"
    if len(lines) > MODULE_HINT_LINES:
        warnings.warn(
            f"{path.name}: {len(lines)} lines: does it still hold one idea?", stacklevel=1
        )
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and not _excused(lines, node)
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_check_can_fail(tmp_path: Path) -> None:
    """A 61-line function is caught, and an excuse comment lets it pass."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    tree_text = f"def f():\n{body}\n"
    node = ast.parse(tree_text).body[0]
    assert node.end_lineno - node.lineno + 1 == 61
    assert not _excused(tree_text.splitlines(), node)
    excused = "# long: a table\n" + tree_text
    assert _excused(excused.splitlines(), ast.parse(excused).body[0])
