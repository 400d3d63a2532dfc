"""dvc.yaml's hand-written deps against the code each stage really runs.

For every stage command `python -m <module>`, the project modules it imports are found
transitively (function-level imports included: the stages import lazily) by reading their
`import` statements and resolving them with importlib. Each one must be a dep of that
stage, itself or through a listed folder, or DVC would call the stage fresh after an edit
to code it runs.
"""

from __future__ import annotations

import ast
import importlib.util
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PROJECT_PACKAGES = ("tasks", "flows")


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ModuleNotFoundError, ValueError):  # `from tasks.core.config import load_params`
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve()


def _imported_names(tree: ast.Module, package: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names |= {
                f"{base}.{a.name}" for a in node.names
            }  # `from tasks.registry import lineage`
    return names


def _runs_code(path: Path) -> bool:
    """False for a package __init__ that holds only a docstring: importing it runs nothing."""
    body = ast.parse(path.read_text()).body
    return not all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def project_closure(module: str) -> set[str]:
    """Repo-relative paths of the project files that importing `module` may execute."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        if parts[0] not in PROJECT_PACKAGES:
            continue
        for i in range(1, len(parts) + 1):  # the parent packages' __init__ run too
            path = _module_file(".".join(parts[:i]))
            if path is None or path in seen:
                continue
            seen.add(path)
            is_pkg = path.name == "__init__.py"
            package = ".".join(parts[:i]) if is_pkg else ".".join(parts[: i - 1])
            todo += sorted(_imported_names(ast.parse(path.read_text()), package))
    return {
        p.relative_to(REPO).as_posix()
        for p in seen
        if p.is_relative_to(REPO) and (p.name != "__init__.py" or _runs_code(p))
    }


def stage_module(cmd: str) -> str:
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "-m"], f"stage command is not `python -m <module>`: {cmd}"
    return argv[2]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# Code a stage runs without importing it: register logs the pyfunc in tasks/inference/serving.py,
# and what that pyfunc imports decides what the registered model does.
ALSO_RUNS = {"register": ["tasks.inference.serving"]}


def test_closure_follows_lazy_and_package_imports():
    closure = project_closure("tasks.refresh_data")
    # tasks.refresh_data imports its sources inside a function, and tasks.data.sources runs code on import
    assert {
        "tasks/refresh_data.py",
        "tasks/data/sources/synthetic.py",
        "tasks/data/sources/__init__.py",
    } <= closure
    assert "tasks/data/sources/render.py" in closure  # two levels down
    assert "tasks/__init__.py" not in closure  # a docstring only


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_every_module_the_stage_runs(stage):
    spec = STAGES[stage]
    runs: set[str] = set()
    for module in [stage_module(spec["cmd"]), *ALSO_RUNS.get(stage, [])]:
        runs |= project_closure(module)
    missing = sorted(p for p in runs if not covered(p, spec["deps"]))
    assert not missing, f"dvc.yaml stage {stage!r}: add to deps: {missing}"
