"""QLoRA on a reader checkpoint, through the pipeline's own functions."""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from tasks.base import run_build_base
from tasks.config import load_params
from tasks.data import run_data
from tasks.evaluate import run_evaluate
from tasks.ingest import run_ingest
from tasks.train import run_train

ap = argparse.ArgumentParser()
ap.add_argument("--reader")
ap.add_argument("--out")
ap.add_argument("--train", type=int, default=400)
ap.add_argument("--epochs", type=float, default=3)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--mts", default="")
ap.add_argument("--limit", type=int, default=24)
ap.add_argument("--bs", type=int, default=8)
ap.add_argument("--r", type=int, default=16)
ap.add_argument("--quant", default="nf4")
ap.add_argument("--save-steps", type=int, default=10000)
ap.add_argument("--dtype", default="float32")
ap.add_argument("--scheduler", default=None, help="cosine | warmup_stable_decay (params.yaml's)")
ap.add_argument("--checkpointing", default=None, choices=["on", "off"])
a = ap.parse_args()
p = load_params(str(__import__("pathlib").Path(__file__).resolve().parents[2] / "params.yaml"))
p.data.synthetic = p.data.synthetic.model_copy(
    update={"train": a.train, "validation": 60, "test": 4}
)
p.train = p.train.model_copy(
    update={
        "epochs": a.epochs,
        "learning_rate": a.lr,
        "modules_to_save": [m for m in a.mts.split(",") if m],
        "batch_size": a.bs,
        "lora_r": a.r,
        "lora_alpha": 2 * a.r,
        "quantization": a.quant,
        "compute_dtype": a.dtype,
        "logging_steps": 10,
        "save_steps": a.save_steps,
        "save_total_limit": 100,
    }
)
if a.scheduler:
    p.train = p.train.model_copy(update={"lr_scheduler": a.scheduler})
if a.checkpointing:
    p.train = p.train.model_copy(update={"gradient_checkpointing": a.checkpointing == "on"})
p.evaluate = p.evaluate.model_copy(update={"limit": a.limit, "batch_size": 12})
out = Path(a.out)
out.mkdir(parents=True, exist_ok=True)
if not (out / "dataset").exists():
    run_data(p.data, out / "data")
    run_ingest(p.ingest, out / "data", out / "dataset0")
    import datasets

    dd = datasets.load_from_disk(str(out / "dataset0"))
    datasets.DatasetDict(
        {
            "train": dd["train"],
            "validation": dd["validation"].select(range(4)),
            "test": dd["validation"],
        }
    ).save_to_disk(str(out / "dataset"))
run_build_base(p, out / "dataset", out / "base", a.reader)
t0 = time.time()
s = run_train(
    p,
    out / "dataset",
    out / "base",
    out / "adapter",
    out / "ckpt",
    out / "train.json",
    out / "loss.csv",
)
print(
    "TRAIN",
    s["train_seconds"],
    s["samples_per_second"],
    s["final_loss"],
    s["trainable_params"],
    flush=True,
)
m = run_evaluate(
    p, out / "dataset", out / "base", out / "adapter", out / "metrics.json", out / "pred.jsonl"
)
print("METRICS", json.dumps(m), time.time() - t0, flush=True)
# Intermediate checkpoints (--save-steps): the adapter plus the base's processor files.
for ck in sorted((out / "ckpt").glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[1])):
    adapter = out / f"adapter-{ck.name}"
    if not adapter.exists():
        adapter.mkdir()
        for f in [*ck.glob("adapter_*"), *(out / "adapter").iterdir()]:
            if not f.name.startswith("adapter_") or f.parent == ck:
                shutil.copy(f, adapter / f.name)
    m = run_evaluate(
        p,
        out / "dataset",
        out / "base",
        adapter,
        out / f"metrics-{ck.name}.json",
        out / f"pred-{ck.name}.jsonl",
    )
    print("CKPT", ck.name, json.dumps(m), flush=True)
for line in (out / "pred.jsonl").read_text().splitlines()[:4]:
    r = json.loads(line)
    print(r.get("prediction", r)[:200] if isinstance(r, dict) else r)
