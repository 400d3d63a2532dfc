"""The 7B-shaped pipeline, end to end on one GPU: a replica of llava-1.5-7b-hf with its real
sizes (random weights) through data -> ingest -> base -> train -> evaluate (-> merge).

    python -m bench.gpu_smoke --json reports/gpu_smoke.json        # on a GPU machine
    python -m bench.gpu_smoke --dims tiny --steps 1                # the same code on CPU (test)

The replica is built from the genuine hub files (devtools/replica.py) with `--dims 7b`, so
`from_pretrained` loads the path a GPU worker loads: the hub processor (with image_fit),
the Llama tokenizer and template, 576 image tokens, 4-bit NF4 + LoRA from the 7B recipe
(configs/llava-1.5-7b.yaml, merged as `make recipe` merges it), bf16 and the attention the
machine has. Only the data is the offline synthetic source: the hub is not reachable. The
weights are random, so the metrics say nothing; the timings and peak memory do.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tasks.core.config import Params
from tasks.core.io import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
HUB_FILES = REPO.parent / "shared" / "hub-configs" / "llava-1.5-7b-hf"


def smoke_params(replica: Path, steps: int, records: int) -> Params:
    from tasks.recipe import merged

    raw = merged(REPO / "params.yaml", REPO / "configs" / "llava-1.5-7b.yaml")
    p = Params.model_validate(raw)
    p.data = p.data.model_copy(update={"source": "synthetic"})
    p.data.synthetic = p.data.synthetic.model_copy(
        update={"train": records, "validation": 2, "test": 4}
    )
    p.model = p.model.model_copy(update={"base": str(replica), "revision": None})
    if not torch.cuda.is_available():  # the CPU check: no bf16 autocast or flash-attn here
        p.train = p.train.model_copy(update={"compute_dtype": "float32"})
    p.train.args = p.train.args.model_copy(update={"max_steps": steps, "save_steps": 10_000})
    p.evaluate = p.evaluate.model_copy(update={"limit": 4, "max_new_tokens": 16})
    return p


def run(work: Path, hub_files: Path, dims: str, steps: int, records: int, merge: bool):
    from devtools.replica import build_replica
    from tasks.build_base import run_build_base
    from tasks.evaluate import run_evaluate
    from tasks.ingest import run_ingest
    from tasks.merge import run_merge
    from tasks.model.modeling import image_token_count, load_processor
    from tasks.refresh_data import run_data
    from tasks.train import run_train

    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn(*args)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"gpu_smoke: {name} {seconds[name]} s", flush=True)
        return out

    replica = timed("replica", build_replica, hub_files, work / "replica", dims)
    p = smoke_params(replica, steps, records)
    timed("data", run_data, p.data, work / "data")
    timed("ingest", run_ingest, p.ingest, work / "data", work / "dataset")
    timed("base", run_build_base, p, work / "dataset", work / "base")
    summary = timed(
        "train",
        run_train,
        p,
        work / "dataset",
        work / "base",
        work / "adapter",
        work / "ckpt",
        work / "train.json",
    )
    train_gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    metrics = timed(
        "evaluate",
        run_evaluate,
        p,
        work / "dataset",
        work / "base",
        work / "adapter",
        work / "metrics.json",
        work / "predictions.jsonl",
    )
    if merge:
        timed("merge", run_merge, p, work / "base", work / "adapter", work / "merged")
    processor = load_processor(str(work / "adapter"))
    return {
        "dims": dims,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "seconds": seconds,
        "image_tokens": image_token_count(processor),
        "train": {
            k: summary.get(k)
            for k in (
                "steps",
                "samples_per_second",
                "train_seconds",
                "final_loss",
                "trainable_params",
                "total_params",
                "max_length",
                "attn_implementation",
                "compute_dtype",
                "quantization",
            )
        },
        "train_peak_gpu_gib": None if train_gpu is None else round(train_gpu, 2),
        "evaluate_samples_per_second": metrics.get("samples_per_second"),
        "params": {"train": p.train.model_dump(mode="json"), "model": p.model.base},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hub-files", default=str(HUB_FILES))
    ap.add_argument("--dims", choices=["7b", "tiny"], default="7b")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--records", type=int, default=16)
    ap.add_argument("--merge", action="store_true", help="also merge (7B on CPU: minutes)")
    ap.add_argument("--work", default=None, help="keep the outputs here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        work = Path(args.work or tmp)
        result = run(work, Path(args.hub_files), args.dims, args.steps, args.records, args.merge)
    print(json.dumps(result, indent=2))
    if args.json:
        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    main()
