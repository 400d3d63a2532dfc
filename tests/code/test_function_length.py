"""No function in tasks/ or flows/ runs over 80 lines (ruff has no rule that counts lines):
a longer one is a sign that it does several named steps in one body."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

MAX_LINES = 80


def long_functions(root) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_LINES:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    return found


@pytest.mark.parametrize("package", ["tasks", "flows"])
def test_no_function_runs_over_80_lines(package):
    assert long_functions(REPO / package) == []


def test_the_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    global REPO
    saved, REPO = REPO, tmp_path
    try:
        assert long_functions(tmp_path) == [f"long.py:1 long ({MAX_LINES + 1})"]
    finally:
        REPO = saved
