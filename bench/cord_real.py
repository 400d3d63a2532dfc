"""What the default model reads on real receipts: CORD's 900 original annotations, rendered.

    python -m bench.cord_real [--cord ../shared/cord-v1-json] [--base artifacts/base]
        [--adapter artifacts/adapter] [--work artifacts/cord_real] [--report docs/cord_real.json]
        [--limit N]

Renders `cord-json:<dir>` (each receipt's words drawn at their annotated quads, the long side
scaled to at most `data.render_max_side`) and ingests it as the pipeline does. Nothing was
trained or tuned on CORD, so every receipt is held out: all splits (train 800 + dev 100) are
scored together, the base and the fine-tuned adapter, with `run_evaluate` as the evaluate stage
scores the synthetic test split. There is no target for these figures: the tiny default learned
to read thermal-printed synthetic slips at 192 px, one character per 12-px cell, and a real
receipt scaled to 192 px has glyphs a few pixels tall. Renders, ingests and writes
`metrics.json` and `predictions.jsonl` under `--work` (git-ignored), and the report (splits,
metrics, seconds, machine) to `--report`, committed beside docs/benchmarks.md; prints it.
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


def word_heights(cord_dir: str | Path, side: int) -> dict[str, float]:
    """How tall CORD's words are once a receipt is fitted into a `side`-px model input: the
    median and 90th percentile of the annotated word quads' heights, in pixels."""
    import statistics

    heights = []
    for path in sorted(Path(cord_dir).glob("*/*.json")):
        ann = json.loads(path.read_text())
        size = ann["meta"]["image_size"]
        scale = side / max(int(size["width"]), int(size["height"]))
        for line in ann.get("valid_line", []):
            for word in line.get("words", []):
                ys = [word["quad"][f"y{i}"] for i in range(1, 5)]
                heights.append((max(ys) - min(ys)) * scale)
    deciles = statistics.quantiles(heights, n=10)
    return {
        "image_side": side,
        "words": len(heights),
        "median": round(statistics.median(heights), 2),
        "p90": round(deciles[8], 2),
    }


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cord", default="../shared/cord-v1-json")
    ap.add_argument("--base", default="artifacts/base")
    ap.add_argument("--adapter", default="artifacts/adapter")
    ap.add_argument("--work", default="artifacts/cord_real")
    ap.add_argument("--report", default="docs/cord_real.json")
    ap.add_argument("--limit", type=int, default=0, help="score the first N receipts only")
    args = ap.parse_args(argv)

    import datasets
    from transformers import AutoConfig

    from tasks.data import run_data
    from tasks.dataset import SPLITS, load_dataset_dir
    from tasks.evaluate import run_evaluate
    from tasks.ingest import run_ingest

    params = load_params(args.params)
    if args.limit:
        params.evaluate = params.evaluate.model_copy(update={"limit": args.limit})
    out = Path(args.work)
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
        "model": {"base": args.base, "adapter": args.adapter, "params_digest": params.digest()},
        "ingested_splits": splits,
        "scored": int(metrics["n"]),
        # the base's vision input side: how many pixels a printed word gets there
        "word_height_px": word_heights(
            args.cord, AutoConfig.from_pretrained(args.base).vision_config.image_size
        ),
        "metrics": metrics,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
    }
    write_json_atomic(args.report, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
