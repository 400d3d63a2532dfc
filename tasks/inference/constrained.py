"""Schema-guaranteed JSON: generation held to CORD's `gt_parse` schema.

`cord_json_schema()` writes CORD's schema (`tasks.data.receipt_json.SCHEMA`) as a JSON Schema:
the four groups, the fields each may hold, string values, an item or a list of items where
cord-v2 writes either, and no other key. `json_schema_processor()` turns it into a
`transformers` logits processor through Outlines (`outlines.from_transformers` on the model
and its vision processor) with the llguidance backend: at every step, tokens that would leave
the schema are masked, so an answer that closes is valid JSON whose every key is CORD's.

The backend was chosen by measurement (docs/benchmarks.md, `bench/constrained.py`): llguidance
compiles this schema in ~0.1 s and runs within noise of xgrammar (which pulls ~1 GB of triton);
outlines_core, Outlines' default, cannot compile it within 8 GiB; lm-format-enforcer 0.11.3
does not import against transformers 5.

The schema alone cannot keep an answer within `max_new_tokens`: a model that rambles (an
untrained base does) would be cut mid-object. `CloseWithinBudget` runs after the schema's
processor: in the last `RESERVE` tokens of the budget it keeps, among the tokens the schema
allows, only those that close (`"`, `}`, `]`, end of text) whenever one is allowed. The
schema nests at most 7 levels and its longest key is 15 characters, so from any state an
answer closes within 7 + 15 + 3 tokens: every answer ends as valid JSON.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.data.receipt_json import SCHEMA, SUB_FIELDS

# Bounds that keep a constrained answer finite. CORD's longest value is 60 characters and its
# longest list 22 items, over its 900 v1 annotations (tests/model/test_constrained.py checks
# that the schema accepts every one of them).
MAX_CHARS = 64
MAX_ITEMS = 32
# Compact JSON, as the targets are written (tasks.data.receipt_json.to_target): no whitespace.
_COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def _value() -> dict[str, Any]:
    """A field's value: a string, or a list of strings where cord-v2 repeats a field."""
    text = {"type": "string", "maxLength": MAX_CHARS}
    return {"anyOf": [text, {"type": "array", "items": text, "maxItems": MAX_ITEMS}]}


def _group(fields: tuple[str, ...], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    properties = {f: _value() for f in fields} | (extra or {})
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _one_or_many(item: dict[str, Any]) -> dict[str, Any]:
    """cord-v2 writes a single item as an object and several as a list."""
    return {"anyOf": [item, {"type": "array", "items": item, "maxItems": MAX_ITEMS}]}


def cord_json_schema() -> dict[str, Any]:
    """CORD's `gt_parse` as a JSON Schema (every group and field optional, no other key)."""
    sub = _group(SUB_FIELDS)
    menu = _group(tuple(f for f in SCHEMA["menu"] if f != "sub"), {"sub": _one_or_many(sub)})
    return {
        "type": "object",
        "properties": {
            "menu": _one_or_many(menu),
            "void_menu": _one_or_many(_group(SCHEMA["void_menu"])),
            "sub_total": _group(SCHEMA["sub_total"]),
            "total": _group(SCHEMA["total"]),
        },
        "additionalProperties": False,
        "x-guidance": _COMPACT,
    }


def json_schema_processor(model, processor, backend: str = "llguidance"):
    """A logits processor that holds `model.generate` to `cord_json_schema()`.

    Stateful per generation: call `.reset()` before each `generate` that reuses it.
    """
    import outlines
    from outlines.backends import get_json_schema_logits_processor

    wrapped = outlines.from_transformers(model, processor)
    return get_json_schema_logits_processor(backend, wrapped, json.dumps(cord_json_schema()))


# Tokens to keep for closing: > 7 closing brackets/quotes + a 15-character key + `:""`.
RESERVE = 32


def in_string(prefix: str) -> bool:
    """Whether a JSON prefix ends inside a string (an odd number of unescaped quotes)."""
    quotes, escaped = 0, False
    for ch in prefix:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quotes += 1
    return quotes % 2 == 1


class CloseWithinBudget:
    """A `transformers` logits processor, after the schema's: in the last `reserve` tokens of
    the budget, keep the allowed tokens that close the JSON whenever one is allowed: inside a
    string, `"` then only `}` and `]`; outside, only `}` and `]` (or the end of the text).
    Set `prompt_length` (the padded prompt's length) before each `generate`."""

    def __init__(self, tokenizer, max_new_tokens: int, reserve: int = RESERVE):
        import torch

        self.tokenizer = tokenizer
        self.prompt_length = 0
        self.max_new_tokens, self.reserve = max_new_tokens, reserve
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        texts = [tokenizer.convert_tokens_to_string([p]) if p is not None else "" for p in pieces]
        ends = [bool(t) and set(t) <= set("}]") for t in texts]
        if tokenizer.eos_token_id is not None:
            ends[tokenizer.eos_token_id] = True
        self.outside = torch.tensor(ends)
        self.inside = torch.tensor([t[:1] == '"' and set(t[1:]) <= set("}]") for t in texts])

    def __call__(self, input_ids, scores):
        import torch

        left = self.max_new_tokens - (input_ids.shape[1] - self.prompt_length)
        if left > self.reserve:
            return scores
        n = min(len(self.outside), scores.shape[1])  # the model may pad its vocabulary
        allowed = scores > float("-inf")
        for row in range(scores.shape[0]):
            text = self.tokenizer.decode(input_ids[row, self.prompt_length :])
            closing = (self.inside if in_string(text) else self.outside)[:n].to(scores.device)
            keep = torch.zeros_like(allowed[row])
            keep[:n] = closing & allowed[row, :n]
            if keep.any():
                scores[row] = scores[row].masked_fill(~keep, float("-inf"))
        return scores
