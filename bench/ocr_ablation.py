"""What OCR grounding is worth: params.yaml's recipe trained and scored without it.

    python -m bench.ocr_ablation [--project .] [--out docs/ocr_ablation.json]

Re-ingests the project's data/ without OCR (the image and the instruction only), trains the
same recipe on the same base and seed, and scores the test split with the pipeline's
`run_evaluate`, base and fine-tuned. The grounded figures are the project's own `make run`
(reports/metrics.json), recorded beside it. Nothing is chosen from these figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.cpu import machine
from bench.seeds import METRICS, commit
from tasks.core.config import load_params
from tasks.core.io import quiet_telemetry, write_json_atomic
from tasks.evaluate import run_evaluate
from tasks.ingest import run_ingest
from tasks.train import run_train


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=Path("docs/ocr_ablation.json"))
    a = ap.parse_args(argv)
    project = a.project.resolve()
    params = load_params(project / "params.yaml")
    params.model = params.model.model_copy(update={"ocr_prompt": False})
    grounded = json.loads((project / "reports" / "metrics.json").read_text())
    with tempfile.TemporaryDirectory(prefix="ocr-ablation-") as tmp:
        work = Path(tmp)
        run_ingest(params.ingest, project / "data", work / "dataset", ocr=False)
        start = time.perf_counter()
        summary = run_train(
            params,
            work / "dataset",
            project / "artifacts" / "base",
            work / "adapter",
            work / "ckpt",
            work / "train.json",
        )
        seconds = time.perf_counter() - start
        plain = run_evaluate(
            params,
            work / "dataset",
            project / "artifacts" / "base",
            work / "adapter",
            work / "metrics.json",
            work / "predictions.jsonl",
        )
    report = {
        "date": dt.date.today().isoformat(),
        "commit": commit(project),
        "machine": f"{machine()}, torch threads {torch.get_num_threads()}",
        "steps": summary["steps"],
        "train_seconds": round(seconds),
        "final_loss": summary["final_loss"],
        "with_ocr": {k: grounded.get(k) for k in METRICS},
        "without_ocr": {k: plain.get(k) for k in METRICS},
    }
    write_json_atomic(a.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
