"""Gate stage: thresholds from params, and no worse than the current champion on the same test split.

The champion is the version named in reports/champion.json (the champion stage writes the
registry's `champion` alias there, so DVC sees it change). It is re-evaluated here on this
run's test split, so the comparison is like for like. A failure writes reports/gate.json saying which
criterion failed and by how much, then exits non-zero: `dvc repro` stops before merge
and register. With no champion yet, only the thresholds apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.errors import Refused
from tasks.core.io import write_json_atomic

COMPARED = ("json_valid_rate", "ted_accuracy", "field_f1")


class GateFailed(Refused):
    pass


def champion_metrics(
    params: Params, dataset_dir: str | Path, champion_path: str | Path, repo: str | Path
) -> dict[str, Any] | None:
    """The metrics on this test split of the champion named in champion_path (None: no champion)."""
    import mlflow.pyfunc

    from tasks.data.dataset import load_dataset_dir
    from tasks.evaluation.metrics import score
    from tasks.inference.generation import Settings, answers
    from tasks.model.modeling import torch_dtype
    from tasks.registry.tracking import setup

    r = params.register_
    champion = json.loads(Path(champion_path).read_text())
    if champion["version"] is None:
        return None
    if champion["model_name"] != r.model_name:
        raise ValueError(
            f"{champion_path}: champion of {champion['model_name']!r}, but register.model_name is "
            f"{r.model_name!r}: rerun the champion stage"
        )
    setup(r.experiment, repo)
    test = load_dataset_dir(dataset_dir)["test"]
    if params.evaluate.limit:
        test = test.select(range(min(params.evaluate.limit, len(test))))
    # The champion's weights, scored exactly as evaluate scored the challenger: the same
    # images, the same `answers` under this run's settings (not the champion's logged ones).
    pyfunc = mlflow.pyfunc.load_model(f"models:/{r.model_name}/{champion['version']}")
    reader, settings = pyfunc.unwrap_python_model().reader, Settings.from_params(params)
    model = reader.model.to(torch_dtype(settings.dtype))
    ocr = list(test["ocr"]) if settings.ocr_prompt else None
    raw = answers(model, reader.processor, list(test["image"]), settings, ocr)
    metrics = score(raw, [json.loads(t) for t in test["target"]])
    return {"version": champion["version"], **{k: round(float(v), 4) for k, v in metrics.items()}}


def decide(
    metrics: dict[str, float], params: Params, champion: dict[str, Any] | None
) -> dict[str, Any]:
    """Every criterion with its value, bound and margin; passed only if all pass."""
    g = params.gate
    criteria = []
    for name, bound in (
        ("json_valid_rate", g.min_json_valid_rate),
        ("field_f1", g.min_field_f1),
        ("ted_accuracy", g.min_ted_accuracy),
    ):
        value = metrics[name]
        criteria.append(
            {
                "criterion": f"{name} >= {bound}",
                "value": value,
                "bound": bound,
                "margin": round(value - bound, 4),
                "passed": value >= bound,
            }
        )
    if champion is not None:
        for name in COMPARED:
            bound = round(champion[name] - g.max_regression, 4)
            value = metrics[name]
            criteria.append(
                {
                    "criterion": f"{name} >= champion v{champion['version']} "
                    f"({champion[name]}) - {g.max_regression}",
                    "value": value,
                    "bound": bound,
                    "margin": round(value - bound, 4),
                    "passed": value >= bound,
                }
            )
    return {
        "passed": all(c["passed"] for c in criteria),
        "criteria": criteria,
        "champion": champion,
        "primary_metric": g.primary_metric,
        "metrics": metrics,
    }


def run_gate(
    params: Params,
    metrics_path: str | Path,
    dataset_dir: str | Path,
    champion_path: str | Path,
    report_path: str | Path,
    repo: str | Path = ".",
) -> dict[str, Any]:
    metrics = json.loads(Path(metrics_path).read_text())
    report = decide(metrics, params, champion_metrics(params, dataset_dir, champion_path, repo))
    write_json_atomic(report_path, report)
    if not report["passed"]:
        failed = [
            f"- {c['criterion']}: got {c['value']}, short by {-c['margin']}"
            for c in report["criteria"]
            if not c["passed"]
        ]
        raise GateFailed("gate failed: the model is not registered\n" + "\n".join(failed))
    return report


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "Gate the evaluated model before merge and register.",
        paths=("metrics", "dataset", "champion", "gate"),
    )

    def body(a, p) -> str:
        champ = run_gate(p, a.metrics, a.dataset, a.champion, a.gate)["champion"]
        return "gate: passed" + (
            f" (champion v{champ['version']} re-evaluated)" if champ else " (no champion yet)"
        )

    cli.run("gate", ap, body, argv)


if __name__ == "__main__":
    main()
