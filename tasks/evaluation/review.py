"""The review page: one self-contained HTML file to look at what the model got wrong.

Written by the evaluate stage to reports/review.html (a DVC output, logged with the
registered version's run). For every test receipt: its image (embedded), the fields expected
and predicted side by side with the differing ones highlighted, and its TED accuracy, sorted
worst first; the aggregate metrics (fine-tuned and base) and the per-field breakdown on top.
No script, no external resource: it opens from disk, from MLflow's artifact view, or a mail.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from typing import Any

from tasks.evaluation.metrics import flatten, normalize, ted_accuracy

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin:0 0 8px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}
.receipt{display:flex;gap:24px;border-top:2px solid #888;padding:16px 0}
.receipt img{max-width:320px;border:1px solid #ccc}
tr.diff td{background:#fde2e2}tr.same td{background:#e6f4e6}
.score{font-weight:bold}.warn{color:#a40000}pre{background:#f7f7f7;padding:6px;white-space:pre-wrap;max-width:640px}
"""


def _img_tag(image, max_side: int = 640) -> str:
    im = image.convert("RGB")
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="receipt" src="data:image/jpeg;base64,{data}">'


def field_rows(pred: Any, gt: Any) -> list[tuple[str, list[str], list[str], bool]]:
    """(field path, expected values, predicted values, same?) per field of either side, in the
    ground truth's order, then fields only the prediction has."""
    want: dict[str, list[str]] = {}
    got: dict[str, list[str]] = {}
    for key, value in flatten(normalize(gt)):
        want.setdefault(key, []).append(value)
    for key, value in flatten(normalize(pred if isinstance(pred, dict) else {})):
        got.setdefault(key, []).append(value)
    keys = list(want) + [k for k in got if k not in want]
    return [
        (k, want.get(k, []), got.get(k, []), Counter(want.get(k, [])) == Counter(got.get(k, [])))
        for k in keys
    ]


def _table(head: list[str], rows: list[list[Any]], attrs: list[str] | None = None) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        f"<tr{(' ' + attrs[i]) if attrs else ''}>"
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _confidence_note(metrics: dict[str, Any]) -> str:
    """The low-confidence threshold, what it was picked on, and what it did on this split."""
    if "confidence_threshold" not in metrics:
        return ""
    m = metrics
    return (
        "<h2>Warnings</h2><p>Low-confidence threshold (mean value-token log-probability): "
        f"<b>{m['confidence_threshold']}</b>, picked on {m.get('validation_n')} validation "
        f"receipts ({m.get('validation_right')} answered right; the reference: "
        f"{'the right answers' if m.get('confidence_basis') else 'every answer'}). On these test receipts "
        f"{m.get('warned_rate', 0):.0%} of the answers carry a warning; mean field F1 of the "
        f"warned {m.get('f1_warned')}, of the unwarned {m.get('f1_unwarned')}.</p>"
    )


def _answer_note(r: dict[str, Any]) -> str:
    """The answer's confidence and its warnings (none: a line saying so)."""
    if "confidence" not in r:
        return ""
    c = r["confidence"]
    items = "".join(f"<li>{html.escape(w)}</li>" for w in r.get("warnings", []))
    return (
        f"<p>confidence: mean {c.get('mean_logprob')}, min {c.get('min_logprob')} over "
        f"{c.get('value_tokens')} value tokens</p>"
        + (f'<ul class="warn">{items}</ul>' if items else "<p>no warnings</p>")
    )


def render_review(
    records: list[dict[str, Any]],
    metrics: dict[str, Any],
    fields: dict[str, dict[str, float]],
    title: str = "receipt-llava: test receipts, worst first",
) -> str:
    """records: id, image (PIL), target (gt_parse dict), prediction (raw text), parsed (dict),
    and with OCR grounding `ocr` (the lines the prompt carried); `confidence` and `warnings`
    when the answers were judged (tasks.inference.confidence)."""
    scored = sorted(
        ({**r, "ted": ted_accuracy(r["parsed"], r["target"])} for r in records),
        key=lambda r: (r["ted"], r["id"]),
    )
    names = sorted({k[5:] for k in metrics if k.startswith("base_")})
    summary = _table(
        ["metric", "fine-tuned", "base"],
        [[k, metrics.get(k), metrics.get(f"base_{k}")] for k in names],
    )
    breakdown = _table(
        ["field", "tp", "fp", "fn", "f1"],
        [[k, v["tp"], v["fp"], v["fn"], v["f1"]] for k, v in sorted(fields.items())],
    )
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{len(records)} receipts. Highlighted rows differ from the ground truth.</p>",
        f"<h2>Metrics</h2>{summary}",
        _confidence_note(metrics),
        f"<h2>Per field</h2>{breakdown}",
    ]
    for r in scored:
        rows = field_rows(r["parsed"], r["target"])
        table = _table(
            ["field", "expected", "predicted"],
            [[k, " | ".join(w) or "—", " | ".join(g) or "—"] for k, w, g, _ in rows],
            [f'class="{"same" if same else "diff"}"' for *_, same in rows],
        )
        parts.append(
            f'<section class="receipt" data-id="{html.escape(r["id"])}">'
            f"<div>{_img_tag(r['image'])}</div><div>"
            f"<h2>{html.escape(r['id'])} · TED accuracy "
            f'<span class="score">{r["ted"]:.3f}</span></h2>{_answer_note(r)}{table}'
            f"<details><summary>raw answer</summary><pre>{html.escape(r['prediction'])}</pre>"
            f"</details><details><summary>expected JSON</summary><pre>"
            f"{html.escape(json.dumps(r['target'], ensure_ascii=False, indent=1))}</pre></details>"
            + (
                f"<details><summary>OCR lines in the prompt</summary><pre>"
                f"{html.escape(r['ocr'] or '(OCR found no text)')}</pre></details>"
                if isinstance(r.get("ocr"), str)
                else ""
            )
            + "</div></section>"
        )
    parts.append("</body></html>")
    return "".join(parts)
