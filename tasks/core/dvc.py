"""Running the `dvc` command line: the one wrapper (the stages' own environment, plus `env`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class DvcFailed(RuntimeError):
    pass


def run_dvc(
    repo: str | Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """`dvc <args>` in `repo`, output captured. With `check`, a non-zero exit raises DvcFailed
    carrying the command and the tail of what dvc said."""
    done = subprocess.run(
        ["dvc", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-3000:]
        raise DvcFailed(f"dvc {' '.join(args)} in {repo} failed: {said}")
    return done
