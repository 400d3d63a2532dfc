"""The retraining flow: refresh data -> each DVC stage as a Prefect task -> push -> promote.

    python -m flows.retrain [--repo .] [--source synthetic] [--no-promote]

DVC decides what is stale (each task runs `dvc repro --single-item <stage>` in the repo);
Prefect adds retries, timeouts, logs, artifacts and where a step runs. The train stage runs
in-process locally, or as its own deployment on a GPU work pool when
RECEIPT_TRAIN_DEPLOYMENT names one (e.g. `train-stage/gpu`, see prefect.yaml). That host
shares no disk with this one: it trains this checkout's commit in its own clone, its deps
and outs travel through the DVC remote and its dvc.lock entry comes back (tasks/handover.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

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


class StageFailed(RuntimeError):
    pass


HANDBACK_KEY = "train-handback"


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dvc …` in the repo; stages see the repo's tracking URI (env, else its mlflow.db)."""
    from tasks.tracking import tracking_uri

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(repo), **(env or {})}
    return subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, env=env)


@task(retries=2, retry_delay_seconds=30, timeout_seconds=3600)
def refresh_data(repo: str, source: str | None) -> str:
    """`make data`: snapshot the source into data/ and `dvc add` it; returns the data md5."""
    from tasks.config import load_params
    from tasks.data import run_data

    params = load_params(Path(repo) / "params.yaml")
    result = run_data(params.data, Path(repo) / "data", source, repo=repo)
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


@task
def stale_stages(repo: str) -> set[str] | None:
    """The stages `dvc status` reports changed (one DVC start-up instead of one per stage);
    None when it cannot tell, and then every stage goes through `dvc repro`."""
    done = dvc(Path(repo), "status", "--json")
    try:
        report = json.loads(done.stdout or "{}") if done.returncode == 0 else None
    except json.JSONDecodeError:
        report = None
    if report is None:
        get_run_logger().warning("dvc status failed; every stage asks dvc repro itself")
        return None
    return {name.rsplit(":", 1)[-1] for name in report}


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
    from tasks import handover
    from tasks.checkpoints import EVERY_ENV
    from tasks.config import load_params

    logger = get_run_logger()
    workdir = workdir or os.environ.get("RECEIPT_TRAIN_CHECKOUT") or "."
    wd = handover.checkout(workdir, request["url"], request["commit"])
    logger.info("train: %s at %s (for %s)", wd, request["commit"][:12], request.get("from"))
    handover.receive(wd, request)
    every = load_params(wd / "params.yaml").remote.checkpoint_every
    _repro(str(wd), "train", env={EVERY_ENV: str(every)})
    back = handover.handback(wd)
    summary = json.loads(back["files"]["reports/train.json"])
    create_markdown_artifact(
        f"# Train stage on {back['host']} ({back['device']})\n\n"
        f"{summary['steps']} steps ({summary['steps_this_run']} in this run, resumed from step "
        f"{summary['resumed_from_step']}), commit `{back['commit'][:12]}`, outs pushed to the "
        f"DVC remote. The dvc.lock entry and small outputs:\n\n```json\n{json.dumps(back)}\n```\n",
        key=HANDBACK_KEY,
        description="what the pipeline's host applies: dvc.lock entry + uncached outs",
    )
    return back


def read_handback(flow_run_id: Any) -> dict[str, Any]:
    """The `train-handback` artifact of a train-stage run, parsed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[HANDBACK_KEY])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    if not found:
        raise StageFailed(f"train-stage run {flow_run_id}: completed without a handback")
    text = str(found[-1].data)
    return json.loads(text.split("```json\n", 1)[1].rsplit("\n```", 1)[0])


@task(retries=2, retry_delay_seconds=10)
def train_remote(repo: str, deployment: str) -> dict[str, Any]:
    """Hand the train stage to `deployment` (a GPU pool), then take its outputs in.

    A run that fails or crashes (a killed process, a lost host) is retried; the retry resumes
    from the last checkpoint the failed one pushed to the DVC remote."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from tasks import handover

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
    back = read_handback(run.id)
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
def publish_summary(repo: str) -> dict[str, Any]:
    """A markdown artifact with the metrics (before/after) and the gate decision."""
    reports = Path(repo) / "reports"
    metrics = (
        json.loads((reports / "metrics.json").read_text())
        if (reports / "metrics.json").exists()
        else {}
    )
    gate = (
        json.loads((reports / "gate.json").read_text()) if (reports / "gate.json").exists() else {}
    )
    lines = ["# Retrain", "", "| metric | base | fine-tuned |", "|---|---|---|"]
    for k in ("json_valid_rate", "ted_accuracy", "field_f1", "exact_match"):
        if k in metrics:
            lines.append(f"| {k} | {metrics.get('base_' + k)} | {metrics[k]} |")
    if gate:
        lines += [
            "",
            f"**Gate: {'passed' if gate['passed'] else 'FAILED'}**",
            "",
            "| criterion | value | bound | passed |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c['criterion']} | {c['value']} | {c['bound']} | {c['passed']} |"
            for c in gate["criteria"]
        ]
    review = reports / "review.html"
    if review.exists():  # every test receipt, expected vs predicted, worst first
        registration = reports / "registration.json"
        run = json.loads(registration.read_text()).get("run_id") if registration.exists() else None
        where = f" (also in MLflow run `{run}` under reports/)" if run else ""
        lines += ["", f"[Review page]({review.resolve().as_uri()}){where}"]
        create_link_artifact(
            review.resolve().as_uri(),
            link_text="review page: test receipts, worst first",
            key="review-page",
        )
    create_markdown_artifact(
        "\n".join(lines), key="retrain-summary", description="metrics and gate decision"
    )
    return {"metrics": metrics, "gate": gate}


@task
def promote_task(repo: str) -> dict[str, Any]:
    from tasks.config import load_params
    from tasks.promote import PromotionRefused, promote
    from tasks.tracking import setup

    params = load_params(Path(repo) / "params.yaml")
    client = setup(params.register_.experiment, repo)
    try:
        result = promote(client, params, repo=repo) | {"promoted": True}
    except PromotionRefused as exc:
        result = {"promoted": False, "reason": str(exc)}
    get_run_logger().info("promotion: %s", result)
    create_markdown_artifact(
        f"# Promotion\n\n{'promoted' if result['promoted'] else 'refused'}: {result['reason']}",
        key="promotion",
    )
    return result


@flow(name="retrain", log_prints=True)
def retrain(
    repo: str = ".", source: str | None = None, refresh: bool = True, promote: bool = True
) -> dict:
    """Refresh data, run every DVC stage in order, push, register, and optionally promote."""
    repo = str(Path(repo).resolve())
    data_md5 = refresh_data(repo, source) if refresh else None
    ran: dict[str, str] = {}
    train_deployment = os.environ.get("RECEIPT_TRAIN_DEPLOYMENT")
    stale = stale_stages(repo)
    for stage in STAGES:
        # Fresh in `dvc status` and nothing upstream re-ran in this flow: no `dvc repro` needed.
        # The champion stage always runs; what it changed shows in a second `dvc status`.
        upstream = {how for s, how in ran.items() if s != "champion"}
        if stale is not None and stage not in stale and not {"ran", "remote"} & upstream:
            ran[stage] = "fresh"
            continue
        try:
            if stage == "train" and train_deployment:
                train_remote(repo, train_deployment)
                ran[stage] = "remote"
            else:
                # a failed gate is a verdict, not a flake: no retry
                run_stage = repro_stage.with_options(
                    timeout_seconds=STAGE_TIMEOUT_S.get(stage, 1800),
                    retries=0 if stage == "gate" else 1,
                )
                ran[stage] = run_stage(repo, stage)
                if stage == "champion" and stale is not None:
                    stale = stale_stages(repo)
        except Exception:
            if stage == "gate":
                publish_summary(repo)  # the report says which criterion failed and by how much
            raise
    push(repo)
    summary = publish_summary(repo)
    registration = json.loads((Path(repo) / "reports" / "registration.json").read_text())
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
    from tasks.io import quiet_telemetry

    quiet_telemetry()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repo", default=".")
    ap.add_argument("--source", default=None)
    ap.add_argument("--no-refresh", action="store_true", help="keep data/ as it is")
    ap.add_argument("--no-promote", action="store_true")
    args = ap.parse_args(argv)
    out = retrain(args.repo, args.source, refresh=not args.no_refresh, promote=not args.no_promote)
    print(
        json.dumps(
            {k: v for k, v in out.items() if k != "registration"}
            | {"version": out["registration"]["version"]},
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
