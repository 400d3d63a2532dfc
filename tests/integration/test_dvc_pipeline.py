"""End to end through DVC itself: make-data -> dvc repro (every stage) -> no-op repro -> push."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, small_params

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def sh(*cmd, cwd, check=True):
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh clone-like project: this repo's code and dvc.yaml, params shrunk for 2 cores."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(
        yaml.safe_dump(small_params().model_dump(mode="json", by_alias=True))
    )
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "remote", "add", "-d", "local", str(root / "remote"), cwd=root)
    return root


def test_make_data_then_full_repro_then_noop(project):
    sh(sys.executable, "-m", "tasks.data", cwd=project)
    md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    out = sh("dvc", "repro", cwd=project)
    for stage in ("ingest", "validate", "base", "train", "evaluate", "merge"):
        assert f"Running stage '{stage}'" in out.stdout
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert {"json_valid_rate", "base_json_valid_rate", "ted_accuracy", "field_f1"} <= set(metrics)
    assert json.loads((project / "reports" / "validation.json").read_text())["success"] is True
    assert (project / "artifacts" / "merged" / "model.safetensors").is_file()
    assert (project / "artifacts" / "adapter" / "adapter_model.safetensors").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["ingest"]["deps"][0]["md5"] == md5

    again = sh("dvc", "repro", cwd=project)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()

    sh("dvc", "push", "-q", cwd=project)
    assert any((project / "remote").rglob("*"))


def test_new_data_version_gets_its_own_hash_and_a_failed_validation_stops_repro(project):
    first = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    meta = project / "data" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    rows[0]["ground_truth"] = "{broken"
    meta.unlink()  # dvc add protects cached files: replace, don't edit in place
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sh("dvc", "add", "-q", "data", cwd=project)
    second = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert second != first
    out = sh("dvc", "repro", cwd=project, check=False)
    assert out.returncode != 0
    bad_id = Path(rows[0]["file_name"]).stem
    assert f"{bad_id}: ground_truth: not JSON" in out.stderr + out.stdout
    assert "Running stage 'train'" not in out.stdout
