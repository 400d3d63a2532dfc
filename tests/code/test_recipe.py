"""Recipes: configs/*.yaml merged over params.yaml, validated, and run as one `dvc exp run`."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tasks.core.config import Params
from tasks.recipe import command, merged
from tests.conftest import REPO, git_env

RECIPES = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_is_valid_over_the_default_params(recipe):
    params = Params.model_validate(merged(REPO / "params.yaml", recipe))
    assert params.model.base.startswith("llava-hf/") and params.train.modules_to_save == []


def test_a_misspelt_key_is_named_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lora_rank: 8\n")
    with pytest.raises(ValueError, match=r"train\.lora_rank"):
        command(bad, REPO / "params.yaml")
    bad.write_text("train:\n  lora_r: eight\n")
    with pytest.raises(ValueError, match="lora_r"):
        command(bad, REPO / "params.yaml")


def test_one_command_runs_the_recipe_as_a_dvc_experiment(tmp_path):
    """Through real DVC: the experiment's params are the recipe merged over params.yaml,
    regexes and empty lists included, and it is recorded under the recipe's name."""
    recipe = REPO / "configs" / "llava-1.5-7b.yaml"
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    # a stage that reads the params the recipe sets (the real stages would need the hub)
    stage = {"cmd": "python -c 'print(1)'", "params": ["data", "model", "train", "evaluate"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"probe": stage}}))
    env = git_env() | {"PYTHONPATH": str(REPO)}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "p"], cwd=tmp_path, env=env, check=True)
    want = merged(tmp_path / "params.yaml", recipe)
    done = subprocess.run(
        [sys.executable, "-m", "tasks.recipe", str(recipe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == want
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    names = [
        e.get("name") for row in json.loads(shown.stdout) for e in row.get("experiments") or []
    ]
    assert "llava-1.5-7b" in names, shown.stdout[:2000]
