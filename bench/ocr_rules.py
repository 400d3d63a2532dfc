"""The OCR+rules baseline: the same OCR lines the model is given, turned into CORD's JSON by
keyword and regex rules instead of a model. What the model must beat to be worth its cost.

    python -m bench.ocr_rules [--dataset artifacts/dataset] [--split test]
        [--report docs/ocr_rules.json]

Rules, per OCR line (top to bottom): a line naming a summary field by keyword (sub-total,
tax, service, discount, total, cash, change, card) gives that field the line's last amount;
before the first such line, a line holding an amount and a name is a menu item (a leading or
trailing small integer, or `2x`/`x2`, is its count). Scored by the pipeline's own metrics
(`tasks.evaluation.metrics.score`) on the `ocr` column that ingest stored, so model and rules read the
same words. The rules were written by looking at training receipts only.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from tasks.data.receipt_json import to_target
from tasks.evaluation.metrics import per_field, score

# An amount as receipts print it: 82,000 / 82.000 / 82000 / 8,200.50 (a leading Rp or @ aside).
AMOUNT = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:[.,]\d{3})+|\d{3,})(?:[.,]\d{2})?(?![\w])")
COUNT = re.compile(r"^(\d{1,2})(?:\s*[xX])?\s+|\s+[xX]?(\d{1,2})[xX]?$")

# (field path, keywords), checked in this order: the first whose keyword is in the line wins.
SUMMARY: tuple[tuple[tuple[str, str], tuple[str, ...]], ...] = (
    (("sub_total", "subtotal_price"), ("SUBTOTAL", "SUB TOTAL", "SUB-TOTAL", "SUB_TOTAL")),
    (("total", "changeprice"), ("CHANGE", "KEMBALI", "KEMBALIAN")),
    (("total", "cashprice"), ("CASH", "TUNAI")),
    (("total", "creditcardprice"), ("CARD", "VISA", "MASTER", "DEBIT", "CREDIT", "BCA")),
    (("sub_total", "tax_price"), ("TAX", "PB1", "PPN", "VAT", "PAJAK")),
    (("sub_total", "service_price"), ("SERVICE", "SVC", "SERV", "S.C")),
    (("sub_total", "discount_price"), ("DISC", "DISKON", "POTONGAN")),
    (("total", "total_price"), ("TOTAL", "DUE", "JUMLAH", "AMOUNT", "GRAND", "BAYAR")),
)


def _amounts(line: str) -> list[str]:
    return AMOUNT.findall(line)


def _summary_field(line: str) -> tuple[str, str] | None:
    upper = line.upper()
    for path, keys in SUMMARY:
        if any(k in upper for k in keys):
            return path
    return None


def _item(line: str) -> dict[str, str] | None:
    amounts = _amounts(line)
    if not amounts:
        return None
    price = amounts[-1]
    rest = line[: line.rfind(price)].strip()
    for a in amounts[:-1]:
        rest = rest.replace(a, " ")
    item: dict[str, str] = {}
    m = COUNT.search(rest)
    if m:
        item["cnt"] = m.group(1) or m.group(2)
        rest = (rest[: m.start()] + " " + rest[m.end() :]).strip()
    name = " ".join(rest.replace("@", " ").split())
    if not re.search(r"[A-Za-z]{2}", name):
        return None
    return {"nm": name, **item, "price": price}


def rules_parse(ocr: str) -> dict[str, Any]:
    """CORD's gt_parse from OCR lines, by the rules above."""
    menu: list[dict[str, str]] = []
    groups: dict[str, dict[str, str]] = {}
    summary_started = False
    for line in ocr.splitlines():
        field = _summary_field(line)
        amounts = _amounts(line)
        if field is not None:
            summary_started = True
            if amounts:
                groups.setdefault(field[0], {}).setdefault(field[1], amounts[-1])
            continue
        if not summary_started:
            item = _item(line)
            if item is not None:
                menu.append(item)
    out: dict[str, Any] = {}
    if menu:
        out["menu"] = menu[0] if len(menu) == 1 else menu
    out.update(groups)
    return out


def run(dataset: str | Path, split: str) -> dict[str, Any]:
    from tasks.data.dataset import load_dataset_dir

    ds = load_dataset_dir(dataset, decode_images=False)[split]
    if any(o is None for o in ds["ocr"]):
        raise SystemExit(f"{dataset}: no OCR column (ingest with model.ocr_prompt: true)")
    start = time.perf_counter()
    answers = [to_target(rules_parse(o)) for o in ds["ocr"]]
    seconds = time.perf_counter() - start
    gts = [json.loads(t) for t in ds["target"]]
    from tasks.data.receipt_json import parse_target

    metrics = {k: round(float(v), 4) for k, v in score(answers, gts).items()}
    return {
        "split": split,
        "metrics": metrics,
        "fields": per_field([parse_target(a) for a in answers], gts),
        "seconds": round(seconds, 3),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="artifacts/dataset")
    ap.add_argument("--split", default="test")
    ap.add_argument("--report", default="docs/ocr_rules.json")
    args = ap.parse_args(argv)
    from tasks.core.io import write_json_atomic

    report = run(args.dataset, args.split)
    write_json_atomic(args.report, report)
    print(json.dumps(report["metrics"]))


if __name__ == "__main__":
    main()
