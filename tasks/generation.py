"""Batched greedy generation: the one way every stage, `predict` and the pyfunc ask a model."""

from __future__ import annotations

import torch

from tasks.modeling import prompt_text


@torch.inference_mode()
def generate(
    model, processor, images: list, prompt: str, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy, batched, left-padded generation; returns the decoded answers only."""
    processor.tokenizer.padding_side = "left"
    text = prompt_text(processor, prompt)
    device = next(model.parameters()).device
    outputs: list[str] = []
    for i in range(0, len(images), batch_size):
        chunk = [im.convert("RGB") for im in images[i : i + batch_size]]
        enc = processor(
            images=chunk, text=[text] * len(chunk), return_tensors="pt", padding=True
        ).to(device)
        enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
        answers = out[:, enc["input_ids"].shape[1] :]
        outputs += processor.tokenizer.batch_decode(answers, skip_special_tokens=True)
    return [o.strip() for o in outputs]
