"""The retraining flow: refresh data -> each DVC stage as a Prefect task -> push -> promote.

    python -m flows.retrain [--repo .] [--source synthetic] [--no-promote]

DVC decides what is stale (each task runs `dvc repro --single-item <stage>` in the repo);
Prefect adds retries, timeouts, logs, artifacts and where a step runs. The train stage runs
in-process locally, or as its own deployment on a GPU work pool when
its `train_deployment` parameter names one (e.g. `train-stage/gpu`, see prefect.yaml). That host
shares no disk with this one: it trains this checkout's commit in its own clone, its deps
and outs travel through the DVC remote and its dvc.lock entry comes back (tasks/remote/handover.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger, task

from flows import report
from tasks.core.errors import Refused

STAGES = (
    "ingest",
    "validate",
    "base",
    "train",
    "evaluate",
    "champion",
    "gate",
    "merge",
    "register",
)
STAGE_TIMEOUT_S = {"train": 6 * 3600, "evaluate": 2 * 3600}


class StageFailed(Refused):
    """A stage, the push or the GPU host's run failed: the flow stops there (exit 1)."""


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dvc …` in the repo; stages see the repo's tracking URI (env, else its mlflow.db)."""
    from tasks.core.dvc import run_dvc
    from tasks.registry.tracking import tracking_uri

    env = {"MLFLOW_TRACKING_URI": tracking_uri(repo), **(env or {})}
    return run_dvc(repo, *args, env=env, check=False)


@task(retries=2, retry_delay_seconds=30, timeout_seconds=3600)
def refresh_data(repo: str, source: str | None) -> str:
    """`make data`: snapshot the source into data/ and `dvc add` it; returns the data md5."""
    from tasks.core.config import load_params
    from tasks.refresh_data import run_data

    params = load_params(Path(repo) / "params.yaml")
    result = run_data(params.data, Path(repo) / params.paths.data, source, repo=repo)
    get_run_logger().info(
        "data: %s records from %s, md5 %s", result["records"], result["source"], result["md5"]
    )
    return result["md5"]


def _repro(repo: str, stage: str, env: dict[str, str] | None = None) -> str:
    done = dvc(Path(repo), "repro", "--single-item", stage, env=env)
    if done.returncode != 0:
        raise StageFailed(f"stage {stage!r} failed:\n{(done.stderr or done.stdout)[-4000:]}")
    ran = f"Running stage '{stage}'" in done.stdout
    get_run_logger().info("stage %s: %s", stage, "ran" if ran else "up to date, skipped by DVC")
    return "ran" if ran else "skipped"


@task(retries=1, retry_delay_seconds=10)
def repro_stage(repo: str, stage: str) -> str:
    """One DVC stage; retried once (a flaky filesystem, an OOM-killed worker)."""
    return _repro(repo, stage)


@flow(name="train-stage")
def train_stage(request: dict[str, Any], workdir: str | None = None) -> dict[str, Any]:
    """The train stage on a GPU host (deployed on the GPU work pool, started by the retrain
    flow): `request`'s commit checked out in `workdir` (default: RECEIPT_TRAIN_CHECKOUT, a
    checkout the worker keeps, else the run's own clone; cloned if absent), train's deps
    pulled from the DVC remote, `dvc repro --single-item train` pushing a checkpoint every
    `remote.checkpoint_every` steps, its outs pushed. Returns the handback, and publishes it
    as the run's `train-handback` artifact (the pipeline's host reads it from there)."""
    from tasks.remote import handover
    from tasks.remote.checkpoints import PUSH_ENV

    logger = get_run_logger()
    workdir = workdir or os.environ.get("RECEIPT_TRAIN_CHECKOUT") or "."
    wd = handover.checkout(workdir, request["url"], request["commit"])
    logger.info("train: %s at %s (for %s)", wd, request["commit"][:12], request.get("from"))
    handover.receive(wd, request)
    _repro(str(wd), "train", env={PUSH_ENV: "1"})
    back = handover.handback(wd)
    report.publish_handback(back)
    return back


@task(retries=2, retry_delay_seconds=10)
def train_remote(repo: str, deployment: str) -> dict[str, Any]:
    """Hand the train stage to `deployment` (a GPU pool), then take its outputs in.

    A run that fails or crashes (a killed process, a lost host) is retried; the retry resumes
    from the last checkpoint the failed one pushed to the DVC remote."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from tasks.remote import handover

    req = handover.request(repo)
    run = cast(
        FlowRun,
        run_deployment(deployment, parameters={"request": req}, timeout=STAGE_TIMEOUT_S["train"]),
    )
    if run.state and not run.state.is_final():  # timed out waiting: stop it before a retry
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Cancelling(message="timed out"), force=True)
    if not run.state or not run.state.is_completed():
        raise StageFailed(f"train deployment {deployment}: run {run.name} {run.state}")
    back = report.read_handback(run.id)
    if back is None:
        raise StageFailed(f"train-stage run {run.name}: completed without a handback")
    handover.apply(repo, back)
    get_run_logger().info(
        "train: ran on %s (%s) in %s; dvc.lock entry applied, adapter pulled",
        back["host"],
        back["device"],
        back["workdir"],
    )
    return back


@task(retries=2, retry_delay_seconds=15, timeout_seconds=1800)
def push(repo: str) -> None:
    done = dvc(Path(repo), "push", "--quiet")
    if done.returncode != 0:
        raise StageFailed(f"dvc push failed:\n{done.stderr[-2000:]}")


@task
def summarize(repo: str) -> dict[str, Any]:
    """The retrain summary artifact (flows/report.py); the metrics and gate report it shows."""
    return report.publish_summary(repo)


@task
def promote_task(repo: str) -> dict[str, Any]:
    from tasks.core.config import load_params
    from tasks.promote import PromotionRefused, promote
    from tasks.registry.tracking import setup

    params = load_params(Path(repo) / "params.yaml")
    client = setup(params.register_.experiment, repo)
    try:
        result = promote(client, params, repo=repo) | {"promoted": True}
    except PromotionRefused as exc:
        result = {"promoted": False, "reason": str(exc)}
    get_run_logger().info("promotion: %s", result)
    report.publish_promotion(result)
    return result


@flow(name="retrain", log_prints=True)
def retrain(
    repo: str = ".",
    source: str | None = None,
    refresh: bool = True,
    promote: bool = True,
    train_deployment: str | None = None,
) -> dict:
    """Refresh data, run every DVC stage in order, push, register, and optionally promote.

    DVC decides what each stage does (`dvc repro --single-item`: run, or skip as up to date).
    With `train_deployment` (e.g. train-stage/gpu, prefect.yaml) the train stage runs there."""
    repo = str(Path(repo).resolve())
    data_md5 = refresh_data(repo, source) if refresh else None
    ran: dict[str, str] = {}
    for stage in STAGES:
        try:
            if stage == "train" and train_deployment:
                train_remote(repo, train_deployment)
                ran[stage] = "remote"
                continue
            # a failed gate is a verdict, not a flake: no retry
            run_stage = repro_stage.with_options(
                timeout_seconds=STAGE_TIMEOUT_S.get(stage, 1800),
                retries=0 if stage == "gate" else 1,
            )
            ran[stage] = run_stage(repo, stage)
        except Exception:
            if stage == "gate":
                summarize(repo)  # the report says which criterion failed and by how much
            raise
    push(repo)
    summary = summarize(repo)
    from tasks.core.config import load_params

    paths = load_params(Path(repo) / "params.yaml").paths
    registration = json.loads((Path(repo) / paths.registration).read_text())
    result = {
        "data_md5": data_md5,
        "stages": ran,
        "registration": registration,
        # a new version: register ran and found no version with the same model digest
        "registered_now": ran["register"] == "ran" and not registration.get("reused", False),
        "gate": summary["gate"].get("passed"),
    }
    if promote:
        result["promotion"] = promote_task(repo)
    return result


def main(argv: list[str] | None = None) -> None:
    from tasks.core import cli

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    ap = cli.parser(__doc__)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--source", default=None)
    ap.add_argument("--no-refresh", action="store_true", help="keep data/ as it is")
    ap.add_argument("--no-promote", action="store_true")
    ap.add_argument("--train-deployment", default=None, help="train there (e.g. train-stage/gpu)")

    def body(a, p) -> str:
        from tasks.data.sources import parse_source

        parse_source(a.source or p.data.source)  # a bad source: one line, before any run
        out = retrain(
            a.repo,
            a.source,
            refresh=not a.no_refresh,
            promote=not a.no_promote,
            train_deployment=a.train_deployment,
        )
        shown = {k: v for k, v in out.items() if k != "registration"}
        return json.dumps(
            shown | {"version": out["registration"]["version"]}, indent=2, default=str
        )

    cli.run("retrain", ap, body, argv)


if __name__ == "__main__":
    main()
