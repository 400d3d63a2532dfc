"""Recipes: configs/*.yaml merged over params.yaml, validated, and run as one `dvc exp run`."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tasks.core.config import Params
from tasks.recipe import command, merged
from tests.conftest import (
    CORD_JSON,
    CORD_SAMPLE,
    REPO,
    git_env,
    needs,
    small_params,
    write_params,
)

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
    # as on a GPU worker where data/ was made from the recipe's source: nothing to refresh
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "SOURCE.json").write_text('{"source": "hf:naver-clova-ix/cord-v2"}')
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


@pytest.mark.slow  # data refresh, ingest and a training run end to end
@needs(CORD_JSON)
@needs(CORD_SAMPLE)
def test_a_recipe_trains_on_the_data_it_names(tmp_path, monkeypatch):
    """data/ left by a synthetic run, and a recipe whose source is the local cord-v2 hub
    replica (`hf:<dir>`): `make recipe` first makes data/ from that source (and `dvc add`s
    it), so the experiment's ingest reads those rows; with --keep-data it refuses instead,
    naming both sources. The version's lineage tag names what data/ really holds."""
    from devtools.replica import build_cord_v2_replica
    from tasks.refresh_data import run_data
    from tasks.registry.lineage import collect, data_source

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("PATH", git_env()["PATH"])  # the venv's dvc
    sizes = {"train": 6, "validation": 3, "test": 3}
    hub = build_cord_v2_replica(CORD_JSON, CORD_SAMPLE, tmp_path / "cord-v2", sizes)
    project = tmp_path / "project"
    project.mkdir()
    params = small_params()
    write_params(project, params)
    probe = {"cmd": "python -c 'print(1)'", "deps": ["data"], "params": ["data"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": probe}}))
    env = git_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
    run_data(params.data, project / "data", "synthetic", project)
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "synthetic"], cwd=project, env=env, check=True)
    recipe = tmp_path / "hub.yaml"
    recipe.write_text(f"data:\n  source: hf:{hub}\n")
    cmd = [sys.executable, "-m", "tasks.recipe", "--params", "params.yaml"]

    kept = subprocess.run(
        [*cmd, "--keep-data", str(recipe)], cwd=project, env=env, capture_output=True, text=True
    )
    assert kept.returncode == 2 and "Traceback" not in kept.stderr
    assert kept.stderr.strip() == (
        f"recipe: {project / 'data'} holds synthetic, the recipe trains on hf:{hub}: run it "
        f"without --keep-data to refresh data/, or `make data SOURCE=hf:{hub}`"
    )
    assert data_source(project / "data") == "synthetic"

    # refresh, then `dvc exp run` of the (stage-less) project
    done = subprocess.run(
        [*cmd, str(recipe), "--", "--dry"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"refreshed from hf:{hub}: 12 records" in done.stdout
    assert data_source(project / "data") == f"hf:{hub}"
    rows = (project / "data" / "metadata.jsonl").read_text().splitlines()
    assert len(rows) == 12 and all("cord-v2-" in json.loads(r)["file_name"] for r in rows)
    md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    tags = collect(project, params.digest())
    assert tags["data_md5"] == md5 and tags["data_source"] == f"hf:{hub}"
