"""Donut-compatible receipt metrics: normalised tree-edit-distance accuracy and field F1.

A port of clovaai/donut's `JSONParseEvaluator` (donut/util.py), rule for rule: values are
normalised by `normalize` (its `normalize_dict`), trees are compared with the Zhang-Shasha
edit distance (`zss`) where a leaf costs its text length, accuracy is
max(0, 1 - TED(pred, gt) / TED({}, gt)) per receipt, and F1 is micro-averaged over
(field path, value) pairs. The one departure: where Donut divides by zero (a ground truth
that normalises to nothing, or no fields at all for F1), these functions return a number
and say which in their docstrings.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import zss


def normalize(data: Any) -> Any:
    """Donut's `normalize_dict`, rule for rule.

    - a falsy value (`None`, `""`, `0`, `False`, `[]`, `{}`) normalises to `{}`, so a dict
      drops the key that held it;
    - dict keys are sorted by (length, name), and every kept value becomes a list;
    - a list of dicts keeps its non-empty normalised dicts; any other list keeps only the
      items whose type is exactly `str`, `int` or `float` (so no booleans) and whose text is
      not blank, each as stripped text;
    - any other value becomes `[str(value).strip()]`.
    """
    if not data:
        return {}
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key in sorted(data, key=lambda k: (len(k), k)):
            value = normalize(data[key])
            if value:
                out[key] = value if isinstance(value, list) else [value]
        return out
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            return [n for n in (normalize(item) for item in data) if n]
        return [
            str(item).strip()
            for item in data
            if type(item) in (str, int, float) and str(item).strip()
        ]
    return [str(data).strip()]


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, value) pairs of a normalised tree: the unit of field F1."""
    pairs: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            pairs += flatten(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(data, list):
        for item in data:
            pairs += flatten(item, prefix)
    else:
        pairs.append((prefix, data))
    return pairs


def _tree(data: Any, node: zss.Node | None = None) -> zss.Node:
    node = node or zss.Node("<root>")
    if isinstance(data, dict):
        for key, value in data.items():
            child = zss.Node(key)
            node.addkid(_tree(value, child))
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                node.addkid(_tree(item, zss.Node("<subtree>")))
            else:
                node.addkid(zss.Node(f"<leaf>{item}"))
    return node


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _leaf(label: str) -> str | None:
    """A leaf's text, or None for an inner node: like Donut, any label *containing* '<leaf>' is a
    leaf, and every '<leaf>' in it is removed."""
    return label.replace("<leaf>", "") if "<leaf>" in label else None


def _insert_remove_cost(node: zss.Node) -> int:
    text = _leaf(node.label)
    return len(text) if text is not None else 1


def _update_cost(a: zss.Node, b: zss.Node) -> int:
    la, lb = _leaf(a.label), _leaf(b.label)
    if la is not None and lb is not None:
        return _levenshtein(la, lb)
    if la is None and lb is None:
        return int(a.label != b.label)
    return 1 + len(la if la is not None else lb or "")


def ted(pred: Any, gt: Any) -> int:
    return zss.distance(
        _tree(pred),
        _tree(gt),
        get_children=zss.Node.get_children,
        insert_cost=_insert_remove_cost,
        remove_cost=_insert_remove_cost,
        update_cost=_update_cost,
        return_operations=False,
    )


def ted_accuracy(pred: dict[str, Any], gt: dict[str, Any]) -> float:
    """Donut's cal_acc: max(0, 1 - TED(pred, gt) / TED({}, gt)) on normalised trees.

    Donut divides by zero when the ground truth normalises to nothing (`{}`, or only empty
    values); here that case scores 1.0 for an empty prediction and 0.0 for any other.
    """
    p, g = normalize(pred), normalize(gt)
    worst = ted(normalize({}), g)
    if worst == 0:
        return 1.0 if not p else 0.0
    return float(max(0.0, 1.0 - ted(p, g) / worst))


def field_counts(pred: dict[str, Any], gt: dict[str, Any]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) over flattened field-value pairs."""
    answers = Counter(flatten(normalize(gt)))
    tp = fp = 0
    for pair in flatten(normalize(pred)):
        if answers[pair] > 0:
            answers[pair] -= 1
            tp += 1
        else:
            fp += 1
    return tp, fp, sum(answers.values())


def f1(tp: int, fp: int, fn: int) -> float:
    """Donut's cal_f1: tp / (tp + (fp + fn) / 2); 0 when there is nothing at all."""
    denom = tp + (fp + fn) / 2
    return tp / denom if denom else 0.0


def per_field(
    preds: list[dict[str, Any]], gts: list[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Precision/recall/F1 per field path (menu.nm, total.total_price, ...)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for pred, gt in zip(preds, gts, strict=True):
        answers = Counter(flatten(normalize(gt)))
        for key, value in flatten(normalize(pred)):
            if answers[(key, value)] > 0:
                answers[(key, value)] -= 1
                counts[key][0] += 1
            else:
                counts[key][1] += 1
        for (key, _), n in answers.items():
            counts[key][2] += n
    return {
        k: {"tp": tp, "fp": fp, "fn": fn, "f1": round(f1(tp, fp, fn), 4)}
        for k, (tp, fp, fn) in sorted(counts.items())
    }


def score(outputs: list[str], gts: list[dict[str, Any]]) -> dict[str, float]:
    """Corpus metrics for raw model outputs against ground-truth gt_parse dicts."""
    from tasks.data.receipt_json import is_valid_json, parse_target

    preds = [parse_target(o) for o in outputs]
    tp = fp = fn = 0
    for pred, gt in zip(preds, gts, strict=True):
        a, b, c = field_counts(pred, gt)
        tp, fp, fn = tp + a, fp + b, fn + c
    n = max(1, len(outputs))
    return {
        "n": len(outputs),
        "json_valid_rate": sum(is_valid_json(o) for o in outputs) / n,
        "ted_accuracy": sum(ted_accuracy(p, g) for p, g in zip(preds, gts, strict=True)) / n,
        "field_f1": f1(tp, fp, fn),
        "exact_match": sum(normalize(p) == normalize(g) for p, g in zip(preds, gts, strict=True))
        / n,
        # Not Donut's: the field a receipt is read for, and whether answers follow the image.
        "total_price_exact": sum(
            _total(p) is not None and _total(p) == _total(g)
            for p, g in zip(preds, gts, strict=True)
        )
        / n,
        "distinct_answers": len(set(outputs)) / n,
    }


def _total(gt_parse: dict[str, Any]) -> Any:
    total = gt_parse.get("total") if isinstance(gt_parse, dict) else None
    return total.get("total_price") if isinstance(total, dict) else None
