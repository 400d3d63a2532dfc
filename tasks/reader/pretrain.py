"""`make pretrain`: teach the embedded tiny LLaVA to read, before any receipt JSON.

    python -m tasks.reader.pretrain [--params params.yaml] [--out models/tiny-reader]

In the spirit of Donut's SynthDoG pre-training: every weight (vision tower, projector,
language model) is trained to write out the text of a printed page in reading order. Pages are
drawn on the fly from seeds of their own ("pretrain-<seed>-<step>-<i>"), never from the
dataset's, so no split is seen. They are printed like the synthetic receipts (one glyph per
12-px cell, one cell per image patch) with receipt-like lines, separators and dense lines of
every printable ASCII character, so each character's token is trained to be read and written.

Phase 1 (`steps`) reads padded: the target keeps the page's spacing, each line written as wide
as it is printed, so every answer character sits at a fixed offset from its image cell.
Phase 2 (`natural.steps`) reads in natural order, runs of spaces collapsed and blank lines
dropped, as a receipt's values are written in its JSON: the offset between answer and image
now varies, and the model must find where it is from what it has written. From the phase-1
base the variable-offset pointer emerges between ~1,000 and 1,750 phase-2 steps
(docs/benchmarks.md).

Phase 3 (`copy_phase`) copies from the prompt's text: OCR-like lines in, the lines, their
amounts, their names and amounts, or their priced lines labelled (item, total, cash, ...) out
(tasks/reader/copying.py), the language model alone.
With `--from DIR`, only phase 3 runs, on the reader in DIR (whose curve is kept).

A curriculum starts with full pages of dense random capitals, digits and ",.-" for
`curriculum_steps`: nothing on them can be guessed, so the model must learn to look (see
`page_text` for the layout that makes this learnable in ~150 steps). Then pages of 1 to all
lines, half of them dense random printable ASCII, half receipt-like. Every
`eval_every` steps the held-out reading accuracy is measured on full pages: the learning
curve, written with the params, their digest and the machine into `<out>/pretrain.json`.
"""

from __future__ import annotations

import difflib
import logging
import math
import platform
import random
import string
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tasks.core import cli
from tasks.core.config import PretrainParams
from tasks.core.errors import MissingInput
from tasks.core.io import atomic_dir, write_json_atomic
from tasks.data.sources.render import CELL, print_lines
from tasks.data.sources.synthetic import MENU_NAMES, STORES, fmt
from tasks.model.collator import ReceiptCollator, max_length_for
from tasks.model.modeling import prompt_text
from tasks.reader.build import build_tiny
from tasks.reader.copying import PROMPTS, copy_accuracy, copy_example, copy_set, text_batch

log = logging.getLogger(__name__)

READ_PROMPT = "Read the text."
NATURAL_PROMPT = "Read the text naturally."
PRINTABLE = string.ascii_letters + string.digits + string.punctuation
# The first, small pages: full pages of the characters receipts print most.
FIRST_ALPHABET = string.ascii_uppercase + string.digits + ",.-"
WORDS = sorted(
    {w for n in MENU_NAMES + STORES for w in n.split()}
    | {"SUBTOTAL", "SERVICE", "TAX", "10%", "TOTAL", "CASH", "CHANGE", "DISC", "ITEM", "QTY"}
)


def _word(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return rng.choice(WORDS)
    if r < 0.7:
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(2, 9)))
    if r < 0.85:
        return str(rng.randint(0, 999))
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9)))


def dense_line(rng: random.Random, cols: int, alphabet: str = PRINTABLE + " ") -> str:
    """A full line of random characters: nothing on it can be guessed without reading."""
    return "".join(rng.choice(alphabet) for _ in range(cols))


def dense_page(rng: random.Random, cells: int):
    """A full page of dense random capitals, digits and ",.-"."""
    lines = [dense_line(rng, cells - 1, FIRST_ALPHABET) for _ in range(cells)]
    return print_lines(lines, cells, cells, 0, rng), page_text(lines)


def page_text(lines: list[str]) -> str:
    """The page's text in reading order: every line as printed, spaces kept, then a newline.

    Each line is `cells - 1` characters and its newline stands for the margin cell, so the
    i-th character of the text is the i-th cell of the page (row-major): a constant offset
    between each answer token and the image token it reads, which is what lets the model
    find the text at all. With a newline per line but no margin cell, or with sparse lines,
    it stays at the unigram plateau for hundreds of steps (measured: docs/benchmarks.md)."""
    return "".join(line + "\n" for line in lines)


def natural_text(text: str) -> str:
    """A page's text in natural reading order: runs of spaces collapsed, blank lines dropped."""
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "".join(line + "\n" for line in lines if line)


def receipt_line(rng: random.Random, cols: int) -> str:
    """One receipt-like printed line, exactly `cols` characters wide (spaces included)."""
    r = rng.random()
    if r < 0.15:
        line = dense_line(rng, cols)[: rng.randint(cols // 2, cols)]
    elif r < 0.25:
        line = rng.choice("-=*") * rng.choice([cols, cols // 2])
    elif r < 0.3:
        line = ""
    else:
        amount = fmt(rng.randint(1, 4000) * 250) if rng.random() < 0.7 else ""
        if rng.random() < 0.25:
            left = f"  {rng.randint(1, 9)} x {fmt(rng.randint(1, 400) * 500)}"
        else:
            left = " ".join(_word(rng) for _ in range(rng.randint(1, 3)))
        left = left[: max(0, cols - len(amount) - 1)]
        line = left.ljust(cols - len(amount)) + amount
    return line[:cols].ljust(cols)


def reading_page(
    rng: random.Random,
    cols: int,
    rows: int,
    n_lines: int,
    dense: float = 0.5,
    alphabet: str = PRINTABLE + " ",
):
    """A printed page of `n_lines` lines of `cols` characters (the last one not blank; the page
    is `cols` + 1 cells wide, the last its right margin) and its text in reading order; each
    line is dense random text (from `alphabet`) with probability `dense`, else receipt-like."""

    def line() -> str:
        return dense_line(rng, cols, alphabet) if rng.random() < dense else receipt_line(rng, cols)

    lines = [line() for _ in range(min(n_lines, rows))]
    while not lines[-1].strip():
        lines[-1] = line()
    return print_lines(lines, cols + 1, rows, 0, rng), page_text(lines)


def eval_pages(p: PretrainParams, natural: bool = False) -> list[dict[str, Any]]:
    """Held-out pages of half a slip to a full slip, from seeds training never draws; with
    `natural`, phase 2's own pages, their targets in natural reading order."""
    cells = p.model.image_size // CELL
    prefix = "natural-eval" if natural else "eval"
    out = []
    for i in range(p.eval_pages):
        rng = random.Random(f"pretrain-{p.seed}-{prefix}-{i}")
        image, text = reading_page(rng, cells - 1, cells, rng.randint(max(1, cells // 2), cells))
        target = natural_text(text) if natural else text
        out.append({"id": f"{prefix}-{i}", "image": image, "target": target})
    return out


@torch.inference_mode()
def reading_loss(
    model, processor, records: list[dict[str, Any]], prompt: str = READ_PROMPT
) -> float:
    """Mean next-character loss of the page texts (teacher-forced), on held-out pages."""
    model.eval()
    full = [r["target"] for r in records]
    collator = ReceiptCollator(processor, prompt, max_length_for(processor, prompt, full))
    inputs = {k: v.to(model.device) for k, v in collator(records).items()}
    loss = float(model(**inputs).loss)
    model.train()
    return loss


@torch.inference_mode()
def reading_accuracy(
    model,
    processor,
    records: list[dict[str, Any]],
    batch_size: int = 16,
    prompt: str = READ_PROMPT,
):
    """Mean character similarity (difflib ratio) and exact-page rate of greedy readings."""
    model.eval()
    tok = processor.tokenizer
    text = prompt_text(processor, prompt)
    longest = max(len(r["target"]) for r in records)
    sims, exact = [], 0
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        enc = processor(
            images=[r["image"] for r in chunk], text=[text] * len(chunk), return_tensors="pt"
        ).to(model.device)
        with torch.autocast(model.device.type, dtype=torch.bfloat16):
            out = model.generate(**enc, max_new_tokens=longest + 2, do_sample=False)
        for r, row in zip(chunk, out[:, enc["input_ids"].shape[1] :], strict=True):
            answer = tok.decode(row, skip_special_tokens=True)
            sims.append(difflib.SequenceMatcher(None, answer, r["target"], autojunk=False).ratio())
            exact += answer == r["target"]
    model.train()
    return sum(sims) / len(sims), exact / len(records)


def _optimizer(model, learning_rate: float, warmup_steps: int, horizon: int):
    """AdamW with linear warmup, then a cosine over `horizon` steps (the rate stays at 0 after)."""
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)

    def lr_factor(i: int) -> float:
        warm = min(1.0, (i + 1) / max(1, warmup_steps))
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, i / horizon)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _step(model, collator, batch: list[dict[str, Any]], opt, sched) -> float:
    """One optimizer step on `batch` (bf16 autocast, gradients clipped to 1); its loss."""
    inputs = {k: v.to(model.device) for k, v in collator(batch).items()}
    with torch.autocast(model.device.type, dtype=torch.bfloat16):
        loss = model(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _train_steps(model, processor, p: PretrainParams, steps: range, log_every: int = 50):
    """Train `model` on fresh pages for `steps`, yielding (step, loss) after each step."""
    cells, collators = _reading_collators(processor)
    collator = collators[READ_PROMPT]
    opt, sched = _optimizer(model, p.learning_rate, p.warmup_steps, p.schedule_steps)
    t0, ema = time.perf_counter(), None
    for step in steps:
        rng = random.Random(f"pretrain-{p.seed}-{step}")
        batch = []
        for i in range(p.batch_size):
            if step <= p.curriculum_steps:  # full pages of dense text: learn where to look
                image, text = dense_page(rng, cells)
            else:
                image, text = reading_page(rng, cells - 1, cells, rng.randint(1, cells))
            batch.append({"id": f"train-{step}-{i}", "image": image, "target": text})
        loss = _step(model, collator, batch, opt, sched)
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if step % log_every == 0:
            rate = (step - steps.start + 1) * p.batch_size / (time.perf_counter() - t0)
            print(f"pretrain step {step} loss {ema:.4f} ({rate:.1f} pages/s)", flush=True)
        yield step, ema


def _reading_collators(processor) -> tuple[int, dict[str, ReceiptCollator]]:
    """The page's cells per side, and a collator per reading prompt (padded, natural), sized
    for a full page."""
    cells = processor.image_processor.size["height"] // CELL
    full = [dense_page(random.Random(0), cells)[1]]
    return cells, {
        prompt: ReceiptCollator(processor, prompt, max_length_for(processor, prompt, full))
        for prompt in (READ_PROMPT, NATURAL_PROMPT)
    }


def _natural_steps(model, processor, p: PretrainParams, log_every: int = 50):
    """Phase 2: fresh pages, three batches in four read in natural order (the rest padded, so
    phase 1's reading is kept); yields (step, loss of the natural batches) after each step."""
    n = p.natural
    cells, collators = _reading_collators(processor)
    opt, sched = _optimizer(model, n.learning_rate, n.warmup_steps, n.steps)
    t0, ema = time.perf_counter(), None
    for step in range(1, n.steps + 1):
        rng = random.Random(f"pretrain-{p.seed}-natural-{step}")
        natural = step % 2 == 1 or rng.random() < 0.5
        batch = []
        for i in range(n.batch_size):
            lines = rng.randint(1, cells)
            if natural:
                image, text = reading_page(rng, cells - 1, cells, lines, 0.3)
                text = natural_text(text)
            else:
                image, text = reading_page(rng, cells - 1, cells, lines)
            batch.append({"id": f"natural-{step}-{i}", "image": image, "target": text})
        loss = _step(
            model, collators[NATURAL_PROMPT if natural else READ_PROMPT], batch, opt, sched
        )
        if natural:
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
        if step % log_every == 0:
            rate = step * n.batch_size / (time.perf_counter() - t0)
            print(f"pretrain natural step {step} loss {ema:.4f} ({rate:.1f} pages/s)", flush=True)
        yield step, ema


def _copy_steps(model, processor, p: PretrainParams, log_every: int = 50):
    """Phase 3: copying from the prompt's text (language model only); every `reading_every`-th
    step is a batch of phase 2's pages instead (natural or padded), so reading is kept: without
    them, reading held-out pages fell from 1.00 to 0.11 (char similarity) in 300 steps.
    Yields (step, loss of the copy batches)."""
    c = p.copy_phase
    kinds = list(PROMPTS)
    cells, reading = _reading_collators(processor)
    opt, sched = _optimizer(model, c.learning_rate, c.warmup_steps, c.steps)
    t0, ema = time.perf_counter(), None
    for step in range(1, c.steps + 1):
        rng = random.Random(f"pretrain-{p.seed}-copy-{step}")
        if step % c.reading_every == 0:
            natural = rng.random() < 0.5
            pages = []
            for i in range(p.natural.batch_size):
                image, text = reading_page(rng, cells - 1, cells, rng.randint(1, cells), 0.3)
                target = natural_text(text) if natural else text
                pages.append({"id": f"copy-read-{step}-{i}", "image": image, "target": target})
            _step(model, reading[NATURAL_PROMPT if natural else READ_PROMPT], pages, opt, sched)
        else:
            kind = "repeat" if step <= c.repeat_steps else rng.choice(kinds)
            batch = [copy_example(rng, kind, c.max_lines) for _ in range(c.batch_size)]
            loss = _step(model, partial(text_batch, processor), batch, opt, sched)
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
        if step % log_every == 0:
            rate = step / (time.perf_counter() - t0)
            print(f"pretrain copy step {step} loss {ema:.4f} ({rate:.2f} steps/s)", flush=True)
        yield step, ema


def _report(p: PretrainParams, model, device, curve: list, seconds: float) -> dict[str, Any]:
    """pretrain.json: the params and their digest, the curve, the machine."""
    c = p.copy_phase
    return {
        "params": p.model_dump(mode="json"),
        "params_digest": p.digest(),
        "steps": p.steps + p.natural.steps + c.steps,
        "pages": p.steps * p.batch_size + p.natural.steps * p.natural.batch_size,
        "copy_records": c.steps * c.batch_size,
        "seconds": round(seconds, 1),
        "curve": curve,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": sum(t.numel() for t in model.parameters()),
    }


def _start(p: PretrainParams, start_from: str | Path | None):
    """A new base (`build_tiny`), or the reader saved in `start_from` and its report."""
    import json

    from transformers import AutoProcessor, LlavaForConditionalGeneration

    if start_from is None:
        return (*build_tiny(p.model), {})
    model = LlavaForConditionalGeneration.from_pretrained(start_from)
    processor = AutoProcessor.from_pretrained(start_from)
    return model, processor, json.loads((Path(start_from) / "pretrain.json").read_text())


def run_pretrain(
    p: PretrainParams,
    out_dir: str | Path,
    snapshot_dir: str | Path | None = None,
    start_from: str | Path | None = None,
) -> dict[str, Any]:
    """Pretrain the tiny base: read (phases 1 and 2), then copy from the prompt (phase 3);
    save it (safetensors + processor + pretrain.json with every phase's learning curve).

    With `snapshot_dir`, the model so far is saved there at every evaluation, to look at (or
    to fine-tune) while pretraining goes on. With `start_from` (a reader saved by this
    function), phases 1 and 2 are taken from it, their curve and time included."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, processor, earlier = _start(p, start_from)
    start_time = time.perf_counter() - earlier.get("seconds", 0)
    curve: list[dict[str, Any]] = [
        point for point in earlier.get("curve", []) if point.get("phase") != "copy"
    ]
    model.to(device).train()
    eval_set = eval_pages(p)
    natural_set = eval_pages(p, natural=True)

    def evaluate(phase: str, step: int, pages: int, loss: float | None) -> None:
        sim, exact = reading_accuracy(model, processor, eval_set)
        point = {
            "phase": phase,
            "step": step,
            "pages": pages,
            "seconds": round(time.perf_counter() - start_time, 1),
            "loss": None if loss is None else round(loss, 4),
            "char_similarity": round(sim, 4),
            "exact_pages": round(exact, 4),
        }
        if phase in ("natural", "copy"):
            sim, exact = reading_accuracy(model, processor, natural_set, prompt=NATURAL_PROMPT)
            point |= {"natural_char_similarity": round(sim, 4), "natural_exact": round(exact, 4)}
        if phase == "copy":
            point["copy"] = copy_accuracy(model, processor, copy_set_)
        curve.append(point)
        print(f"pretrain eval {point}", flush=True)
        if snapshot_dir is not None:
            with atomic_dir(snapshot_dir) as tmp:
                model.save_pretrained(tmp, safe_serialization=True)
                processor.save_pretrained(tmp)
                write_json_atomic(
                    Path(tmp) / "pretrain.json", {"params_digest": p.digest(), "curve": curve}
                )

    c = p.copy_phase
    copy_set_ = copy_set(p.seed, c.eval_records, "copy-eval", c.max_lines)
    phase1_pages = p.steps * p.batch_size
    pages = phase1_pages + p.natural.steps * p.natural.batch_size
    if start_from is None:
        evaluate("padded", 0, 0, None)
        for step, loss in _train_steps(model, processor, p, range(1, p.steps + 1)):
            if step % p.eval_every == 0 or step == p.steps:
                evaluate("padded", step, step * p.batch_size, loss)
        for step, nloss in _natural_steps(model, processor, p):
            if step % p.natural.eval_every == 0 or step == p.natural.steps:
                evaluate("natural", step, phase1_pages + step * p.natural.batch_size, nloss)
    evaluate("copy", 0, pages, None)
    for step, closs in _copy_steps(model, processor, p):
        if step % c.eval_every == 0 or step == c.steps:
            evaluate("copy", step, pages + step * c.batch_size, closs)
    report = _report(p, model, device, curve, time.perf_counter() - start_time)
    if start_from is not None:
        report["phases_1_2_from"] = {k: earlier.get(k) for k in ("params_digest", "seconds")}
    model.to("cpu")
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        write_json_atomic(Path(tmp) / "pretrain.json", report)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(__doc__, paths=("reader",))
    ap.add_argument("--snapshot", default=None, help="save the model so far here at every eval")
    ap.add_argument(
        "--from",
        dest="start_from",
        default=None,
        help="a reader already through phases 1 and 2 (e.g. models/tiny-reader): run phase 3 on it",
    )

    def body(a, p) -> str:
        if a.start_from is not None and not (Path(a.start_from) / "pretrain.json").is_file():
            raise MissingInput(f"--from {a.start_from}: no pretrain.json there: not a reader")
        report = run_pretrain(p.pretrain, a.reader, a.snapshot, a.start_from)
        last = report["curve"][-1] if report["curve"] else {}
        return f"pretrain: {a.reader} after {report['steps']} steps: {last}"

    cli.run("pretrain", ap, body, argv)


if __name__ == "__main__":
    main()
