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

With OCR grounding, `SpanGrammars` can go further (`evaluate.ocr_spans`, off by default: on
validation it got more totals right but a worse TED than the schema alone): each row
of a batch is held, through an llguidance matcher of its own, to CORD's schema whose every
value is a span of that receipt's OCR lines (`span_values`: runs of words within one line;
amounts and counts must hold a digit). The answer can only copy what OCR read: it picks where
a value starts and ends, never spells a value that is not on the receipt. Over CORD's train
and validation annotations 89-91 % of the values are such spans; the rest (words OCR split or
joined otherwise) an answer held to spans cannot get right.

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
# An OCR span (`ocr_spans`) is at most this many words of one line.
MAX_SPAN_WORDS = 10
# Compact JSON, as the targets are written (tasks.data.receipt_json.to_target): no whitespace.
_COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


def _value(field: str, spans: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A field's value: a string, or a list of strings where cord-v2 repeats a field; with
    `spans` (`span_values`), each string is one of the spans of the field's kind."""
    text: dict[str, Any] = {"type": "string", "maxLength": MAX_CHARS}
    if spans:
        text = {"type": "string", "enum": spans["number" if numeric_field(field) else "text"]}
    return {"anyOf": [text, {"type": "array", "items": text, "maxItems": MAX_ITEMS}]}


def _group(
    fields: tuple[str, ...],
    extra: dict[str, Any] | None = None,
    spans: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    properties = {f: _value(f, spans) for f in fields} | (extra or {})
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _one_or_many(item: dict[str, Any]) -> dict[str, Any]:
    """cord-v2 writes a single item as an object and several as a list."""
    return {"anyOf": [item, {"type": "array", "items": item, "maxItems": MAX_ITEMS}]}


def cord_json_schema(spans: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """CORD's `gt_parse` as a JSON Schema (every group and field optional, no other key); with
    `spans` (`span_values` of one receipt), every value is one of that receipt's OCR spans."""
    sub = _group(SUB_FIELDS, spans=spans)
    menu = _group(tuple(f for f in SCHEMA["menu"] if f != "sub"), {"sub": _one_or_many(sub)}, spans)
    return {
        "type": "object",
        "properties": {
            "menu": _one_or_many(menu),
            "void_menu": _one_or_many(_group(SCHEMA["void_menu"], spans=spans)),
            "sub_total": _group(SCHEMA["sub_total"], spans=spans),
            "total": _group(SCHEMA["total"], spans=spans),
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


def numeric_field(field: str) -> bool:
    """CORD's amounts and counts (`price`, `total_price`, `cnt`, `menuqty_cnt`, `num`, ...)."""
    return field.endswith(("price", "cnt")) or field == "num"


def span_values(ocr: str) -> dict[str, list[str]] | None:
    """What a value may be, copied from one receipt's OCR: any span for text fields; for
    amounts and counts, a span of one or two words with a digit in it (over CORD's train and
    validation annotations, no value that is an OCR span is lost by this). None: no text."""
    spans = ocr_spans(ocr)
    if not spans:
        return None
    numbers = [s for s in spans if len(s.split()) <= 2 and any(c.isdigit() for c in s)]
    return {"text": spans, "number": numbers or spans}


def ocr_spans(ocr: str, max_words: int = MAX_SPAN_WORDS) -> list[str]:
    """Every run of up to `max_words` consecutive words within one OCR line (at most
    `MAX_CHARS` characters), sorted: the values an answer copied from the OCR can hold."""
    spans = set()
    for line in ocr.splitlines():
        words = line.split()
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + max_words) + 1):
                span = " ".join(words[i:j])
                if len(span) <= MAX_CHARS:
                    spans.add(span)
    return sorted(spans)


class SpanGrammars:
    """A `transformers` logits processor that holds each row of a batch to a grammar of its
    own (llguidance, one `LLMatcher` per row): `cord_json_schema(span_values(ocr))`, CORD's
    schema whose values are that receipt's OCR spans. A row whose grammar has ended may only
    end. Call `start(ocr, prompt_length)` before each `generate` (one OCR text per row)."""

    def __init__(self, tokenizer):
        import llguidance.hf

        self.lltok = llguidance.hf.from_tokenizer(tokenizer)  # ~1 s: once per generation run
        self.eos = tokenizer.eos_token_id
        self.prompt_length = 0
        self.matchers: list[Any] = []

    def start(self, ocr: list[str], prompt_length: int) -> None:
        import llguidance
        import torch

        self.prompt_length = prompt_length
        self.matchers = []
        for text in ocr:
            schema = json.dumps(cord_json_schema(span_values(text)))
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
            self.matchers.append(llguidance.LLMatcher(self.lltok, grammar))
        self.bitmask = torch.full(
            (len(ocr), (self.lltok.vocab_size + 31) // 32), -1, dtype=torch.int32
        )

    def __call__(self, input_ids, scores):
        import llguidance.torch
        import torch

        started = input_ids.shape[1] > self.prompt_length
        for row, matcher in enumerate(self.matchers):
            if started and not matcher.is_stopped():
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_stopped() or matcher.is_error():
                self.bitmask[row] = 0
                self.bitmask[row, self.eos // 32] = 1 << (self.eos % 32)
            else:
                llguidance.torch.fill_next_token_bitmask(matcher, self.bitmask, row)
        # Unpacked here: llguidance.torch.apply_token_bitmask_inplace is torch.compile'd, which
        # needs a compiler toolchain on a CPU host.
        bits = (self.bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        allowed = bits.flatten(1)[:, : scores.shape[1]].bool().to(scores.device)
        if allowed.shape[1] < scores.shape[1]:  # a vocabulary padded beyond the tokenizer's
            extra = scores.shape[1] - allowed.shape[1]
            allowed = torch.cat([allowed, allowed.new_zeros((allowed.shape[0], extra))], dim=1)
        return scores.masked_fill(~allowed, float("-inf"))


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
