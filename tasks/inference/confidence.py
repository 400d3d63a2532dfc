"""How sure an answer is, and the warnings that go beside it.

- `token_confidence(logprobs, pieces)`: from the model's own log-probabilities of the tokens it
  generated (raw logits, before any schema constraint), the mean and the minimum over the
  *value* tokens, the characters inside JSON string values (keys, braces and quotes are
  nearly free once the format is learnt, and would hide an unsure amount).
- `answer_warnings(...)`: invalid JSON; a mean value log-probability under the threshold the
  evaluate stage picked on validation receipts (`tasks.evaluation.calibration`), recorded with
  the registered version; and, with OCR grounding, an amount the answer gives that is nowhere
  in the receipt's OCR text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tasks.data.receipt_json import is_price_field, is_valid_json, iter_fields, parse_target
from tasks.inference.generation import Answer


def value_chars(text: str) -> list[bool]:
    """For each character of (possibly truncated or malformed) JSON text: is it inside a
    string value? A string followed by `:` is a key; any other string is a value."""
    inside = [False] * len(text)
    start, escaped = None, False
    for i, ch in enumerate(text):
        if start is None:
            if ch == '"':
                start = i
            continue
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            if not text[i + 1 :].lstrip().startswith(":"):
                inside[start + 1 : i] = [True] * (i - start - 1)
            start = None
    if start is not None:  # cut off inside a string: a value unless a key was being written
        inside[start + 1 :] = [True] * (len(text) - start - 1)
    return inside


def token_confidence(logprobs: Sequence[float], pieces: Sequence[str]) -> dict[str, Any]:
    """`mean_logprob` and `min_logprob` of the value tokens (every token when the answer has
    no value, e.g. `{}`), and how many tokens that was. A token is a value token when any of
    its characters is inside a string value."""
    if len(logprobs) != len(pieces):
        raise ValueError(f"{len(logprobs)} log-probabilities for {len(pieces)} tokens")
    inside = value_chars("".join(pieces))
    picked, at = [], 0
    for lp, piece in zip(logprobs, pieces, strict=True):
        if any(inside[at : at + len(piece)]):
            picked.append(lp)
        at += len(piece)
    used = picked or list(logprobs)
    if not used:
        return {"mean_logprob": None, "min_logprob": None, "value_tokens": 0}
    return {
        "mean_logprob": round(sum(used) / len(used), 4),
        "min_logprob": round(min(used), 4),
        "value_tokens": len(picked),
    }


def _amount_key(text: str) -> str:
    """An amount as OCR and the answer may both write it: no spaces, `.` and `,` alike."""
    return re.sub(r"\s+", "", text).replace(".", ",")


def amounts_not_in_ocr(parsed: Any, ocr: str) -> list[str]:
    """Field paths whose amount (a `*price*` field holding a digit) is nowhere in the OCR text."""
    seen = _amount_key(ocr)
    return [
        path
        for path, key, value in iter_fields(parsed)
        if is_price_field(key)
        and isinstance(value, str)
        and any(c.isdigit() for c in value)
        and _amount_key(value.lstrip("*")) not in seen
    ]


def answer_warnings(
    parsed: Any,
    valid_json: bool,
    confidence: dict[str, Any],
    min_confidence: float | None,
    ocr: str | None,
) -> list[str]:
    """Why this answer should not be trusted as it stands (empty: no reason found)."""
    out = []
    if not valid_json:
        out.append("invalid JSON: the answer was repaired to be read, fields may be missing")
    mean = confidence.get("mean_logprob")
    if min_confidence is not None and mean is not None and mean < min_confidence:
        out.append(
            f"low confidence: mean value log-probability {mean:.3f} < {min_confidence:.3f} "
            "(the threshold picked on validation receipts)"
        )
    if ocr:
        missing = amounts_not_in_ocr(parsed, ocr)
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            out.append(f"not in the OCR text: {shown}")
    return out


def judged(answer: Answer, ocr: str | None, min_confidence: float | None) -> dict[str, Any]:
    """An answer as predict, score and the server give it: the parsed JSON, whether the text
    was valid JSON, the text itself, its confidence and the warnings about the answer."""
    parsed, valid = parse_target(answer.text), is_valid_json(answer.text)
    confidence = token_confidence(answer.logprobs, answer.pieces)
    return {
        "json": parsed,
        "valid_json": valid,
        "raw": answer.text,
        "confidence": confidence,
        "warnings": answer_warnings(parsed, valid, confidence, min_confidence, ocr),
    }
