"""Can a tiny LLaVA learn to read from scratch on these CPUs? A probe for issue #10.

Trains every weight of a tiny LLaVA (CLIP tower + Llama, built from `LlavaConfig`) on a
reading objective: write out the text of a rendered page in reading order. Pages are
generated on the fly; the held-out pages come from another seed. Prints the loss as it goes
and, every `--eval-every` steps, the mean character similarity (difflib ratio) and the exact
page rate of greedy answers on held-out pages. Nothing here is used by the pipeline: it is
the measurement the pretraining design starts from.

    python -m bench.reading_probe --steps 400 --max-lines 1 --eval-lines 1
    python -m bench.reading_probe --layout grid --steps 12000 --max-lines 12 --ramp 6000

`--content char` draws one character per page (a 36-way glyph classification), `--layout
grid` puts glyphs in fixed 8x16 cells aligned with the patch grid (a monospaced thermal
print at the model's native resolution, no resize), `proportional` uses Pillow's bundled
font at receipt sizes on a 336-px-wide page padded to a square.
"""

from __future__ import annotations

import argparse
import difflib
import math
import random
import time
from functools import cache

import torch
from PIL import Image, ImageDraw

from tasks.sources.render import font, paper
from tasks.sources.synthetic import MENU_NAMES, STORES, fmt

CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
WORDS = sorted(
    {w for n in MENU_NAMES + STORES for w in n.split()}
    | {"SUBTOTAL", "SERVICE", "TAX", "10%", "TOTAL", "CASH", "CHANGE"}
)
CELL_W, CELL_H = 8, 16  # grid layout: two glyph cells per 16-px patch, one text row per patch row


def line(rng: random.Random, content: str) -> tuple[str, str]:
    """(left text, right-aligned amount) of one printed line."""
    if content == "char":
        return rng.choice(CHARS), ""
    if content == "digits":
        return str(rng.randint(1000, 999_999)), ""

    def word() -> str:
        r = rng.random()
        if r < 0.5:
            return rng.choice(WORDS)
        if r < 0.75:
            return "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 8)))
        return str(rng.randint(1, 99))

    left = " ".join(word() for _ in range(rng.randint(1, 3)))
    return left, (fmt(rng.randint(1, 4000) * 250) if rng.random() < 0.7 else "")


@cache
def glyph(c: str) -> Image.Image:
    """One character as an 8-px-wide mask (wide glyphs squeezed), 16 px tall."""
    f = font(13)
    left, _, right, _ = f.getbbox(c)
    g = Image.new("L", (max(1, int(right - left)), CELL_H), 0)
    ImageDraw.Draw(g).text((-left, 1), c, font=f, fill=255)
    return g.resize((CELL_W - 1, CELL_H)) if g.width > CELL_W - 1 else g


def page(rng: random.Random, k: int, a: argparse.Namespace) -> tuple[Image.Image, str]:
    """A page of k lines and its text in reading order."""
    lines = [line(rng, a.content) for _ in range(k)]
    if a.layout == "grid":
        cols, rows = a.image_size // CELL_W, a.image_size // CELL_H
        lines = [(left[: cols - 2 - len(r)], r) for left, r in lines][:rows]
        img = paper(a.image_size, a.image_size, rng)
        top, ink = rng.randint(0, rows - len(lines)), rng.randint(15, 60)
        for i, (left, right) in enumerate(lines):
            for text, x0 in ((left, 0), (right, cols - len(right))):
                for j, c in enumerate(text):
                    if c != " ":
                        x = (x0 + j) * CELL_W + (CELL_W - glyph(c).width) // 2
                        img.paste((ink, ink, ink), (x, (top + i) * CELL_H), glyph(c))
    else:
        size = rng.randint(13, 19)
        f, lh, margin, width = font(size), int(size * 1.45), rng.randint(8, 24), 336
        img = paper(width, margin * 2 + lh * (len(lines) + 1), rng)
        draw = ImageDraw.Draw(img)
        for i, (left, right) in enumerate(lines):
            y = margin + i * lh
            draw.text((margin, y), left, font=f, fill=(25, 25, 25))
            if right:
                x = width - margin - draw.textlength(right, font=f)
                draw.text((x, y), right, font=f, fill=(25, 25, 25))
    return img, "\n".join(f"{left} {r}".strip() for left, r in lines)


def build(a: argparse.Namespace, texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessor,
        PreTrainedTokenizerFast,
    )

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=a.vocab,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    t = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=a.vision_hidden,
            intermediate_size=4 * a.vision_hidden,
            num_hidden_layers=a.vision_layers,
            num_attention_heads=4,
            image_size=a.image_size,
            patch_size=a.patch_size,
        ),
        text_config=LlamaConfig(
            vocab_size=len(t),
            hidden_size=a.text_hidden,
            intermediate_size=4 * a.text_hidden,
            num_hidden_layers=a.text_layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            pad_token_id=t.pad_token_id,
            bos_token_id=t.bos_token_id,
            eos_token_id=t.eos_token_id,
        ),
        image_token_index=t.get_vocab()["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(a.seed)
    size = {"height": a.image_size, "width": a.image_size}
    images = LlavaImageProcessor(size=size, crop_size=size, do_center_crop=False, do_pad=True)
    return LlavaForConditionalGeneration(config), t, images


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", choices=["proportional", "grid"], default="proportional")
    ap.add_argument("--content", choices=["words", "digits", "char"], default="words")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--vision-hidden", type=int, default=128)
    ap.add_argument("--vision-layers", type=int, default=4)
    ap.add_argument("--text-hidden", type=int, default=192)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-lines", type=int, default=12, help="curriculum: 1 line up to this")
    ap.add_argument("--ramp", type=int, default=300, help="steps to reach --max-lines")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-lines", type=int, default=6)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    texts = [page(random.Random(f"tok-{i}"), 8, a)[1] for i in range(300)]
    model, tok, images = build(a, texts)
    image_id = tok.convert_tokens_to_ids("<image>")
    n_image = (a.image_size // a.patch_size) ** 2
    prompt = tok("USER: Read the receipt. ASSISTANT:", add_special_tokens=False)["input_ids"]
    head = [image_id] * n_image + prompt
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {n_image} image tokens")

    def batch(rng: random.Random, k_max: int):
        pages = [page(rng, rng.randint(1, k_max), a) for _ in range(a.batch_size)]
        targets = [
            tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _, t in pages
        ]
        width = len(head) + max(map(len, targets))
        ids = torch.full((len(pages), width), tok.pad_token_id)
        labels = torch.full((len(pages), width), -100)
        mask = torch.zeros((len(pages), width), dtype=torch.long)
        for i, t in enumerate(targets):
            ids[i, : len(head) + len(t)] = torch.tensor(head + t)
            labels[i, len(head) : len(head) + len(t)] = torch.tensor(t)
            mask[i, : len(head) + len(t)] = 1
        pixels = images([p for p, _ in pages], return_tensors="pt")["pixel_values"]
        return ids, mask, labels, pixels

    @torch.inference_mode()
    def evaluate() -> tuple[float, float, str]:
        model.eval()
        rng, sims, exact, first = random.Random("held-out"), [], 0, ""
        for _ in range(3):
            pages = [page(rng, a.eval_lines, a) for _ in range(8)]
            pixels = images([p for p, _ in pages], return_tensors="pt")["pixel_values"]
            ids = torch.tensor([head] * len(pages))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    pixel_values=pixels,
                    max_new_tokens=160,
                    do_sample=False,
                )
            for (_, truth), row in zip(pages, out[:, ids.shape[1] :], strict=True):
                answer = tok.decode(row, skip_special_tokens=True).strip()
                sims.append(difflib.SequenceMatcher(None, answer, truth).ratio())
                exact += answer == truth
                first = first or answer
        model.train()
        return sum(sims) / len(sims), exact / len(sims), first

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / a.steps))),
    )
    rng, start, ema = random.Random(f"train-{a.seed}"), time.perf_counter(), None
    for step in range(1, a.steps + 1):
        k_max = min(a.max_lines, 1 + (a.max_lines - 1) * step // max(1, a.ramp))
        ids, mask, labels, pixels = batch(rng, k_max)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(
                input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pixels
            ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        elapsed = time.perf_counter() - start
        if step % 20 == 0:
            rate = step * a.batch_size / elapsed
            print(f"step {step} lines<={k_max} loss {ema:.3f} {rate:.1f} samples/s", flush=True)
        if step % a.eval_every == 0:
            sim, exact, first = evaluate()
            print(
                f"eval step {step} ({elapsed:.0f} s): char similarity {sim:.3f}, "
                f"exact {exact:.2f}, first answer {first[:60]!r}",
                flush=True,
            )


if __name__ == "__main__":
    main()
