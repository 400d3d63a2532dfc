"""End to end through DVC itself: make-data -> dvc repro (every stage, register included)
-> no-op repro -> push; a bad record stops the repro at validation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import git_env, make_project, small_params

pytestmark = pytest.mark.slow


def sh(*cmd, cwd, check=True):
    return subprocess.run(
        list(cmd), cwd=cwd, env=git_env(), capture_output=True, text=True, check=check
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("project"), small_params())


def registry(project):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def test_make_data_then_full_repro_registers_then_noop(project):
    sh(sys.executable, "-m", "tasks.data", cwd=project)
    md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    out = sh("dvc", "repro", cwd=project)
    for stage in ("ingest", "validate", "base", "train", "evaluate", "gate", "merge", "register"):
        assert f"Running stage '{stage}'" in out.stdout
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert {"json_valid_rate", "base_json_valid_rate", "ted_accuracy", "field_f1"} <= set(metrics)
    assert json.loads((project / "reports" / "validation.json").read_text())["success"] is True
    assert json.loads((project / "reports" / "gate.json").read_text())["passed"] is True
    assert (project / "artifacts" / "merged" / "model.safetensors").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["ingest"]["deps"][0]["md5"] == md5
    reg = json.loads((project / "reports" / "registration.json").read_text())
    assert reg["version"] == "1" and reg["tags"]["data_md5"] == md5

    again = sh("dvc", "repro", cwd=project)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout.lower()
    assert len(registry(project).search_model_versions("name='receipt-llava'")) == 1

    sh("dvc", "push", "-q", cwd=project)
    assert any((project / "dvc-remote").rglob("*"))


def test_a_bad_record_gets_a_new_data_hash_and_stops_the_repro_at_validation(project):
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
    assert len(registry(project).search_model_versions("name='receipt-llava'")) == 1
