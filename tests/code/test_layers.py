"""The architecture is a checked contract: import-linter's layers (pyproject.toml) hold on the
code, and the same contracts fail on an import that runs back up a layer or closes a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the packages under `root` with the contracts of its pyproject.toml."""
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("lint-imports")),
            "--config",
            str(root / "pyproject.toml"),
        ],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_of_the_code(tmp_path: Path) -> Path:
    for package in ("tasks", "flows", "bench", "devtools"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_code_keeps_every_contract():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the bottom layer reaching up to a stage
        ("tasks/core/io.py", "from tasks.train import run_train", "tasks is layered"),
        # a library layer importing a command (stages sit on top)
        ("tasks/model/modeling.py", "import tasks.predict", "tasks is layered"),
        # two independent siblings coupled
        ("tasks/evaluation/metrics.py", "import tasks.model.modeling", "tasks is layered"),
        # a cycle inside one layer: data.dataset <-> data.receipt_json
        ("tasks/data/receipt_json.py", "import tasks.data.dataset", "no import cycles"),
        # the product importing a dev tool
        ("tasks/core/cli.py", "import devtools.servers", "imports no flow"),
    ],
)
def test_an_import_against_the_layers_breaks_the_contract(tmp_path, module, line, broken):
    root = copy_of_the_code(tmp_path)
    if "data.dataset" in line:  # close the loop: dataset imports receipt_json too
        target = root / "tasks/data/dataset.py"
        target.write_text(target.read_text() + "\nimport tasks.data.receipt_json  # noqa\n")
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(root)
    assert done.returncode == 1
    assert f"{broken}" in done.stdout and "BROKEN" in done.stdout
