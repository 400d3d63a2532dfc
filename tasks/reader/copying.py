"""Pretraining's third phase: copy from the prompt's text.

The base learns in phases 1 and 2 to write out the characters it sees in the image. A receipt's
JSON, with OCR grounding, is mostly copied from the OCR lines that follow the image in the
prompt; copying from text is a skill of its own (an induction-style lookup over earlier
positions) that QLoRA's low-rank adapters on a frozen base did not build from CORD's 750
receipts. Here every weight learns it, on generated OCR-like lines that are never receipt JSON
(the base must not answer in CORD's format before fine-tuning):

- "Repeat the OCR lines.": the lines, as they are;
- "Copy the amounts.": the amount that ends each priced line, one per line;
- "Copy each priced line as name | amount.": the words and the amount of each priced line;
- "Label the priced lines.": a receipt-like page (a header, items, then summary lines such as
  subtotal, tax, total, cash and change, in a receipt's words); each priced line written as
  `item | name | [count |] amount` or `<label> | amount`, so the base knows which line is
  which, not only how to copy one (still not CORD's JSON).

The user text is built by `tasks.model.modeling.instruction`, as at training, evaluation and
serving, in the model's chat format but without an image: only the language model trains here,
at a third of the cost of a step with 256 image tokens, and attention looks back by relative
position (RoPE), so the skill holds when an image precedes the text. Names mix receipt words
with random letters, so they must be copied, not recalled. The first `repeat_steps` only
repeat: in this base, copying forms there as a sudden drop of the loss (docs/benchmarks.md).
"""

from __future__ import annotations

import difflib
import random
import string
from typing import Any

import torch

from tasks.data.sources.synthetic import MENU_NAMES
from tasks.model.modeling import instruction

PROMPTS = {
    "repeat": "Repeat the OCR lines.",
    "amounts": "Copy the amounts.",
    "pairs": "Copy each priced line as name | amount.",
    "fields": "Label the priced lines.",
}
KEYWORDS = [
    "SUBTOTAL", "SUB TOTAL", "TOTAL", "GRAND TOTAL", "TAX", "PB1", "SERVICE", "SVC CHRG",
    "CASH", "CHANGE", "KEMBALI", "DISC", "DISCOUNT", "DEBIT", "CREDIT CARD", "ROUNDING",
    "TOTAL ITEMS", "QTY", "BCA", "GOPAY", "Total Bayar", "Tunai", "Kembalian",
]  # fmt: skip
# Between a keyword and its amount on a printed line.
SEPARATORS = [" ", " ", ": ", " Rp ", " Rp. "]
# A receipt's summary lines, in the order they are printed, by the label `fields` gives them.
SUMMARY = {
    "subtotal": ["SUBTOTAL", "SUB TOTAL", "Subtotal", "Sub Total", "Sub-Total"],
    "tax": ["TAX", "PB1", "PPN", "Tax 10%", "PB1 (10%)"],
    "service": ["SERVICE", "SVC CHRG", "Service Charge", "Service 5%"],
    "discount": ["DISC", "DISCOUNT", "Diskon", "Promo"],
    "total": ["TOTAL", "GRAND TOTAL", "Total Bayar", "Total", "Jumlah", "TOTAL DUE"],
    "cash": ["CASH", "Tunai", "Cash", "TUNAI"],
    "card": ["DEBIT", "CREDIT CARD", "BCA", "CARD", "Debit BCA"],
    "change": ["CHANGE", "KEMBALI", "Kembalian", "Change"],
}
NAME_WORDS = sorted({w for n in MENU_NAMES for w in n.split()})


def _name(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.4:
            words.append(rng.choice(NAME_WORDS))
        elif r < 0.8:
            words.append("".join(rng.choices(string.ascii_uppercase, k=rng.randint(2, 9))))
        elif r < 0.9:
            words.append("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8))).title())
        else:
            words.append(rng.choice(["(L)", "(R)", "HOT", "ICE", "-", "&", "2pcs", "+"]))
    return " ".join(words)


def _amount(rng: random.Random) -> str:
    value = rng.choice([rng.randint(1, 99) * 1000, rng.randint(1, 999) * 500, rng.randint(1, 9999)])
    style = rng.random()
    if style < 0.5:
        text = f"{value:,}"
    elif style < 0.7:
        text = f"{value:,}".replace(",", ".")
    elif style < 0.8:
        text = str(value)
    elif style < 0.9:
        text = f"{value:,}.00"
    else:
        text = f"{value / 1000:.3f}" if value >= 1000 else str(value)
    return ("-" if rng.random() < 0.05 else "") + text


def ocr_line(rng: random.Random) -> tuple[str, str | None, str | None]:
    """One OCR-like line and, if it is priced, its words and its amount."""
    r = rng.random()
    if r < 0.45:  # an item: [count] name amount
        name, amount = _name(rng), _amount(rng)
        count = rng.choice(["", "", f"{rng.randint(1, 12)} ", f"{rng.randint(1, 5)}x "])
        return f"{count}{name} {amount}", f"{count}{name}", amount
    if r < 0.65:  # a keyword line
        name, amount = rng.choice(KEYWORDS), _amount(rng)
        sep = rng.choice(SEPARATORS)
        return f"{name}{sep}{amount}", name, amount
    if r < 0.85:  # words alone: a name on its own line, a header
        return _name(rng), None, None
    junk = rng.choice(
        [
            f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/20{rng.randint(10, 24)} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
            f"{rng.randint(1, 9)} x {_amount(rng)}",
            "".join(
                rng.choices(string.ascii_letters + string.digits + "#:/-.", k=rng.randint(4, 24))
            ),
            "-" * rng.randint(5, 30),
        ]
    )
    return junk, None, None


def labelled_receipt(rng: random.Random, max_items: int) -> tuple[list[str], list[str]]:
    """A receipt-like page's lines and its priced lines labelled: header lines, 1 to
    `max_items` items ([count] name [@unit] amount), summary lines in `SUMMARY`'s order (each
    label present or not), a few unpriced lines between."""
    lines, labelled = [], []
    for _ in range(rng.randint(0, 2)):  # a store name, a date: nothing priced
        text, _, amount = ocr_line(rng)
        lines.append(text if amount is None else _name(rng))
    for _ in range(rng.randint(1, max_items)):
        name, amount = _name(rng), _amount(rng)
        count = rng.choice(["", "", "1 ", "1X ", f"{rng.randint(1, 9)} ", f"{rng.randint(1, 5)}x "])
        unit = f" @{_amount(rng)}" if rng.random() < 0.2 else ""
        lines.append(f"{count}{name}{unit} {amount}")
        labelled.append(" | ".join(["item", name, *([count.strip()] if count else []), amount]))
        if rng.random() < 0.15:
            lines.append(_name(rng))  # an option line under the item: not priced
    if rng.random() < 0.3:
        lines.append("-" * rng.randint(5, 30))
    for label, words in SUMMARY.items():
        if rng.random() < (0.8 if label == "total" else 0.35):
            amount = _amount(rng)
            sep = rng.choice(SEPARATORS)
            lines.append(f"{rng.choice(words)}{sep}{amount}")
            labelled.append(f"{label} | {amount}")
    return lines, labelled


def copy_example(rng: random.Random, kind: str, max_lines: int = 14) -> dict[str, Any]:
    """A record for `kind`: OCR-like lines as its `ocr`, the answer as its `target`."""
    if kind == "fields":
        lines, answer = labelled_receipt(rng, max_lines)
    else:
        rows = [ocr_line(rng) for _ in range(rng.randint(3, max_lines))]
        while kind != "repeat" and not any(amount for _, _, amount in rows):
            rows.append(ocr_line(rng))
        lines = [text for text, _, _ in rows]
        if kind == "repeat":
            answer = lines
        elif kind == "amounts":
            answer = [amount for _, _, amount in rows if amount]
        else:
            answer = [f"{name} | {amount}" for _, name, amount in rows if amount]
    return {
        "id": f"copy-{kind}",
        "ocr": "\n".join(lines),
        "target": "\n".join(answer),
        "kind": kind,
    }


def copy_set(seed: int, n: int, prefix: str, max_lines: int = 14) -> list[dict[str, Any]]:
    """`n` records of each kind from seeds of their own ("pretrain-<seed>-<prefix>-<kind>-<i>")."""
    out = []
    for kind in PROMPTS:
        for i in range(n):
            rng = random.Random(f"pretrain-{seed}-{prefix}-{kind}-{i}")
            out.append(copy_example(rng, kind, max_lines) | {"id": f"{prefix}-{kind}-{i}"})
    return out


def chat_prompt(processor, record: dict[str, Any]) -> str:
    """The record's user text (instruction + OCR lines) in the model's chat format, no image."""
    user = instruction(PROMPTS[record["kind"]], record["ocr"])
    messages = [{"role": "user", "content": [{"type": "text", "text": user}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def text_batch(processor, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Prompt + target + eos per record, right-padded; labels mask the prompt and padding."""
    tok = processor.tokenizer
    rows = []
    for r in records:
        prompt = tok(chat_prompt(processor, r))["input_ids"]
        rows.append(
            (prompt, tok(r["target"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        )
    width = max(len(a) + len(b) for a, b in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (prompt, target) in enumerate(rows):
        n = len(prompt) + len(target)
        ids[i, :n] = torch.tensor(prompt + target)
        mask[i, :n] = 1
        labels[i, len(prompt) : n] = torch.tensor(target)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.inference_mode()
def copy_accuracy(model, processor, records: list[dict[str, Any]], batch_size: int = 16):
    """Per kind: mean character similarity (difflib ratio) and exact rate of greedy answers."""
    model.eval()
    tok = processor.tokenizer
    scores: dict[str, list[tuple[float, bool]]] = {}
    for kind in PROMPTS:
        chunk_all = [r for r in records if r["kind"] == kind]
        for i in range(0, len(chunk_all), batch_size):
            chunk = chunk_all[i : i + batch_size]
            texts = [chat_prompt(processor, r) for r in chunk]
            # tok.pad, not tok(..., padding=True): that would leave padding switched on in the
            # fast tokenizer's backend, and save_pretrained would then write it out.
            enc = tok.pad(tok(texts), return_tensors="pt", padding_side="left")
            enc = enc.to(model.device)
            longest = max(len(r["target"]) for r in chunk)
            with torch.autocast(model.device.type, dtype=torch.bfloat16):
                out = model.generate(
                    **enc,
                    max_new_tokens=longest + 2,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            for r, row in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
                answer = tok.decode(row, skip_special_tokens=True)
                sim = difflib.SequenceMatcher(None, answer, r["target"], autojunk=False).ratio()
                scores.setdefault(kind, []).append((sim, answer == r["target"]))
    model.train()
    return {
        kind: {
            "char_similarity": round(sum(s for s, _ in v) / len(v), 4),
            "exact": round(sum(e for _, e in v) / len(v), 4),
        }
        for kind, v in scores.items()
    }
