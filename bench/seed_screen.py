"""Screen a train recipe across seeds, cheaply, on validation receipts (never the test split).

    python -m bench.seed_screen --seeds 0 1 2 3 4 --stop-at 300 \
        --set warmup_steps=100 --log docs/seed_screen.jsonl

Trains params.yaml's recipe (with --set overrides of `train.args` keys) on the project's
artifacts/dataset and artifacts/base, but stops at --stop-at: the learning-rate schedule is
still the full run's, so step 300 here is step 300 of a full run. Then scores the adapter on
the *validation* split (20 receipts) with the pipeline's run_evaluate, and appends one line
per seed to --log: losses at every 100 steps, json/TED/F1/totals on validation.

Why step 300: under the default recipe, bench.seeds' five full runs split at step 300 into
those that go on to read amounts (loss <= 0.16) and those that never do (>= 0.23).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml
from transformers import TrainerCallback

from tasks.core.config import load_params
from tasks.core.io import quiet_telemetry
from tasks.evaluate import run_evaluate
from tasks.train import run_train


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def validation_as_test(dataset: Path, out: Path) -> Path:
    import datasets

    dd = datasets.load_from_disk(str(dataset))
    datasets.DatasetDict(
        {"train": dd["train"], "validation": dd["validation"], "test": dd["validation"]}
    ).save_to_disk(str(out))
    return out


def main() -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--stop-at", type=int, default=300)
    ap.add_argument("--set", nargs="*", default=[], help="train.args key=value (YAML value)")
    ap.add_argument("--label", default="")
    ap.add_argument("--log", type=Path, default=Path("docs/seed_screen.jsonl"))
    a = ap.parse_args()
    project = a.project.resolve()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    with tempfile.TemporaryDirectory(prefix="screen-") as tmp:
        work = Path(tmp)
        dataset = validation_as_test(project / "artifacts/dataset", work / "dataset")
        base = project / "artifacts/base"
        for seed in a.seeds:
            p = load_params(project / "params.yaml")
            # validated as params.yaml is: a misspelt or out-of-range --set fails here
            seeded = {"seed": seed, "data_seed": seed, "logging_steps": 10}
            p.train.args = type(p.train.args).model_validate(
                {**p.train.args.model_dump(), **overrides, **seeded}
            )
            out = work / f"seed-{seed}"
            t0 = time.time()
            s = run_train(
                p,
                dataset,
                base,
                out / "adapter",
                out / "ckpt",
                out / "train.json",
                callbacks=[StopAt(a.stop_at)],
            )
            train_s = time.time() - t0
            m = run_evaluate(p, dataset, base, out / "adapter", out / "m.json", out / "p.jsonl")
            curve = {c["step"]: c["loss"] for c in s["loss_curve"]}
            loss = {}
            for step in range(100, a.stop_at + 1, 100):
                window = [curve[x] for x in range(step - 20, step + 1, 10) if x in curve]
                if window:  # the mean of the (up to) three logged losses ending at this step
                    loss[step] = round(sum(window) / len(window), 4)
            line = {
                "label": a.label or " ".join(a.set) or "default",
                "overrides": overrides,
                "seed": seed,
                "steps": s["steps"],
                "train_seconds": round(train_s),
                "loss_avg3": loss,
                **{
                    k: m[k]
                    for k in (
                        "json_valid_rate",
                        "ted_accuracy",
                        "field_f1",
                        "total_price_exact",
                        "distinct_answers",
                    )
                },
                "n_validation": m["n"],
                "example": json.loads((out / "p.jsonl").read_text().splitlines()[0])["prediction"][
                    :160
                ],
            }
            print("SCREEN", json.dumps(line), flush=True)
            with a.log.open("a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
