"""Champion stage: the registry's current champion, written down as an input of the gate.

The gate compares a challenger with whatever the `champion` alias points at. The registry
is outside DVC's sight, so this stage (`always_changed: true` in dvc.yaml) writes the alias's
version and the model digest it carries to reports/champion.json; the gate depends on that
file. Promotion rewrites it too, so `dvc status` shows the gate stale as soon as the
champion moves, and a `dvc repro` re-gates against the new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.io import write_json_atomic


def current_champion(params: Params, repo: str | Path = ".") -> dict[str, Any]:
    """{model_name, version, model_digest, run_id}; version None when there is no champion."""
    from tasks.registry.tracking import alias_version, setup

    r = params.register_
    mv = alias_version(setup(r.experiment, repo), r.model_name, "champion")
    return {
        "model_name": r.model_name,
        "version": str(mv.version) if mv else None,
        "model_digest": dict(mv.tags).get("model_digest") if mv else None,
        "run_id": mv.run_id if mv else None,
    }


def run_champion(params: Params, out_path: str | Path, repo: str | Path = ".") -> dict[str, Any]:
    champion = current_champion(params, repo)
    write_json_atomic(out_path, champion)
    return champion


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser("Write the registry's current champion to a file.", paths=("champion",))
    ap.add_argument("--repo", default=".")
    cli.run(
        "champion",
        ap,
        lambda a, p: f"champion: {json.dumps(run_champion(p, a.champion, a.repo))}",
        argv,
    )


if __name__ == "__main__":
    main()
