"""The batch scoring flow: a folder of receipts through the champion (or a given version).

    python -m flows.score --dir new_receipts/ [--out reports/score] [--version N] [--repo .]
                          [--json-schema | --no-json-schema]
    make score DIR=new_receipts/ [VERSION=N] [JSON_SCHEMA=1]

A thin Prefect wrapper of `tasks.score.run_score`: a progress artifact follows the folder, and
a table artifact (`receipt-scores`) shows each file's total, validity, warnings and error, with
the model version and the input's hash in its description.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.core.errors import MissingInput


def _total(row: dict[str, Any]) -> str:
    total = (row.get("json") or {}).get("total")
    value = total.get("total_price") if isinstance(total, dict) else None
    return value if isinstance(value, str) else ""


@task(retries=1, retry_delay_seconds=10)
def score_folder(
    folder: str,
    out: str | None,
    version: str | None,
    repo: str,
    json_schema: bool | None = None,
    force: bool = False,
) -> dict[str, Any]:
    from tasks.core.config import load_params
    from tasks.score import run_score

    params = load_params(Path(repo) / "params.yaml")
    name, out = params.register_.model_name, out or str(Path(repo) / params.paths.score)
    progress_id: Any = create_progress_artifact(  # a UUID: called sync, from a task
        progress=0.0, key="receipt-scoring-progress", description=f"scoring {folder}"
    )

    def progress(done: int, total: int) -> None:
        update_progress_artifact(progress_id, 100.0 * done / max(1, total))
        get_run_logger().info("scored %d/%d", done, total)

    summary = run_score(
        folder, out, name, version, repo, progress=progress, json_schema=json_schema, force=force
    )
    rows = summary.pop("rows")
    create_table_artifact(
        key="receipt-scores",
        table=[
            {
                "file": r["file"],
                "total_price": _total(r),
                "valid_json": r.get("valid_json", False),
                "warnings": ", ".join(r.get("warnings") or []),
                "error": r["error"] or "",
            }
            for r in rows
        ],
        description=(
            f"{summary['model']['uri']} (run {summary['model']['run_id']}) on "
            f"{summary['input']['files']} files, input sha256 {summary['input']['sha256'][:12]}…; "
            f"{summary['errors']} not readable; json_schema {summary['model']['json_schema']}. "
            f"Output: {out}/predictions.jsonl"
        ),
    )
    return summary


@flow(name="score", log_prints=True)
def score(
    folder: str,
    out: str | None = None,
    version: str | None = None,
    repo: str = ".",
    json_schema: bool | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Score every file under `folder` into `out` (default: params.yaml's paths.score);
    returns score.json's summary. Files this model scored before are reused unless `force`."""
    return score_folder(folder, out, version, repo, json_schema, force)


def main(argv: list[str] | None = None) -> None:
    from tasks.core import cli

    ap = cli.parser(__doc__.split("\n")[0], paths=("score",))
    ap.add_argument("--dir", required=True)
    ap.add_argument("--version", default=None)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--json-schema", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--force", action="store_true", help="score again what was scored before")

    def body(a, p) -> str:
        if not Path(a.dir).is_dir():
            raise MissingInput(f"{a.dir}: no such folder of receipts")
        try:
            summary = score(a.dir, a.score, a.version, a.repo, a.json_schema, a.force)
        except KeyboardInterrupt:
            _interrupted(a.score)
        return json.dumps(summary, indent=2)

    cli.run("score", ap, body, argv)


def _interrupted(out: str) -> None:
    """Ctrl-C: one line, then out at once. Prefect has marked the run crashed; its shutdown
    would print the local server's connection errors for minutes. The answers so far are in
    the partial file (tasks/score.py), the earlier outputs untouched."""
    import os
    import sys

    from tasks.score import interrupted_line

    print(interrupted_line(out), file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(130)


if __name__ == "__main__":
    main()
