"""What the default model reads on real receipts: CORD's 900 original annotations, rendered.

    python -m bench.cord_real [--cord ../shared/cord-v1-json] [--base artifacts/base]
        [--adapter artifacts/adapter] [--out reports/cord_real] [--limit N]

Renders `cord-json:<dir>` (each receipt's words drawn at their annotated quads, the long side
scaled to at most `data.render_max_side`) and ingests it as the pipeline does. Nothing was
trained or tuned on CORD, so every receipt is held out: all splits (train 800 + dev 100) are
scored together, the base and the fine-tuned adapter, with `run_evaluate` as the evaluate stage
scores the synthetic test split. There is no target for these figures: the tiny default learned
to read thermal-printed synthetic slips at 192 px, one character per 12-px cell, and a real
receipt scaled to 192 px has glyphs a few pixels tall. Writes `<out>/metrics.json`,
`<out>/predictions.jsonl` and `<out>/report.json` (with the machine and the seconds), and
prints the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from tasks.config import load_params
from tasks.io import atomic_dir, quiet_telemetry, write_json_atomic


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cord", default="../shared/cord-v1-json")
    ap.add_argument("--base", default="artifacts/base")
    ap.add_argument("--adapter", default="artifacts/adapter")
    ap.add_argument("--out", default="reports/cord_real")
    ap.add_argument("--limit", type=int, default=0, help="score the first N receipts only")
    args = ap.parse_args(argv)

    import datasets

    from tasks.data import run_data
    from tasks.dataset import SPLITS, load_dataset_dir
    from tasks.evaluate import run_evaluate
    from tasks.ingest import run_ingest

    params = load_params(args.params)
    if args.limit:
        params.evaluate = params.evaluate.model_copy(update={"limit": args.limit})
    out = Path(args.out)
    start = time.perf_counter()
    run_data(params.data, out / "data", source=f"cord-json:{args.cord}")
    splits = run_ingest(params.ingest, out / "data", out / "dataset")
    # every receipt is held out: score them all, as one "test" split
    ingested = load_dataset_dir(out / "dataset")
    every = datasets.concatenate_datasets([ingested[s] for s in SPLITS if len(ingested[s])])
    with atomic_dir(out / "all") as tmp:
        datasets.DatasetDict({"test": every}).save_to_disk(str(tmp))
    metrics = run_evaluate(
        params,
        out / "all",
        args.base,
        args.adapter,
        out / "metrics.json",
        out / "predictions.jsonl",
    )
    report = {
        "source": f"cord-json:{args.cord}",
        "ingested_splits": splits,
        "scored": int(metrics["n"]),
        "metrics": metrics,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
    }
    write_json_atomic(out / "report.json", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
