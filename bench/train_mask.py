"""The train stage with and without an attention mask in its batches: time, peak memory, and
whether the two adapters are the same bytes.

    python -m bench.train_mask [--project .] [--steps 150] [--rounds 2]
        [--report docs/train_mask.json]

The train stage's batches carry no attention mask: they are right-padded, so causal attention
alone keeps every real token from seeing a pad, and the pads carry no labels. This bench
checks that claim on the real recipe. It runs `tasks.train.run_train` on the project's dataset
and base (what `make run` left in artifacts/), with params.yaml's recipe stopped at --steps
(max_steps; the last step's weights, no averaging), in a fresh process per run, alternating:
the stage as it is ("no mask") and the same with the collator's attention mask put back
("mask"). Each run's seconds, samples/s and peak RSS come from its training summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cpu import write_measured
from tasks.core.config import load_params
from tasks.core.io import quiet_telemetry


def train_once(project: Path, steps: int, mask: bool, out: Path) -> None:
    """One run of the train stage, `steps` steps, its batches with or without the mask."""
    import tasks.train as stage

    p = load_params(project / "params.yaml")
    p.train.args = p.train.args.model_copy(update={"max_steps": steps})
    p.train.average_last = 1
    if mask:  # the collator as the stage builds it, with its attention mask put back
        built = stage.receipt_collator
        stage.receipt_collator = lambda *a: dataclasses.replace(built(*a), attention_mask=True)
    s = stage.run_train(
        p,
        project / "artifacts/dataset",
        project / "artifacts/base",
        out / "adapter",
        out / "ckpt",
        out / "train.json",
    )
    weights = (out / "adapter/adapter_model.safetensors").read_bytes()
    row = {
        "steps": s["steps"],
        "train_seconds": s["train_seconds"],
        "samples_per_second": s["samples_per_second"],
        "peak_rss_mib": round(s["peak_rss_mb"]),
        "final_loss": s["final_loss"],
        "adapter_sha256": hashlib.sha256(weights).hexdigest(),
    }
    (out / "row.json").write_text(json.dumps(row))


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--report", type=Path, default=Path("docs/train_mask.json"))
    ap.add_argument("--one", choices=("mask", "no mask"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    project = a.project.resolve()
    if a.one:  # a child process: one run
        train_once(project, a.steps, a.one == "mask", a.out)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-mask-") as tmp:
        for i in range(a.rounds):
            for mode in ("mask", "no mask"):
                out = Path(tmp) / f"{i}-{mode.replace(' ', '-')}"
                cmd = [sys.executable, "-m", "bench.train_mask", "--project", str(project)]
                cmd += ["--steps", str(a.steps), "--one", mode, "--out", str(out)]
                subprocess.run(cmd, check=True)
                row = {"round": i + 1, "batches": mode} | json.loads((out / "row.json").read_text())
                print(json.dumps(row), flush=True)
                rows.append(row)
    same = len({r["adapter_sha256"] for r in rows}) == 1
    write_measured(a.report, {"steps": a.steps, "same_adapter_bytes": same, "runs": rows})
    print(f"train_mask: the same adapter bytes in every run: {same} -> {a.report}")


if __name__ == "__main__":
    main()
