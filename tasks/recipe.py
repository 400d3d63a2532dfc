"""Run a recipe (`configs/<name>.yaml`) as one DVC experiment: `make recipe RECIPE=<name>`.

    python -m tasks.recipe configs/llava-1.5-7b.yaml [--print] [-- <more dvc exp run args>]

A recipe holds only the keys that differ from params.yaml. They are merged over it and the
result is validated as `Params` first (a misspelt key fails here, naming it, not an hour into
a GPU run). Then `dvc exp run -n <name> -S key=value ...` sets each one: DVC records the
experiment with its params, the data hash and the commit, and applies the result to the
workspace (`dvc exp show` compares; `dvc exp branch` keeps one; `git checkout params.yaml`
goes back to the default).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.digest import dotted
from tasks.core.errors import BadInput


def merged(params_path: str | Path, recipe_path: str | Path) -> dict[str, Any]:
    """params.yaml with the recipe's keys set, validated as Params (errors name the key)."""
    base = yaml.safe_load(Path(params_path).read_text()) or {}
    recipe = yaml.safe_load(Path(recipe_path).read_text()) or {}
    if not isinstance(recipe, dict):
        raise BadInput(f"{recipe_path}: a recipe is a mapping of params.yaml keys")
    for path, value in dotted(recipe).items():
        node = base
        *parents, last = path.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise BadInput(f"{recipe_path}: {path}: params.yaml has no section {key!r}")
            node = node[key]
        if last not in node:
            raise BadInput(f"{recipe_path}: {path}: params.yaml has no such key")
        node[last] = value
    try:
        Params.model_validate(base)
    except Exception as exc:
        raise BadInput(f"{recipe_path}: the merged params are invalid:\n{exc}") from exc
    return base


def set_param(path: str, value: Any) -> str:
    """One `-S` override, in the Hydra override grammar that DVC parses: strings quoted (a
    regex's `|`, `(` and `\\` would otherwise be grammar), lists and numbers as YAML/JSON."""
    if isinstance(value, str):
        quoted = "'" + value.replace("'", "\\'") + "'"
        return f"{path}={quoted}"
    return f"{path}={'null' if value is None else json.dumps(value)}"


def command(recipe_path: str | Path, params_path: str | Path = "params.yaml") -> list[str]:
    merged(params_path, recipe_path)  # validate before anything runs
    recipe = yaml.safe_load(Path(recipe_path).read_text()) or {}
    cmd = ["dvc", "exp", "run", "-n", Path(recipe_path).stem]
    for path, value in dotted(recipe).items():
        cmd += ["-S", set_param(path, value)]
    return cmd


def ensure_data(recipe: Params, repo: Path, refresh: bool = True) -> str:
    """The recipe trains on the data it names: data/ is made from its `data.source` (by
    `make data`'s code, then `dvc add`) unless it already holds that source; with
    `refresh=False` a mismatch is refused, naming both."""
    from tasks.refresh_data import run_data
    from tasks.registry.lineage import data_source

    data_dir = repo / recipe.paths.data
    want, have = recipe.data.source, data_source(data_dir)
    if have == want:
        return f"recipe: {data_dir} already holds {want}"
    if not refresh:
        raise BadInput(
            f"{data_dir} holds {have or 'no snapshot'}, the recipe trains on {want}: "
            f"run it without --keep-data to refresh data/, or `make data SOURCE={want}`"
        )
    made = run_data(recipe.data, data_dir, want, repo)
    return (
        f"recipe: {data_dir} refreshed from {want}: {made['records']} records (md5 {made['md5']})"
    )


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    ap.add_argument("recipe", help="configs/<name>.yaml")
    ap.add_argument("--print", action="store_true", help="print the dvc command, run nothing")
    ap.add_argument("extra", nargs="*", help="more `dvc exp run` arguments, after --")

    ap.add_argument(
        "--keep-data",
        action="store_true",
        help="refuse, instead of refreshing data/, when it holds another source than the recipe's",
    )

    def body(a, p) -> None:
        cmd = command(a.recipe, a.params) + a.extra
        if not a.print:
            recipe = Params.model_validate(merged(a.params, a.recipe))
            print(ensure_data(recipe, Path(a.params).resolve().parent, refresh=not a.keep_data))
        print(shlex.join(cmd), flush=True)
        if not a.print:
            sys.exit(subprocess.run(cmd).returncode)

    cli.run("recipe", ap, body, argv)


if __name__ == "__main__":
    main()
