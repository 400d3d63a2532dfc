"""One trained adapter, three ways of decoding: what the constraint adds and what training adds.

    python -m bench.decoding [--params params.yaml] [--dataset artifacts/dataset]
        [--base artifacts/base] [--adapter artifacts/adapter] [--split test]
        [--report docs/decoding.json]

For the base (adapter off) and the fine-tuned model, on one split, with OCR in the prompt:
free decoding; held to CORD's JSON schema; held to the schema with every value a span of the
receipt's OCR lines (`evaluate.ocr_spans`; off by default). Scored by the pipeline's own metrics
(`tasks.evaluation.metrics`), through the same generation code as evaluate.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.cpu import write_measured
from tasks.core.config import load_params
from tasks.data.dataset import load_dataset_dir
from tasks.evaluate import load_for_inference
from tasks.evaluation.metrics import score
from tasks.inference.generation import Settings, answers

MODES = {
    "free": {"json_schema": False, "ocr_spans": False},
    "schema": {"json_schema": True, "ocr_spans": False},
    "ocr_spans": {"json_schema": True, "ocr_spans": True},
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model_args(ap, split="test")
    ap.add_argument("--report", default="docs/decoding.json")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    images, gts, ocr = held_out(a.dataset, a.split)
    model, processor = load_for_inference(params, a.base, a.adapter)
    settings = Settings.from_params(params).but(ocr_prompt=True)
    rows = {}
    for who in ("base", "fine-tuned"):
        for mode, changes in MODES.items():
            start = time.perf_counter()
            if who == "base":
                with model.disable_adapter():
                    out = answers(model, processor, images, settings.but(**changes), ocr)
            else:
                out = answers(model, processor, images, settings.but(**changes), ocr)
            seconds = time.perf_counter() - start
            metrics = {k: round(float(v), 4) for k, v in score(out, gts).items()}
            rows[f"{who} / {mode}"] = metrics | {"seconds": round(seconds, 1)}
            print(f"{who:10s} {mode:9s} {json.dumps(metrics)} {seconds:.0f}s", flush=True)
    write_report(a.report, {"split": a.split, "n": len(images), "rows": rows})
    print(f"decoding: {a.report}")


def model_args(ap: argparse.ArgumentParser, split: str) -> None:
    """The params, dataset, base and adapter to read with, and the split to read."""
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", default="artifacts/dataset")
    ap.add_argument("--base", default="artifacts/base")
    ap.add_argument("--adapter", default="artifacts/adapter")
    ap.add_argument("--split", default=split)


def held_out(dataset: str, split: str) -> tuple[list, list[dict], list[str]]:
    """A split's images, gt_parse dicts and OCR texts (as ingest stored them; "" for none)."""
    records = load_dataset_dir(dataset)[split]
    targets = [json.loads(t) for t in records["target"]]
    return list(records["image"]), targets, [o or "" for o in records["ocr"]]


def write_report(path: str, report: dict) -> None:
    """The report, with the machine (bench.cpu's line), torch's threads and the date."""
    write_measured(path, report | {"threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
