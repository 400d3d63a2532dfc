"""Receipts as training batches: image + prompt + target -> input_ids, labels, pixel_values.

Sized from the data (`max_length_for`), never truncated: a record too long to fit raises,
naming the record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from tasks.core.errors import UserError
from tasks.model.modeling import (
    IMAGE_TOKEN,
    image_token_count,
    instruction,
    prompt_text,
    prompt_token_count,
    varies_with_image,
)


class TargetTooLong(UserError):
    pass


@dataclass
class ReceiptCollator:
    """Image + prompt + target -> input_ids, attention_mask, pixel_values, labels.

    The prompt (with its image expanded to image tokens) and the target are tokenised
    apart and concatenated, so labels mask exactly the prompt; pad and image tokens
    are -100 too. Nothing is ever truncated: a record longer than `max_length` raises
    naming the record (cutting into image tokens silently breaks LLaVA).
    """

    processor: Any
    prompt: str
    max_length: int
    # OCR grounding: each record's `ocr` text follows the image in its prompt (tasks.inference.ocr).
    ocr: bool = False
    # At training, this share of records get background lines in their OCR text, as a photo's
    # reading has (tasks.data.augment), up to `background_lines`, drawn from a generator seeded
    # by `seed` in batch order (a run resumed from a checkpoint draws from the seed afresh).
    # A record the lines would make too long is kept as it is.
    background: float = 0.0
    background_lines: int = 8
    seed: int = 0
    # A batch's width is rounded up to a multiple of this (pads are masked and carry no labels).
    pad_to_multiple_of: int = 1
    # False: the batch has no attention_mask. Pads come after every real token (right
    # padding), so causal attention alone keeps real tokens from seeing them, and pads carry
    # no labels: the loss and its gradients are the same, and sdpa takes its causal kernel
    # instead of a masked one (training's choice; generation pads on the left and needs it).
    attention_mask: bool = True
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def with_background(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record, its OCR text with background lines or not (the generator's next draws)."""
        from tasks.data.augment import with_background

        if not (self.ocr and self.background > 0 and self._rng.random() < self.background):
            return record
        ocr = with_background(record.get("ocr") or "", self._rng, self.background_lines)
        return record | {"ocr": ocr}

    def encode(self, record: dict[str, Any]) -> tuple[list[int], int, dict[str, torch.Tensor]]:
        tok = self.processor.tokenizer
        user = instruction(self.prompt, (record.get("ocr") or "") if self.ocr else None)
        enc = self.processor(
            images=record["image"].convert("RGB"),
            text=prompt_text(self.processor, user),
            return_tensors="pt",
        )
        prompt_ids = enc["input_ids"][0].tolist()
        target_ids = tok(record["target"], add_special_tokens=False)["input_ids"] + [
            tok.eos_token_id
        ]
        ids = prompt_ids + target_ids
        if len(ids) > self.max_length:
            raise TargetTooLong(
                f"record {record['id']!r}: field target is {len(target_ids)} tokens; "
                f"with the prompt that is {len(ids)} > max_length {self.max_length}"
            )
        # pixel_values, and LLaVA-NeXT's image_sizes: what the vision side takes, per record
        vision = {k: v[0] for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        return ids, len(prompt_ids), vision

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tok = self.processor.tokenizer
        image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        encoded = [self._encode_drawn(r) for r in records]
        longest = max(len(ids) for ids, _, _ in encoded)
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(encoded), width), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        for i, (ids, n_prompt, _) in enumerate(encoded):
            row = torch.tensor(ids)
            input_ids[i, : len(ids)] = row
            attention[i, : len(ids)] = 1
            labels[i, n_prompt : len(ids)] = row[n_prompt:]
        labels[input_ids == image_id] = -100
        text = {"input_ids": input_ids, "labels": labels}
        if self.attention_mask:
            text["attention_mask"] = attention
        return text | {key: _stack([v[key] for _, _, v in encoded]) for key in encoded[0][2]}

    def _encode_drawn(
        self, record: dict[str, Any]
    ) -> tuple[list[int], int, dict[str, torch.Tensor]]:
        drawn = self.with_background(record)
        if drawn is record:
            return self.encode(record)
        try:
            return self.encode(drawn)
        except TargetTooLong:  # the lines pushed it past max_length: the record as it is
            return self.encode(record)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-record tensors; LLaVA-NeXT's pixel_values have one tile per grid cell, so
    records with fewer tiles are zero-padded (the model unpads them by `image_sizes`)."""
    most = max(t.shape[0] for t in tensors) if tensors[0].dim() else 0
    if tensors[0].dim() == 4 and any(t.shape[0] != most for t in tensors):
        tensors = [torch.cat([t, t.new_zeros((most - t.shape[0], *t.shape[1:]))]) for t in tensors]
    return torch.stack(tensors)


def max_length_for(
    processor,
    prompt: str,
    targets: list[str],
    image_sizes: list[tuple[int, int]] | None = None,
    ocr: list[str] | None = None,
) -> int:
    """Image tokens + prompt + the longest target + eos: sized from the data, never guessed.
    Where the image-token count depends on the image (LLaVA-NeXT), the most that any of
    `image_sizes` (width, height) expands to. With `ocr` (one text per target), the prompt
    carries it, and the longest prompt counts."""
    tok = processor.tokenizer
    n_prompt = (
        max(prompt_token_count(processor, instruction(prompt, o or "")) for o in ocr)
        if ocr
        else prompt_token_count(processor, prompt)
    )
    if varies_with_image(processor):
        if not image_sizes:
            raise ValueError("this processor's image-token count depends on the image: pass sizes")
        n_image = max(image_token_count(processor, size) for size in set(image_sizes))
    else:
        n_image = image_token_count(processor)
    longest = max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in targets)
    # +1 for eos, +2 slack for tokens the processor adds (bos) around the expanded image.
    return n_image + n_prompt + longest + 3
