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
import random
import time

from bench.decoding import held_out, model_args, write_report
from tasks.core.config import load_params
from tasks.data.augment import with_background
from tasks.evaluate import load_for_inference
from tasks.evaluation.metrics import score
from tasks.inference.generation import Settings, answers


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_args(ap, split="validation")
    ap.add_argument("--max-lines", type=int, default=8)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--report", default="docs/ocr_background.json")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    images, gts, ocr = held_out(a.dataset, a.split)
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
    }
    write_report(a.report, report)
    print(f"ocr_background: {a.report}")


if __name__ == "__main__":
    main()
