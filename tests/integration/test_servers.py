"""The multi-machine shape of docker/compose.yaml, natively on loopback, against real servers:

- `mlflow server` on PostgreSQL (SQLite where no PostgreSQL is installed) with its artifact proxy,
- `prefect server start`, the project's prefect.yaml deployed with `prefect deploy --all`,
- moto's S3 server in MinIO's place: MLflow's artifact store (`s3://mlflow`) and the DVC
  remote (`s3://dvc`), reached through AWS_ENDPOINT_URL as in compose,
- two hosts that share no working tree: a bare git origin, the pipeline's clone with a
  `process` worker on the `cpu` pool, and a GPU host's clone with one on the `gpu` pool,

then the retrain deployment runs through the cpu worker and hands its train stage to the gpu
worker, whose trainer is killed once its first checkpoint is in the remote: Prefect retries
the stage, it resumes from that checkpoint, and its outputs come back through git's commit,
the DVC remote and the run's handback. The model version lands in the server's registry
with a lineage that names both clones.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from devtools.servers import QUIET, bin_path, s3_client, spawn, stack
from tests.conftest import REPO, git_env, make_project, small_params, trainer_pids

pytestmark = pytest.mark.slow
NAME = "receipt-llava"
# Long enough to kill mid-run: a checkpoint pushed every 5 of 40 steps.
PARAMS = small_params(
    train={"args": {"max_steps": 40, "save_steps": 5, "save_total_limit": 1}},
    remote={"checkpoint_every": 5},
)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    with stack(tmp_path_factory.mktemp("services"), use_s3=True) as running:
        yield running


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, services):
    """origin.git, and two clones of it: the pipeline's (cpu) and the GPU host's (gpu)."""
    root = tmp_path_factory.mktemp("hosts")
    project = make_project(root / "project", PARAMS)
    shutil.copytree(REPO / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "prefect.yaml", project / "prefect.yaml")
    for cmd in (
        ["dvc", "remote", "add", "-d", "shared", services["dvc_remote"]],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "flows + shared remote"],
        ["git", "clone", "-q", "--bare", str(project), str(root / "origin.git")],
        ["git", "clone", "-q", str(root / "origin.git"), str(root / "cpu")],
        ["git", "clone", "-q", str(root / "origin.git"), str(root / "gpu")],
    ):
        subprocess.run(cmd, cwd=project, env=git_env(), check=True, capture_output=True)
    return {"cpu": root / "cpu", "gpu": root / "gpu", "origin": root / "origin.git"}


def client_env(services, hosts, checkout: Path) -> dict[str, str]:
    """What a worker host is given: where the servers and the git origin are, its checkout."""
    return (
        git_env()
        | QUIET
        | services["env"]
        | {
            "PREFECT_HOME": str(checkout.parent / f"prefect-client-{checkout.name}"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "RECEIPT_GIT_URL": str(hosts["origin"]),
            "RECEIPT_REPO_DIR" if checkout == hosts["cpu"] else "RECEIPT_TRAIN_CHECKOUT": str(
                checkout
            ),
        }
    )


def prefect(env, cwd, *args: str) -> str:
    done = subprocess.run(
        [bin_path("prefect"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def kill_after_first_push(services, gpu: Path, killed: list[dict]) -> None:
    """SIGKILL the GPU host's trainer once a whole checkpoint is in the DVC remote."""
    s3 = s3_client(services["env"])
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        listed = s3.list_objects_v2(Bucket="dvc", Prefix="store/checkpoints/")
        done = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".done")]
        pids = trainer_pids(gpu)
        if done and pids:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.append({"pids": pids, "pushed": done})
            return
        time.sleep(0.1)


@pytest.fixture(scope="module")
def deployed_run(services, hosts):
    """Pools, `prefect deploy --all`, a worker per pool in its own clone, one run of
    retrain/weekly to its end, its trainer killed once along the way."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    cpu, gpu = hosts["cpu"], hosts["gpu"]
    env_cpu, env_gpu = client_env(services, hosts, cpu), client_env(services, hosts, gpu)
    for pool in ("cpu", "gpu"):
        prefect(env_cpu, cpu, "work-pool", "create", pool, "--type", "process")
    out = prefect(env_cpu, cpu, "--no-prompt", "deploy", "--all")
    assert "retrain/weekly" in out and "train-stage/gpu" in out
    logs = cpu.parent / "logs"
    killed: list[dict] = []
    killer = threading.Thread(
        target=kill_after_first_push, args=(services, gpu, killed), daemon=True
    )
    worker = [bin_path("prefect"), "worker", "start", "--pool"]
    with (
        spawn([*worker, "cpu"], logs / "cpu.log", env_cpu, cwd=cpu),
        spawn([*worker, "gpu"], logs / "gpu.log", env_gpu, cwd=gpu),
        temporary_settings({PREFECT_API_URL: services["env"]["PREFECT_API_URL"]}),
    ):
        killer.start()
        run = run_deployment("retrain/weekly", timeout=1500, poll_interval=3)
        assert isinstance(run, FlowRun)  # called from sync code: not a coroutine
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
            deployments = {d.id: d for d in client.read_deployments()}
    killer.join(timeout=1)
    worker_logs = "".join(p.read_text(errors="replace")[-6000:] for p in logs.glob("*.log"))
    assert run.state and run.state.is_completed(), f"{run.state}\n{worker_logs}"
    return {"run": run, "runs": runs, "deployments": deployments, "killed": killed}


def test_retrain_runs_as_a_deployment_and_hands_train_to_the_gpu_pool(deployed_run):
    run, runs, deployments = deployed_run["run"], deployed_run["runs"], deployed_run["deployments"]
    names = {i: d.name for i, d in deployments.items()}
    assert run.work_pool_name == "cpu" and names[run.deployment_id] == "weekly"
    # prefect.yaml's schedule is on the server: the cron fires without anyone at the keyboard
    (schedule,) = deployments[run.deployment_id].schedules
    assert schedule.schedule.cron == "0 3 * * 1" and schedule.active
    train = sorted(
        (r for r in runs if r.deployment_id and names[r.deployment_id] == "gpu"),
        key=lambda r: r.expected_start_time,
    )
    # the killed run, then Prefect's retry of the stage, both on the gpu pool
    assert [r.work_pool_name for r in train] == ["gpu", "gpu"]
    assert train[0].state and not train[0].state.is_completed()
    assert train[1].state and train[1].state.is_completed()
    assert all(r.parent_task_run_id is not None for r in train)  # started by the retrain run


def test_the_killed_train_run_resumed_from_its_pushed_checkpoint(deployed_run, hosts):
    (killed,) = deployed_run["killed"]
    pushed = sorted(int(k.rsplit("checkpoint-", 1)[1][: -len(".done")]) for k in killed["pushed"])
    summary = json.loads((hosts["cpu"] / "reports" / "train.json").read_text())
    step = summary["resumed_from_step"]
    assert summary["checkpoints"]["pulled_step"] == step and step >= pushed[-1] > 0
    assert summary["steps"] == 40 and summary["steps_this_run"] == 40 - step < 40
    # ... and the finished run cleared its checkpoints from the remote


def test_the_gpu_clone_trained_and_the_cpu_clone_took_its_outputs(deployed_run, hosts, services):
    cpu, gpu = hosts["cpu"], hosts["gpu"]
    lock_cpu = yaml.safe_load((cpu / "dvc.lock").read_text())["stages"]
    lock_gpu = yaml.safe_load((gpu / "dvc.lock").read_text())["stages"]
    assert lock_cpu["train"] == lock_gpu["train"]
    # the adapter came through the DVC remote (S3), byte for byte
    (adapter,) = [o for o in lock_cpu["train"]["outs"] if o["path"] == "artifacts/adapter"]
    md5 = adapter["md5"]
    assert f"store/files/md5/{md5[:2]}/{md5[2:]}" in set(s3_keys(services, "dvc"))
    for f in (gpu / "artifacts" / "adapter").rglob("*"):
        if f.is_file():
            assert (cpu / f.relative_to(gpu)).read_bytes() == f.read_bytes(), f
    # the two clones share no working tree: the GPU one has train's deps only, no data
    assert not (gpu / "data").exists() and not (gpu / "artifacts" / "merged").exists()
    assert not list(s3_keys(services, "dvc", "store/checkpoints/"))
    status = subprocess.run(
        ["dvc", "status", "--json"],
        cwd=cpu,
        env=git_env() | services["env"],
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    # Clean from data to registration. The champion stage always runs (it reads the
    # registry); the run's promotion rewrote reports/champion.json after the gate read it,
    # which is what makes the next run re-gate against the new champion.
    report = json.loads(status.stdout or "{}")
    promoted = [{"changed outs": {"reports/champion.json": "modified"}}, "always changed"]
    assert report.pop("champion") in (["always changed"], promoted)
    assert report in ({}, {"gate": [{"changed deps": {"reports/champion.json": "modified"}}]})


def test_model_version_lands_in_the_remote_registry_with_lineage(deployed_run, services, hosts):
    import mlflow
    from mlflow import MlflowClient

    from tasks.registry import lineage

    cpu, gpu = hosts["cpu"], hosts["gpu"]
    client = MlflowClient(tracking_uri=services["env"]["MLFLOW_TRACKING_URI"])
    (mv,) = client.search_model_versions(f"name='{NAME}'")
    tags = mv.tags
    commit, _ = lineage.git_state(cpu)
    assert tags["git_commit"] == commit == lineage.git_state(gpu)[0]
    assert tags["git_dirty"] == "false"
    assert tags["data_md5"] == lineage.data_md5(cpu)
    assert tags["params_digest"] == PARAMS.digest()
    lock = lineage.stage_hashes(cpu)
    assert all(tags[f"dvc_stage.{s}"] == lock[s] for s in ("ingest", "train", "evaluate"))
    assert lineage.stage_hashes(gpu)["train"] == tags["dvc_stage.train"]
    # both hosts named: where it trained (and on what), where it was registered
    assert tags["trained_on.workdir"] == str(gpu.resolve())
    assert tags["trained_on.device"] == "cpu"  # no GPU on this machine
    assert tags["registered_on.workdir"] == str(cpu.resolve())
    assert client.get_model_version_by_alias(NAME, "champion").version == mv.version
    # Artifacts went through the server's proxy into its store, none into the project.
    assert mv.run_id
    run = client.get_run(mv.run_id)
    assert run.data.metrics["train_processes"] == 1  # the gpu worker here has no GPU: 1 process
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert services["artifacts"] == "s3://mlflow"
    stored = s3_keys(services, "mlflow")
    assert any(k.endswith("/MLmodel") for k in stored) and any(run.info.run_id in k for k in stored)
    assert not (cpu / "mlartifacts").exists() and not (cpu / "mlflow.db").exists()
    # ... and the registered model loads back through the server and reads a receipt.
    mlflow.set_tracking_uri(services["env"]["MLFLOW_TRACKING_URI"])
    image = next((cpu / "data" / "images").glob("*-test-*.png")).read_bytes()
    answer = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(
        pd.DataFrame({"image": [image]})
    )
    assert (
        list(answer.columns) == ["json", "valid_json", "raw", "confidence", "warnings"]
        and answer["raw"][0]
    )


def s3_keys(services, bucket: str, prefix: str = "") -> list[str]:
    pages = (
        s3_client(services["env"])
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=prefix)
    )
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_dvc_remote_holds_the_data_the_model_was_trained_on(deployed_run, services, hosts):
    project = hosts["cpu"]
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
