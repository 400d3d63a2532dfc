"""The default recipe's learning curve on the validation split: quality after every epoch.

    python -m bench.train_curve [--project .] [--seed 0] [--train-fraction 1.0]
        [--epochs N] [--average 3] [--report docs/train_curve.json]

Trains params.yaml's recipe once (the project's dataset and base, what `make run` left in
artifacts/), saving the adapter after every epoch, then reads the *validation* split with each
saved adapter through the pipeline's own generation and metrics (evaluate's settings: the OCR
prompt, held to the schema). With --average K it also reads the mean of the last K epochs'
adapter weights (checkpoint averaging). With --train-fraction F < 1 it trains on a seeded
draw of that share of the train split (the same number of epochs, so fewer steps): the data
side of the curve. With --epochs N it trains a schedule of N epochs instead of params.yaml's
(the cosine decays over the shorter run). The test split is not read. Rows merge into --report
by name, so a rerun with another seed, fraction or schedule adds its rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from bench.cpu import write_measured
from bench.decoding import held_out
from tasks.core.config import TrainerArgs, load_params
from tasks.core.io import quiet_telemetry
from tasks.evaluate import load_for_inference
from tasks.evaluation.metrics import score
from tasks.inference.generation import Settings, answers
from tasks.model.averaging import mean_state
from tasks.train import run_train

QUALITY = ("json_valid_rate", "ted_accuracy", "field_f1", "total_price_exact")


class EpochSaves(TrainerCallback):
    """Save a checkpoint at the end of every epoch, and keep a copy of it in `keep` (run_train
    deletes its checkpoints once the run has finished)."""

    def __init__(self, keep: Path):
        self.keep = keep

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        name = f"checkpoint-{state.global_step}"
        shutil.copytree(Path(args.output_dir) / name, self.keep / name, dirs_exist_ok=True)


def curve_args(args: TrainerArgs, seed: int, epochs: int = 0) -> TrainerArgs:
    """The recipe's training arguments for a curve: this seed (weights and data order), a
    checkpoint at every epoch's end and none deleted, and `epochs` epochs (0: the recipe's)."""
    return args.model_copy(
        update={
            "seed": seed,
            "data_seed": seed,
            "save_steps": 10**9,  # saved at each epoch's end instead (EpochSaves)
            "save_total_limit": 0,  # keep every epoch's
        }
        | ({"num_train_epochs": epochs} if epochs else {})
    )


def train_subset(dataset: Path, fraction: float, seed: int, out: Path) -> Path:
    """`dataset` with its train split cut to a seeded draw of `fraction` (1.0: as it is)."""
    import datasets

    if fraction >= 1.0:
        return dataset
    dd = datasets.load_from_disk(str(dataset))
    n = max(1, round(len(dd["train"]) * fraction))
    # in memory: an indices cache file written beside the project's dataset would change
    # its DVC output, as in the train stage
    train = dd["train"].shuffle(seed=seed, keep_in_memory=True)
    dd["train"] = train.select(range(n), keep_in_memory=True)
    dd.save_to_disk(str(out))
    return out


def step_of(ckpt: Path) -> int:
    """The global step a Trainer checkpoint folder (checkpoint-<step>) was saved at."""
    return int(ckpt.name.split("-")[1])


def epoch_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The run's checkpoints (one per epoch), oldest first."""
    return sorted((p for p in ckpt_dir.rglob("checkpoint-*") if p.is_dir()), key=step_of)


def average_adapter(ckpts: list[Path], out: Path) -> Path:
    """An adapter whose every weight is the mean of those in `ckpts` (same config)."""
    from safetensors.torch import load_file, save_file

    states = [load_file(str(c / "adapter_model.safetensors")) for c in ckpts]
    out.mkdir(parents=True)
    save_file(mean_state(states), str(out / "adapter_model.safetensors"))
    shutil.copy(ckpts[-1] / "adapter_config.json", out / "adapter_config.json")
    return out


def epoch_losses(ckpt: Path, steps_per_epoch: int) -> dict[int, float]:
    """Mean logged training loss per epoch, from the last checkpoint's trainer state."""
    history = json.loads((ckpt / "trainer_state.json").read_text())["log_history"]
    by_epoch: dict[int, list[float]] = {}
    for h in history:
        if "loss" in h:
            by_epoch.setdefault((h["step"] - 1) // steps_per_epoch + 1, []).append(h["loss"])
    return {e: round(sum(v) / len(v), 4) for e, v in sorted(by_epoch.items())}


def read_with(model, processor, adapter: Path, settings, images, gts, ocr) -> dict[str, Any]:
    """The validation metrics with `adapter` loaded beside the run's own (then unloaded)."""
    model.load_adapter(str(adapter), adapter_name="read")
    model.set_adapter("read")
    t0 = time.perf_counter()
    out = answers(model, processor, images, settings, ocr)
    metrics = {k: round(float(v), 4) for k, v in score(out, gts).items() if k in QUALITY}
    model.set_adapter("default")  # the run's own adapter, kept loaded
    model.delete_adapter("read")
    return metrics | {"read_seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--seed", type=int, default=0, help="train.args.seed and data_seed")
    ap.add_argument("--train-fraction", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=0, help="num_train_epochs (0: params.yaml's)")
    ap.add_argument("--average", type=int, default=3, help="also read the mean of the last K")
    ap.add_argument("--limit", type=int, default=0, help="read only the first N (0: all)")
    ap.add_argument("--report", type=Path, default=Path("docs/train_curve.json"))
    a = ap.parse_args(argv)
    project = a.project.resolve()
    p = load_params(project / "params.yaml")
    base = project / "artifacts/base"
    label = f"seed {a.seed}, train {a.train_fraction:g}"
    if a.epochs:
        label += f", {a.epochs}-epoch schedule"
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="curve-") as tmp:
        work = Path(tmp)
        dataset = train_subset(project / "artifacts/dataset", a.train_fraction, a.seed, work / "ds")
        p.train.args = curve_args(p.train.args, a.seed, a.epochs)
        start = time.perf_counter()
        s = run_train(
            p,
            dataset,
            base,
            work / "adapter",
            work / "ckpt",
            work / "train.json",
            callbacks=[EpochSaves(work / "epochs")],
        )
        train_seconds = round(time.perf_counter() - start, 1)
        print(f"{label}: trained {s['steps']} steps in {train_seconds} s", flush=True)
        ckpts = epoch_checkpoints(work / "epochs")
        losses = epoch_losses(ckpts[-1], step_of(ckpts[0]))
        images, gts, ocr = held_out(str(dataset), "validation")
        if a.limit:  # a smoke run of the bench itself
            images, gts, ocr = images[: a.limit], gts[: a.limit], ocr[: a.limit]
        model, processor = load_for_inference(p, base, work / "adapter")
        # (row name, adapter, its row's step and mean training loss)
        reads = [
            (f"epoch {e}", c, {"step": step_of(c), "mean_train_loss": losses.get(e)})
            for e, c in enumerate(ckpts, start=1)
        ]
        if a.average > 1 and len(ckpts) >= a.average:
            avg = average_adapter(ckpts[-a.average :], work / "average")
            reads.append(
                (
                    f"mean of the last {a.average} epochs",
                    avg,
                    {"step": None, "mean_train_loss": None},
                )
            )
        settings = Settings.from_params(p)
        for name, adapter, about in reads:
            row = read_with(model, processor, adapter, settings, images, gts, ocr)
            rows[f"{label}, {name}"] = row | about
            print(f"{label}, {name}: {json.dumps(rows[f'{label}, {name}'])}", flush=True)
    summary = {
        "train_records": s["train_records"],
        "train_seconds": train_seconds,
        "n_validation": len(gts),
        "peak_rss_mb": round(s["peak_rss_mb"]),
    }
    rows[f"{label}, run"] = summary
    earlier = json.loads(a.report.read_text())["rows"] if a.report.is_file() else {}
    write_measured(a.report, {"split": "validation", "rows": earlier | rows})
    print(f"train_curve: {a.report}")


if __name__ == "__main__":
    main()
