"""Batched greedy generation: the one way evaluate (base and challenger), the gate (champion),
`predict` and the served pyfunc ask a model, with one set of settings.

`Settings` carries everything that changes an answer besides the weights: the prompt, the
token budget, the batch (left padding depends on it), the dtype and attention rules, and
whether generation is held to CORD's JSON schema (`tasks.inference.constrained`), and the
confidence under which an answer is warned about (`tasks.inference.confidence`). It
is built from params for evaluate and the gate, and logged as the pyfunc's model_config at
registration, so a registered model answers as it did when it was evaluated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from tasks.core.config import Params
from tasks.model.modeling import inference_dtype, instruction, pick_attn, prompt_text


@dataclass(frozen=True)
class Settings:
    prompt: str
    max_new_tokens: int
    batch_size: int
    # The training compute dtype: inference runs in it on a GPU, in float32 on a CPU.
    compute_dtype: str
    attn_implementation: str
    # Hold generation to CORD's gt_parse JSON schema (tasks.inference.constrained).
    json_schema: bool
    # OCR grounding: the receipt's OCR lines follow the image in the prompt (tasks.inference.ocr).
    ocr_prompt: bool
    # Answers whose mean value-token log-probability is under this get a warning
    # (tasks.inference.confidence); picked on validation receipts by evaluate, set at registration.
    min_confidence: float | None = None
    # With json_schema and OCR grounding, every value is a span of the receipt's OCR lines.
    ocr_spans: bool = False

    @classmethod
    def from_params(cls, params: Params) -> Settings:
        return cls(
            prompt=params.ingest.prompt,
            max_new_tokens=params.evaluate.max_new_tokens,
            batch_size=params.evaluate.batch_size,
            compute_dtype=params.train.compute_dtype,
            attn_implementation=params.train.attn_implementation,
            json_schema=params.evaluate.json_schema,
            ocr_prompt=params.model.ocr_prompt,
            ocr_spans=params.evaluate.ocr_spans,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        """From a pyfunc's model_config (what `as_config` logged); extra keys are ignored."""
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})

    def but(self, **changes: Any) -> Settings:
        """These settings with some changed (e.g. `json_schema` for one request)."""
        return replace(self, **changes)

    def as_config(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dtype(self) -> str:
        return inference_dtype(self.compute_dtype)

    @property
    def attn(self) -> str:
        return pick_attn(self.attn_implementation)


def prompts_for(images: list, s: Settings, ocr: list[str] | None = None) -> list[str]:
    """Each image's user text under settings s: the instruction, and with OCR grounding its
    OCR lines (`ocr`: read at ingest, or by predict from the image)."""
    if not s.ocr_prompt:
        return [s.prompt] * len(images)
    if ocr is None or len(ocr) != len(images):
        raise ValueError("OCR grounding (model.ocr_prompt) needs each image's OCR text")
    return [instruction(s.prompt, o or "") for o in ocr]


@dataclass(frozen=True)
class Answer:
    """A generated answer: its text and, per generated token up to the end of the answer, its
    id, the piece of text it added and the model's log-probability of it (before any
    constraint: the model's own belief)."""

    text: str
    logprobs: tuple[float, ...]
    pieces: tuple[str, ...]
    ids: tuple[int, ...] = ()


def answers(
    model,
    processor,
    images: list,
    s: Settings,
    ocr: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """The model's answers for these images under settings s (`ocr`: their OCR text, when
    already read); `progress(done, total)` after each batch."""
    return [a.text for a in scored_answers(model, processor, images, s, ocr, progress)]


def scored_answers(
    model,
    processor,
    images: list,
    s: Settings,
    ocr: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Answer]:
    """`answers`, each with its tokens' log-probabilities."""
    prompts = prompts_for(images, s, ocr)
    spans = s.json_schema and s.ocr_spans and s.ocr_prompt
    return generate_scored(
        model,
        processor,
        images,
        prompts,
        s.max_new_tokens,
        s.batch_size,
        s.json_schema,
        progress=progress,
        span_ocr=[o or "" for o in ocr] if spans and ocr is not None else None,
    )


def generate(model, processor, images: list, prompt: str | list[str], *args, **kw) -> list[str]:
    """The decoded answers only (see `generate_scored`)."""
    return [a.text for a in generate_scored(model, processor, images, prompt, *args, **kw)]


@torch.inference_mode()
def generate_scored(
    model,
    processor,
    images: list,
    prompt: str | list[str],
    max_new_tokens: int,
    batch_size: int,
    json_schema: bool = False,
    schema_backend: str = "llguidance",
    progress: Callable[[int, int], None] | None = None,
    span_ocr: list[str] | None = None,
) -> list[Answer]:
    """Greedy, batched, left-padded generation. `prompt` is one user text for every image, or
    one per image. With `json_schema`, every step is held to CORD's JSON schema
    (tasks.inference.constrained) by Outlines' `schema_backend`; with `span_ocr` too (each
    image's OCR text), every value to a span of that image's OCR lines (llguidance)."""
    from transformers import LogitsProcessorList

    processor.tokenizer.padding_side = "left"
    texts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
    if len(texts) != len(images):
        raise ValueError(f"{len(texts)} prompts for {len(images)} images")
    device = next(model.parameters()).device
    if span_ocr is not None and len(span_ocr) != len(images):
        raise ValueError(f"{len(span_ocr)} OCR texts for {len(images)} images")
    constrained = spans = None
    if json_schema and span_ocr is not None:
        from tasks.inference.constrained import MAX_CHARS, RESERVE, CloseWithinBudget, SpanGrammars

        spans = SpanGrammars(processor.tokenizer)
        # a value may have to be finished (up to MAX_CHARS) before the answer can close
        budget = CloseWithinBudget(processor.tokenizer, max_new_tokens, RESERVE + MAX_CHARS)
        constrained = LogitsProcessorList([spans, budget])
    elif json_schema:
        from tasks.inference.constrained import CloseWithinBudget, json_schema_processor

        schema = json_schema_processor(model, processor, schema_backend)
        budget = CloseWithinBudget(processor.tokenizer, max_new_tokens)
        constrained = LogitsProcessorList([schema, budget])
    outputs: list[Answer] = []
    for i in range(0, len(images), batch_size):
        chunk = [im.convert("RGB") for im in images[i : i + batch_size]]
        chunk_texts = [prompt_text(processor, t) for t in texts[i : i + batch_size]]
        enc = processor(images=chunk, text=chunk_texts, return_tensors="pt", padding=True).to(
            device
        )
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        if spans is not None and span_ocr is not None:
            spans.start(span_ocr[i : i + batch_size], enc["input_ids"].shape[1])
            budget.prompt_length = enc["input_ids"].shape[1]
        elif constrained is not None:
            schema.reset()  # a new generation: the schema's state starts over
            budget.prompt_length = enc["input_ids"].shape[1]
        with warnings.catch_warnings():
            # Outlines' llguidance processor hands a finished row's padding to its stopped
            # matcher and warns "Error in LLMatcher"; that row's answer is already complete.
            warnings.filterwarnings("ignore", message="Error in LLMatcher")
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=processor.tokenizer.pad_token_id,
                logits_processor=constrained,
                return_dict_in_generate=True,
                output_logits=True,  # the model's own, unconstrained
            )
        # log-probability of each chosen token under the raw logits
        logprobs = model.compute_transition_scores(out.sequences, out.logits, normalize_logits=True)
        new_tokens = out.sequences[:, enc["input_ids"].shape[1] :]
        outputs += [
            _answer(processor.tokenizer, ids.tolist(), lp.tolist())
            for ids, lp in zip(new_tokens, logprobs, strict=True)
        ]
        if progress is not None:
            progress(len(outputs), len(images))
    return outputs


def _answer(tokenizer, ids: list[int], logprobs: list[float]) -> Answer:
    """The answer up to its first end-of-sequence token (the rest of the row is padding)."""
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    end = next((k for k, t in enumerate(ids) if t in stops), len(ids))
    ids, logprobs = ids[:end], logprobs[:end]
    pieces = []
    for k in range(len(ids)):
        # a few tokens of context: word-initial spaces and multi-byte characters decode right
        ctx = ids[max(0, k - 4) : k]
        before = tokenizer.decode(ctx, skip_special_tokens=True)
        pieces.append(tokenizer.decode(ctx + [ids[k]], skip_special_tokens=True)[len(before) :])
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return Answer(text.strip(), tuple(logprobs), tuple(pieces), tuple(ids))
