"""Scheduled retraining: serve the retrain flow with a cron schedule (needs a Prefect server).

    prefect server start &                      # or point PREFECT_API_URL at a shared one
    python -m flows.deploy --cron "0 3 * * 1"   # every Monday 03:00

For work pools (the GPU pool for train), use prefect.yaml: `prefect deploy --all`.
"""

from __future__ import annotations

from flows.retrain import retrain
from tasks.core import cli
from tasks.core.errors import BadInput


def cron_schedule(cron: str):
    """Prefect's own cron schedule for `cron`; BadInput naming it if it is not one."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        return CronSchedule(cron=cron, timezone="UTC")
    except ValidationError as exc:
        raise BadInput(f"--cron {cron!r}: not a cron schedule ({exc.errors()[0]['msg']})") from exc


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__)
    ap.add_argument("--cron", default="0 3 * * 1")
    ap.add_argument("--repo", default=".")
    ap.add_argument("--train-deployment", default=None, help="train there (e.g. train-stage/gpu)")

    def body(a, p) -> None:
        schedule = cron_schedule(a.cron)
        parameters = {"repo": a.repo, "train_deployment": a.train_deployment}
        retrain.serve(name="weekly", schedules=[schedule], parameters=parameters)

    cli.run("deploy", ap, body, argv)


if __name__ == "__main__":
    main()
