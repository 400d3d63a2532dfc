"""The low-confidence threshold, picked on validation receipts, and what it does on the test split.

Confidence is the mean value-token log-probability (`tasks.inference.confidence`). The
threshold is the (1 - keep) quantile of the confidence of a reference set of validation
answers: it leaves `keep` of them unwarned and warns on anything the model is less sure of.
The reference is the *right* answers (field F1 against the ground truth at least `right_f1`)
when there are at least `min_right` of them; otherwise every validation answer, so that the
warning still marks inputs the model is less sure of than of its own kind of receipt (noise,
a different kind of document), while wrong amounts are left to the other warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.core.config import ConfidenceParams
from tasks.evaluation.metrics import f1, field_counts


def receipt_f1(pred: Any, gt: dict[str, Any]) -> float:
    return f1(*field_counts(pred if isinstance(pred, dict) else {}, gt))


def pick_threshold(
    confidences: Sequence[float | None], f1s: Sequence[float], p: ConfidenceParams
) -> dict[str, Any]:
    """The threshold and what it rests on: how many validation answers, how many right, and
    which of them were the reference (`confidence_basis`: 1 = right answers, 0 = all)."""
    known = [(c, s) for c, s in zip(confidences, f1s, strict=True) if c is not None]
    right = [c for c, s in known if s >= p.right_f1]
    reference = right if len(right) >= p.min_right else [c for c, _ in known]
    threshold = float(np.quantile(reference, 1.0 - p.keep)) if reference else 0.0
    return {
        "confidence_threshold": round(threshold, 4),
        "confidence_basis": int(reference is right),
        "validation_n": len(f1s),
        "validation_right": len(right),
    }


def warned_split(f1s: list[float], warned: list[bool]) -> dict[str, float | None]:
    """On the test split: the share of answers warned about, and the mean field F1 of the
    warned and the unwarned ones (a useful warning falls on the worse answers)."""

    def mean(xs: list[float]) -> float | None:
        return round(sum(xs) / len(xs), 4) if xs else None

    return {
        "warned_rate": round(sum(warned) / max(1, len(warned)), 4),
        "f1_warned": mean([s for s, w in zip(f1s, warned, strict=True) if w]),
        "f1_unwarned": mean([s for s, w in zip(f1s, warned, strict=True) if not w]),
    }
