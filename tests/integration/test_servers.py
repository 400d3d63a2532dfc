"""The multi-machine shape of docker/compose.yaml, natively on loopback, against real servers:

- `mlflow server` on PostgreSQL (SQLite where no PostgreSQL is installed) with its artifact proxy,
- `prefect server start`, the project's prefect.yaml deployed with `prefect deploy --all`,
  a `process` worker on the `cpu` pool and one on the `gpu` pool,
- moto's S3 server in MinIO's place: MLflow's artifact store (`s3://mlflow`) and the DVC
  remote (`s3://dvc`), reached through AWS_ENDPOINT_URL as in compose,

then the retrain deployment runs through the cpu worker, hands its train stage to the gpu
worker's deployment, and the model version lands in the server's registry with its lineage.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from devtools.servers import QUIET, bin_path, s3_client, spawn, stack
from tests.conftest import REPO, git_env, make_project, small_params

pytestmark = pytest.mark.slow
NAME = "receipt-llava"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    with stack(tmp_path_factory.mktemp("services"), use_s3=True) as running:
        yield running


@pytest.fixture(scope="module")
def project(tmp_path_factory, services):
    root = make_project(tmp_path_factory.mktemp("project"), small_params())
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    for cmd in (
        ["dvc", "remote", "add", "-d", "shared", services["dvc_remote"]],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "flows + shared remote"],
    ):
        subprocess.run(cmd, cwd=root, env=git_env(), check=True, capture_output=True)
    return root


def client_env(services, project) -> dict[str, str]:
    """What a worker host is given: where the servers are, and the repo checkout."""
    return (
        git_env()
        | QUIET
        | services["env"]
        | {
            "PREFECT_HOME": str(project.parent / "prefect-client"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "RECEIPT_REPO_DIR": str(project),
        }
    )


def prefect(env, project, *args: str) -> str:
    done = subprocess.run(
        [bin_path("prefect"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def deployed_run(services, project):
    """Pools, `prefect deploy --all`, two workers, one run of retrain/weekly to its end."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = client_env(services, project)
    for pool in ("cpu", "gpu"):
        prefect(env, project, "work-pool", "create", pool, "--type", "process")
    out = prefect(env, project, "--no-prompt", "deploy", "--all")
    assert "retrain/weekly" in out and "train-stage/gpu" in out
    logs = project.parent / "logs"
    with (
        spawn([bin_path("prefect"), "worker", "start", "--pool", "cpu"], logs / "cpu.log", env),
        spawn([bin_path("prefect"), "worker", "start", "--pool", "gpu"], logs / "gpu.log", env),
        temporary_settings({PREFECT_API_URL: services["env"]["PREFECT_API_URL"]}),
    ):
        run = run_deployment("retrain/weekly", timeout=1200, poll_interval=3)
        assert isinstance(run, FlowRun)  # called from sync code: not a coroutine
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
            deployments = {d.id: d for d in client.read_deployments()}
    worker_logs = "".join(p.read_text(errors="replace")[-4000:] for p in logs.glob("*.log"))
    assert run.state and run.state.is_completed(), f"{run.state}\n{worker_logs}"
    return {"run": run, "runs": runs, "deployments": deployments}


def test_retrain_runs_as_a_deployment_and_hands_train_to_the_gpu_pool(deployed_run):
    run, runs, deployments = deployed_run["run"], deployed_run["runs"], deployed_run["deployments"]
    names = {i: d.name for i, d in deployments.items()}
    assert run.work_pool_name == "cpu" and names[run.deployment_id] == "weekly"
    # prefect.yaml's schedule is on the server: the cron fires without anyone at the keyboard
    (schedule,) = deployments[run.deployment_id].schedules
    assert schedule.schedule.cron == "0 3 * * 1" and schedule.active
    train = [r for r in runs if r.deployment_id and names[r.deployment_id] == "gpu"]
    assert len(train) == 1 and train[0].work_pool_name == "gpu"
    assert train[0].state and train[0].state.is_completed()
    assert train[0].parent_task_run_id is not None  # started from inside the retrain run


def test_model_version_lands_in_the_remote_registry_with_lineage(deployed_run, services, project):
    import mlflow
    from mlflow import MlflowClient

    from tasks import lineage

    client = MlflowClient(tracking_uri=services["env"]["MLFLOW_TRACKING_URI"])
    (mv,) = client.search_model_versions(f"name='{NAME}'")
    tags = mv.tags
    commit, _ = lineage.git_state(project)
    assert tags["git_commit"] == commit
    assert tags["data_md5"] == lineage.data_md5(project)
    assert tags["params_digest"] == small_params().digest()
    lock = lineage.stage_hashes(project)
    assert all(tags[f"dvc_stage.{s}"] == lock[s] for s in ("ingest", "train", "evaluate"))
    assert client.get_model_version_by_alias(NAME, "champion").version == mv.version
    # Artifacts went through the server's proxy into its store, none into the project.
    assert mv.run_id
    run = client.get_run(mv.run_id)
    assert run.data.metrics["train_processes"] == 1  # the gpu worker here has no GPU: 1 process
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert services["artifacts"] == "s3://mlflow"
    stored = s3_keys(services, "mlflow")
    assert any(k.endswith("/MLmodel") for k in stored) and any(run.info.run_id in k for k in stored)
    assert not (project / "mlartifacts").exists() and not (project / "mlflow.db").exists()
    # ... and the registered model loads back through the server and reads a receipt.
    mlflow.set_tracking_uri(services["env"]["MLFLOW_TRACKING_URI"])
    image = next((project / "data" / "images").glob("*-test-*.png")).read_bytes()
    answer = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(
        pd.DataFrame({"image": [image]})
    )
    assert list(answer.columns) == ["json", "valid_json", "raw", "warnings"] and answer["raw"][0]


def s3_keys(services, bucket: str) -> list[str]:
    pages = s3_client(services["env"]).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_dvc_remote_holds_the_data_the_model_was_trained_on(deployed_run, services, project):
    md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    keys = set(s3_keys(services, "dvc"))
    manifest_key = f"store/files/md5/{md5[:2]}/{md5[2:]}"
    assert manifest_key in keys  # the data's .dir manifest, pushed by the flow's push task
    done = subprocess.run(
        ["dvc", "status", "--cloud", "--json"],
        cwd=project,
        env=git_env() | services["env"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and json.loads(done.stdout or "{}") == {}, done.stdout + done.stderr
    files = [k for k in keys if k.startswith("store/files/md5/") and not k.endswith(".dir")]
    n_images = len(list((project / "data" / "images").glob("*.png")))
    assert len(files) >= n_images  # every image (and the metadata) is in the bucket
