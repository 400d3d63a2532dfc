"""Scheduled retraining: serve the retrain flow with a cron schedule (needs a Prefect server).

    prefect server start &                      # or point PREFECT_API_URL at a shared one
    python -m flows.deploy --cron "0 3 * * 1"   # every Monday 03:00

For work pools (the GPU pool for train), use prefect.yaml: `prefect deploy --all`.
"""

from __future__ import annotations

import argparse

from flows.retrain import retrain


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cron", default="0 3 * * 1")
    ap.add_argument("--repo", default=".")
    args = ap.parse_args(argv)
    retrain.serve(name="weekly", cron=args.cron, parameters={"repo": args.repo})


if __name__ == "__main__":
    main()
