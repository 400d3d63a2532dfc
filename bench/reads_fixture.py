"""What the slow test's thresholds rest on: its QLoRA recipe (tests/model/test_reads_receipts.py,
synthetic slips, free decoding, the last step's weights) at several seeds.

    python -m bench.reads_fixture --seeds 0 1 2 [--out docs/reads_fixture.json]

Per seed: the test's data, dataset and base, its trained adapter and its tenth-trained one, each
scored on the 16 test receipts by the pipeline's `run_evaluate`; the counts the tests assert on
(valid answers, distinct totals, answers without a warning) and the gate's decisions both ways.
Rows are merged into --out by `bench.seeds.merge` (a rerun seed's row is replaced).
One torch thread, as on a test worker; about 8-12 minutes per seed on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.seeds import merge
from tasks.core.io import quiet_telemetry
from tasks.gate import decide
from tests.conftest import REPO
from tests.model.test_reads_receipts import STEPS, finetune, prepare, total_price


def _counts(run: dict) -> dict[str, Any]:
    rows = run["rows"]
    m = run["metrics"]
    said = {total_price(r["parsed"]) for r in rows}
    return {
        "n": len(rows),
        "json_valid": round(m["json_valid_rate"] * len(rows)),
        "distinct_totals": len(said),
        "no_warning": sum(not r["warnings"] for r in rows),
        **{k: m.get(k) for k in ("json_valid_rate", "ted_accuracy", "base_json_valid_rate")},
    }


def one_seed(seed: int, work: Path) -> dict[str, Any]:
    p = prepare(work, seed)
    start = time.perf_counter()
    trained = finetune(p, work, STEPS, "trained")
    seconds = round(time.perf_counter() - start)
    under = finetune(p, work, STEPS // 10, "under")
    good, bad = trained["metrics"], under["metrics"]
    return {
        "seed": seed,
        "steps": STEPS,
        "train_and_evaluate_s": seconds,
        "trained": _counts(trained),
        "tenth_trained": _counts(under),
        "gate_refuses_the_tenth": not decide(bad, p, {"version": "1", **good})["passed"],
        "gate_promotes_the_trained": decide(good, p, {"version": "1", **bad})["passed"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("docs/reads_fixture.json"))
    args = ap.parse_args(argv)
    quiet_telemetry()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="reads-") as tmp:
            rows.append(one_seed(seed, Path(tmp)))
        print(json.dumps(rows[-1]), flush=True)
    merge(args.out, rows, REPO)  # one row per seed, stamped with the date, machine and commit


if __name__ == "__main__":
    main()
