"""Evaluate stage: batched greedy generation on the test split, before (base) and after (adapter).

The adapter is evaluated on a full-precision base (what merge will produce, within ~1e-6
in logits), not on the 4-bit training base. The untrained base is the same model with
the adapter switched off. Writes reports/metrics.json (a DVC metric, with `base_*`),
reports/predictions.jsonl (with each answer's confidence and warnings) and a per-field breakdown.
The low-confidence threshold is picked on the validation split's answers and recorded in the
metrics (`confidence_threshold`); registration logs it with the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.io import write_json_atomic, write_text_atomic
from tasks.core.progress import reporter
from tasks.data.receipt_json import parse_target
from tasks.evaluation.calibration import pick_threshold, receipt_f1, warned_split
from tasks.evaluation.metrics import per_field, score
from tasks.inference.confidence import judged, token_confidence
from tasks.inference.generation import Settings, answers, scored_answers
from tasks.model.modeling import (
    fit_images,
    load_model,
    load_processor,
    require_adapter,
    resolve_base,
)


def load_for_inference(params: Params, base_dir: str | Path, adapter_dir: str | Path | None):
    """Base in full (or the compute) precision, with the adapter on top when given."""
    from peft import PeftModel

    if adapter_dir:
        adapter_dir = require_adapter(adapter_dir)
    base, revision = resolve_base(params.model, base_dir)
    s = Settings.from_params(params)
    model = load_model(
        base, quantization="none", compute_dtype=s.dtype, attn=s.attn, revision=revision
    )
    # the adapter's processor is the one it was trained with (image_fit applied)
    processor = (
        load_processor(str(adapter_dir))
        if adapter_dir
        else fit_images(load_processor(base, revision), params.model.image_fit)
    )
    if adapter_dir:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.eval(), processor


def run_evaluate(
    params: Params,
    dataset_dir: str | Path,
    base_dir: str | Path,
    adapter_dir: str | Path,
    metrics_path: str | Path,
    predictions_path: str | Path,
    fields_path: str | Path | None = None,
    review_path: str | Path | None = None,
) -> dict[str, Any]:
    from tasks.data.dataset import load_dataset_dir

    e = params.evaluate
    splits = load_dataset_dir(dataset_dir)
    test = splits["test"]
    if e.limit:
        test = test.select(range(min(e.limit, len(test))))
    images, gts = list(test["image"]), [json.loads(t) for t in test["target"]]
    model, processor = load_for_inference(params, base_dir, adapter_dir)
    settings = Settings.from_params(params)
    start = time.perf_counter()
    ocr = list(test["ocr"]) if settings.ocr_prompt else None
    tuned_scored = scored_answers(
        model, processor, images, settings, ocr, reporter("evaluate: fine-tuned")
    )
    tuned = [a.text for a in tuned_scored]
    tuned_seconds = time.perf_counter() - start
    calibration = pick_on_validation(model, processor, splits["validation"], settings, e)
    with model.disable_adapter():
        base = answers(model, processor, images, settings, ocr, reporter("evaluate: base"))
    metrics: dict[str, float | None] = {k: round(float(v), 4) for k, v in score(tuned, gts).items()}
    metrics |= {f"base_{k}": round(float(v), 4) for k, v in score(base, gts).items() if k != "n"}
    metrics["samples_per_second"] = round(len(images) / tuned_seconds, 3) if tuned_seconds else None
    rows = [
        {"id": rid, "target": tgt, "prediction": out.text, "base_prediction": b, "ocr": o}
        | _judged_row(out, o, calibration["confidence_threshold"])
        for rid, tgt, out, b, o in zip(
            test["id"], test["target"], tuned_scored, base, ocr or [None] * len(tuned), strict=True
        )
    ]
    f1s = [receipt_f1(r["parsed"], gt) for r, gt in zip(rows, gts, strict=True)]
    metrics |= calibration | warned_split(f1s, [bool(r["warnings"]) for r in rows])
    write_json_atomic(metrics_path, metrics)
    write_text_atomic(
        predictions_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    fields = per_field([r["parsed"] for r in rows], gts)
    if fields_path:
        write_json_atomic(fields_path, fields)
    if review_path:
        from tasks.evaluation.review import render_review

        shown = [
            {**r, "image": im, "target": gt} for r, im, gt in zip(rows, images, gts, strict=True)
        ]
        write_text_atomic(review_path, render_review(shown, metrics, fields))
    return metrics


def pick_on_validation(model, processor, validation, settings: Settings, e) -> dict[str, Any]:
    """The fine-tuned model's answers on the validation split, and the low-confidence
    threshold picked on them (tasks.evaluation.calibration)."""
    ocr = list(validation["ocr"]) if settings.ocr_prompt else None
    found = scored_answers(
        model, processor, list(validation["image"]), settings, ocr, reporter("evaluate: validation")
    )
    gts = [json.loads(t) for t in validation["target"]]
    return pick_threshold(
        [token_confidence(a.logprobs, a.pieces)["mean_logprob"] for a in found],
        [receipt_f1(parse_target(a.text), gt) for a, gt in zip(found, gts, strict=True)],
        e.confidence,
    )


def _judged_row(answer, ocr: str | None, threshold: float) -> dict[str, Any]:
    j = judged(answer, ocr, threshold)
    return {"parsed": j["json"], "confidence": j["confidence"], "warnings": j["warnings"]}


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "Evaluate the base and the fine-tuned model on the test split.",
        paths=("dataset", "base", "adapter", "metrics", "predictions", "fields", "review"),
    )

    def body(a, p) -> str:
        m = run_evaluate(
            p, a.dataset, a.base, a.adapter, a.metrics, a.predictions, a.fields, a.review
        )
        return f"evaluate: {json.dumps(m)}"

    cli.run("evaluate", ap, body, argv)


if __name__ == "__main__":
    main()
