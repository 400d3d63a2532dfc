"""What background lines in the OCR text cost a trained adapter: one split, read as rendered
and with background lines added (`tasks.data.augment.with_background`, seeded), as a photo of
a receipt on a table is read.

    python -m bench.ocr_background [--params params.yaml] [--dataset artifacts/dataset]
        [--base artifacts/base] [--adapter artifacts/adapter] [--split validation]
        [--max-lines 8] [--seed 12345] [--report docs/ocr_background.json]

The lines come from the same generator that `train.ocr_background` trains with (another
seed), so this measures robustness to that kind of line, not to every photo's background.
Decoding is the pipeline's own (evaluate's settings), scored by `tasks.evaluation.metrics`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from tasks.core.config import load_params
from tasks.data.augment import with_background
from tasks.data.dataset import load_dataset_dir
from tasks.evaluate import load_for_inference
from tasks.evaluation.metrics import score
from tasks.inference.generation import Settings, answers


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", default="artifacts/dataset")
    ap.add_argument("--base", default="artifacts/base")
    ap.add_argument("--adapter", default="artifacts/adapter")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--max-lines", type=int, default=8)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--report", default="docs/ocr_background.json")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    split = load_dataset_dir(a.dataset)[a.split]
    images, gts = list(split["image"]), [json.loads(t) for t in split["target"]]
    ocr = [o or "" for o in split["ocr"]]
    rng = random.Random(a.seed)
    noisy = [with_background(o, rng, a.max_lines) for o in ocr]
    model, processor = load_for_inference(params, a.base, a.adapter)
    settings = Settings.from_params(params).but(ocr_prompt=True)
    rows = {}
    for name, texts in (("as rendered", ocr), ("with background lines", noisy)):
        start = time.perf_counter()
        out = answers(model, processor, images, settings, texts)
        metrics = {k: round(float(v), 4) for k, v in score(out, gts).items()}
        rows[name] = metrics | {"seconds": round(time.perf_counter() - start, 1)}
        print(f"{name:22s} {json.dumps(metrics)}", flush=True)
    report = {
        "split": a.split,
        "n": len(images),
        "adapter": a.adapter,
        "train.ocr_background": params.train.ocr_background.model_dump(),
        "max_lines": a.max_lines,
        "seed": a.seed,
        "rows": rows,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(a.report).write_text(json.dumps(report, indent=2) + "\n")
    print(f"ocr_background: {a.report}")


if __name__ == "__main__":
    main()
