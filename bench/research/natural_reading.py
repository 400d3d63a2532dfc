"""Continue pretraining the reader on natural reading order: runs of spaces collapsed, blank lines
dropped, so the answer-token -> image-cell offset varies (what JSON extraction needs)."""

import argparse
import difflib
import math
import random
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from tasks.config import load_params
from tasks.io import atomic_dir
from tasks.modeling import prompt_text
from tasks.pretrain import READ_PROMPT, dense_page, eval_pages, reading_accuracy, reading_page
from tasks.sources.render import CELL
from tasks.train import ReceiptCollator, max_length_for

NAT_PROMPT = "Read the text naturally."


def natural(text):
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "".join(line + "\n" for line in lines if line)


def nat_page(rng, cols, rows, n):
    img, t = reading_page(rng, cols, rows, n, 0.3)
    return img, natural(t)


ap = argparse.ArgumentParser()
ap.add_argument("--src", default="models/reader500")
ap.add_argument("--out", default="models/reader-natural")
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--lr", type=float, default=5e-4)
ap.add_argument("--every", type=int, default=250)
ap.add_argument("--gen-every", type=int, default=750)
ap.add_argument("--bs", type=int, default=8)
a = ap.parse_args()
torch.manual_seed(0)
p = load_params("params.yaml").pretrain
model = LlavaForConditionalGeneration.from_pretrained(a.src, dtype=torch.float32)
proc = AutoProcessor.from_pretrained(a.src)
cells = proc.image_processor.size["height"] // CELL
model.train()
full = [dense_page(random.Random(0), cells)[1]]
read_coll = ReceiptCollator(proc, READ_PROMPT, max_length_for(proc, READ_PROMPT, full))
nat_coll = ReceiptCollator(proc, NAT_PROMPT, max_length_for(proc, NAT_PROMPT, full))
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda i: min(1.0, (i + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / a.steps)))
)
ev = eval_pages(p)
nev = []
for i in range(32):
    rng = random.Random(f"natural-eval-{i}")
    img, t = nat_page(rng, cells - 1, cells, rng.randint(cells // 2, cells))
    nev.append({"id": f"n{i}", "image": img, "target": t})


@torch.inference_mode()
def nat_loss():
    model.eval()
    out = float(model(**nat_coll(nev)).loss)
    model.train()
    return out


@torch.inference_mode()
def nat_acc():
    model.eval()
    tok = proc.tokenizer
    text = prompt_text(proc, NAT_PROMPT)
    sims, ex = [], 0
    for j in range(0, len(nev), 16):
        ch = nev[j : j + 16]
        enc = proc(images=[r["image"] for r in ch], text=[text] * len(ch), return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(
                **enc, max_new_tokens=max(len(r["target"]) for r in ch) + 2, do_sample=False
            )
        for r, row in zip(ch, out[:, enc["input_ids"].shape[1] :], strict=True):
            ans = tok.decode(row, skip_special_tokens=True)
            sims.append(difflib.SequenceMatcher(None, ans, r["target"], autojunk=False).ratio())
            ex += ans == r["target"]
    model.train()
    return sum(sims) / len(sims), ex / len(nev), ans, r["target"]


print(f"EVAL step 0 nat loss {nat_loss():.4f}", flush=True)
t0 = time.time()
ema = None
for step in range(1, a.steps + 1):
    rng = random.Random(f"natural-{step}")
    nat = step % 2 == 1 or rng.random() < 0.5
    batch = []
    for i in range(a.bs):
        if nat:
            img, t = nat_page(rng, cells - 1, cells, rng.randint(1, cells))
        else:
            img, t = reading_page(rng, cells - 1, cells, rng.randint(1, cells))
        batch.append({"id": f"{step}-{i}", "image": img, "target": t})
    inputs = (nat_coll if nat else read_coll)(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if nat:
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
    if step % 50 == 0:
        print(f"step {step} nat-loss {ema:.4f} {(time.time() - t0) / step:.2f} s/step", flush=True)
    if step % a.every == 0 or step == a.steps:
        print(f"EVAL step {step} nat loss {nat_loss():.4f} t={time.time() - t0:.0f}s", flush=True)
        with atomic_dir(a.out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            proc.save_pretrained(tmp)
    if step % a.gen_every == 0 or step == a.steps:
        rs, rex = reading_accuracy(model, proc, ev)
        s, ex, ans, tgt = nat_acc()
        print(
            f"GEN step {step} read sim {rs:.4f} exact {rex:.3f} | nat sim {s:.4f} exact {ex:.3f}\n  ans {ans[:150]!r}\n  tgt {tgt[:150]!r}",
            flush=True,
        )
