"""How much the default recipe's result depends on `train.seed` (the adapters' init, data order).

    python -m bench.seeds --seeds 1 2 [--project .] [--out docs/seeds.json]
    python -m bench.seeds --record-make-run [--project .]   # add the project's own make run

Trains params.yaml's recipe once per seed on the project's dataset and base (what `make run`
left in artifacts/), scores the test split with the pipeline's `run_evaluate`, and merges one
row per seed into --out (an earlier seed's row is replaced, others are kept). With
--record-make-run it records the project's last `make run` (reports/train.json and
reports/metrics.json, at params.yaml's seed) instead of training again.

Nothing is chosen from these figures: the default seed stays what params.yaml says. They tell
how far a rerun with another seed may land from the README's figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.cpu import machine
from tasks.core.config import load_params
from tasks.core.io import quiet_telemetry, write_json_atomic
from tasks.evaluate import run_evaluate
from tasks.train import run_train

METRICS = (
    "json_valid_rate",
    "ted_accuracy",
    "field_f1",
    "total_price_exact",
    "distinct_answers",
    "base_json_valid_rate",
)


def commit(project: Path) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def row(
    seed: int, train: dict[str, Any], metrics: dict[str, Any], source: str, lr: float
) -> dict[str, Any]:
    return {
        "seed": seed,
        "source": source,
        "learning_rate": lr,  # with steps: which recipe the row measured
        "steps": train["steps"],
        "train_seconds": train["train_seconds"],
        "final_loss": train["final_loss"],
        **{k: metrics[k] for k in METRICS},
        "n_test": metrics["n"],
    }


def train_and_score(project: Path, seed: int, work: Path) -> dict[str, Any]:
    params = load_params(project / "params.yaml")
    params.train.args = params.train.args.model_copy(update={"seed": seed, "data_seed": seed})
    out = work / f"seed-{seed}"
    art = project / "artifacts"
    train = run_train(
        params, art / "dataset", art / "base", out / "adapter", out / "ckpt", out / "train.json"
    )
    metrics = run_evaluate(
        params, art / "dataset", art / "base", out / "adapter", out / "m.json", out / "p.jsonl"
    )
    return row(seed, train, metrics, "bench.seeds", params.train.args.learning_rate)


def merge(out: Path, rows: list[dict[str, Any]], project: Path) -> dict[str, Any]:
    doc = json.loads(out.read_text()) if out.exists() else {"runs": []}
    seeds = {r["seed"] for r in rows}
    stamp = {
        "date": dt.date.today().isoformat(),
        "machine": f"{machine()}, {torch.get_num_threads()} torch threads",
        "commit": commit(project),
    }
    kept = [r for r in doc["runs"] if r["seed"] not in seeds]
    doc["runs"] = sorted(kept + [r | stamp for r in rows], key=lambda r: r["seed"])
    write_json_atomic(out, doc)
    return doc


def table(doc: dict[str, Any]) -> str:
    head = (
        "| seed | source | lr | steps | train s | final loss | json valid | TED | F1 "
        "| total exact | distinct |"
    )
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        lines.append(
            f"| {r['seed']} | {r['source']} | {r.get('learning_rate', '')} | {r['steps']} "
            f"| {r['train_seconds']:.0f} | {r['final_loss']:.3f} "
            f"| {r['json_valid_rate']:.2f} | {r['ted_accuracy']:.2f} | {r['field_f1']:.2f} "
            f"| {r['total_price_exact']:.2f} | {r['distinct_answers']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--seeds", type=int, nargs="*", default=[])
    ap.add_argument("--record-make-run", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("docs/seeds.json"))
    a = ap.parse_args(argv)
    project = a.project.resolve()
    rows = []
    if a.record_make_run:
        reports = project / "reports"
        t = load_params(project / "params.yaml").train.args
        train = json.loads((reports / "train.json").read_text())
        metrics = json.loads((reports / "metrics.json").read_text())
        rows.append(row(t.seed, train, metrics, "make run", t.learning_rate))
    with tempfile.TemporaryDirectory(prefix="seeds-") as work:
        rows += [train_and_score(project, s, Path(work)) for s in a.seeds]
    if not rows:
        ap.error("nothing to do: --seeds and/or --record-make-run")
    print(table(merge(a.out, rows, project)))


if __name__ == "__main__":
    main()
