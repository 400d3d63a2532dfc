"""The default recipe trained in another compute dtype on this CPU: speed and validation quality.

    python -m bench.precision --speed-steps 150 --dtypes bfloat16 [--pad-to-multiple-of 64]
        [--report docs/precision.json]
    python -m bench.precision --full --dtypes bfloat16 [--reference artifacts/adapter]

`train.compute_dtype: bfloat16` on a CPU keeps the 4-bit base, runs the rest of the model in
bfloat16 and trains under bfloat16 autocast (CPUs with AVX512-BF16 or AMX run it natively);
inference stays float32 on a CPU. --speed-steps trains each dtype for the same first steps
(the same seed, so the same batches) back to back and reports samples/s. --full trains the
whole schedule in each dtype and scores it on the *validation* split with the pipeline's
run_evaluate, beside --reference (an adapter trained by the pipeline, float32), scored the same
way in the same run. The test split is not read. --report merges the rows into a JSON file
(with the machine). Peak RSS is the process's: give one dtype per command to get each its own.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cpu import write_measured
from bench.seed_screen import StopAt, validation_as_test
from tasks.core.config import load_params
from tasks.core.io import quiet_telemetry
from tasks.evaluate import run_evaluate
from tasks.train import run_train

QUALITY = ("json_valid_rate", "ted_accuracy", "field_f1", "total_price_exact", "distinct_answers")


def trained(
    project: Path, dataset: Path, dtype: str, out: Path, stop_at: int | None, pad: int
) -> tuple[Any, dict[str, Any]]:
    """(params, train summary) of params.yaml's recipe in `dtype`, batches padded to a multiple
    of `pad` tokens, stopped at `stop_at` steps."""
    p = load_params(project / "params.yaml")
    p.train = p.train.model_copy(update={"compute_dtype": dtype, "pad_to_multiple_of": pad})
    s = run_train(
        p,
        dataset,
        project / "artifacts/base",
        out / "adapter",
        out / "ckpt",
        out / "train.json",
        callbacks=[StopAt(stop_at)] if stop_at else None,
    )
    return p, s


def quality(p, dataset: Path, project: Path, adapter: Path, out: Path) -> dict[str, Any]:
    m = run_evaluate(
        p, dataset, project / "artifacts/base", adapter, out / "m.json", out / "p.jsonl"
    )
    return {k: m[k] for k in QUALITY} | {"n_validation": m["n"]}


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--speed-steps", type=int)
    how.add_argument("--full", action="store_true")
    ap.add_argument("--pad-to-multiple-of", type=int, help="train.pad_to_multiple_of")
    ap.add_argument("--reference", type=Path, default=Path("artifacts/adapter"))
    ap.add_argument("--report", type=Path)
    a = ap.parse_args(argv)
    project = a.project.resolve()
    pad = a.pad_to_multiple_of or load_params(project / "params.yaml").train.pad_to_multiple_of
    mode = "full run" if a.full else f"first {a.speed_steps} steps"
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="precision-") as tmp:
        work = Path(tmp)
        dataset = validation_as_test(project / "artifacts/dataset", work / "dataset")
        for dtype in a.dtypes:
            t0 = time.perf_counter()
            p, s = trained(
                project, dataset, dtype, work / dtype, None if a.full else a.speed_steps, pad
            )
            batch = p.train.args.per_device_train_batch_size
            row = {
                "steps": s["steps_this_run"],
                "train_seconds": round(time.perf_counter() - t0, 1),
                "samples_per_second": round(s["steps_this_run"] * batch / s["train_seconds"], 3),
                "final_loss": s["final_loss"],
                "peak_rss_mb": round(s["peak_rss_mb"]),  # the process's, so far
                "date": time.strftime("%Y-%m-%d %H:%M"),
            }
            if a.full:
                row |= quality(p, dataset, project, work / dtype / "adapter", work / dtype)
            rows[f"{dtype}, pad {pad}, {mode}"] = row
            print(dtype, json.dumps(row), flush=True)
        if a.full:
            p = load_params(project / "params.yaml")
            ref = quality(p, dataset, project, a.reference, work / "reference")
            rows[f"reference {a.reference}, validation"] = ref
            print("reference", json.dumps(ref), flush=True)
    if a.report:  # rows of earlier commands are kept; one of the same name is replaced
        earlier = json.loads(a.report.read_text())["rows"] if a.report.is_file() else {}
        write_measured(a.report, {"rows": earlier | rows})
        print(f"precision: {a.report}")


if __name__ == "__main__":
    main()
