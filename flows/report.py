"""What the flows show in Prefect's UI: the retrain summary, the promotion, the train handback.

Markdown and links for people; the handback also goes out as a table artifact, whose JSON the
retrain flow reads back as data (`read_handback`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from tasks.evaluation.summary import summary_table

HANDBACK_KEY = "train-handback"


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def publish_summary(repo: str) -> dict[str, Any]:
    """The `retrain-summary` artifact (metrics, gate) and a link to the review page."""
    from tasks.core.config import load_params

    paths = load_params(Path(repo) / "params.yaml").paths
    metrics, gate = _json(Path(repo) / paths.metrics), _json(Path(repo) / paths.gate)
    page = "# Retrain\n\n" + summary_table(metrics, gate)
    review = Path(repo) / paths.review
    if review.exists():  # every test receipt, expected vs predicted, worst first
        run = _json(Path(repo) / paths.registration).get("run_id")
        where = f" (also in MLflow run `{run}` under reports/)" if run else ""
        page += f"\n\n[Review page]({review.resolve().as_uri()}){where}"
        create_link_artifact(
            review.resolve().as_uri(),
            link_text="review page: test receipts, worst first",
            key="review-page",
        )
    create_markdown_artifact(page, key="retrain-summary", description="metrics and gate decision")
    return {"metrics": metrics, "gate": gate}


def publish_promotion(result: dict[str, Any]) -> None:
    said = "promoted" if result["promoted"] else "refused"
    create_markdown_artifact(f"# Promotion\n\n{said}: {result['reason']}", key="promotion")


def publish_handback(back: dict[str, Any]) -> None:
    """The train host's handback: one table row (the data the pipeline's host applies) and a
    markdown note for people."""
    summary = back["train_summary"]
    create_table_artifact(
        [back],
        key=HANDBACK_KEY,
        description="what the pipeline's host applies: dvc.lock entry + uncached outs",
    )
    create_markdown_artifact(
        f"# Train stage on {back['host']} ({back['device']})\n\n"
        f"{summary['steps']} steps ({summary['steps_this_run']} in this run, resumed from step "
        f"{summary['resumed_from_step']}), commit `{back['commit'][:12]}`, outs pushed to the "
        "DVC remote.",
        key="train-stage",
    )


def read_handback(flow_run_id: Any) -> dict[str, Any] | None:
    """The handback a train-stage run published, as the dict it published; None if none."""
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
        return None
    data: Any = found[-1].data
    rows = json.loads(data) if isinstance(data, str) else data
    return dict(rows[0])
