"""QLoRA throughput and memory on a model with exactly llava-1.5-7b's shape (random weights).

    python -m bench.gpu_qlora                 # on one GPU: the full comparison, table printed last
    python -m bench.gpu_qlora --tiny --steps 2 # the same code path at tiny size (CPU test)

Compute does not depend on weight values, so the model is built from llava-1.5-7b's config
(CLIP ViT-L/14 at 336 px -> 576 image tokens, a 32-layer Llama with hidden size 4096),
saved once, and loaded through the project's own `load_model` (NF4 + double quant, or
bf16) with its LoRA config and `ReceiptCollator`, on sequences of CORD-like length
(576 image tokens + prompt + a ~250-token target). Reports samples/s, tokens/s, peak
memory and model FLOPs utilisation against a bf16 matmul ceiling measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tasks.core.config import Params, load_params
from tasks.model.modeling import load_model, lora_config
from tasks.reader.build import build_tiny_tokenizer


def repo_params() -> Params:
    """The project's params.yaml: the bench overrides what it fixes and keeps the rest."""
    return load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def llava_7b_config(vocab_size: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
        text_config=LlamaConfig(
            vocab_size=max(vocab_size, 32064),
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
        ),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def build(out: Path, tiny: bool) -> Path:
    """Random-weight model + processor saved to `out` (bf16 on GPU; the tiny shape on CPU)."""
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    tok = build_tiny_tokenizer()
    if tiny:
        from tasks.reader.build import build_tiny

        model, processor = build_tiny(
            repo_params().pretrain.model.model_copy(
                update={
                    "image_size": 48,
                    "vision_hidden": 32,
                    "vision_layers": 1,
                    "text_hidden": 64,
                    "text_layers": 2,
                    "text_intermediate": 128,
                }
            )
        )
        model.save_pretrained(out)
        processor.save_pretrained(out)
        return out
    config = llava_7b_config(len(tok))
    config.image_token_index = tok.convert_tokens_to_ids("<image>")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16)  # type: ignore[arg-type]
    model.save_pretrained(out)
    del model
    size = {"height": 336, "width": 336}
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size=size),
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tok.chat_template,
    ).save_pretrained(out)
    torch.cuda.empty_cache()
    return out


def records(n: int, target_tokens: int, tok) -> list[dict[str, Any]]:
    """Receipt-like records whose targets are ~target_tokens long (lengths vary by +-20%)."""
    from PIL import Image

    rng = random.Random(0)
    word_ids = [i for i in range(len(tok)) if i not in tok.all_special_ids]
    out = []
    for i in range(n):
        k = int(target_tokens * rng.uniform(0.8, 1.2))
        text = tok.decode([rng.choice(word_ids) for _ in range(k)])
        out.append({"id": f"r{i}", "image": Image.new("RGB", (336, 500), "white"), "target": text})
    return out


def matmul_tflops(device: str) -> float:
    """The bf16 matmul ceiling of this card, measured now."""
    if device != "cuda":
        return float("nan")
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def step_flops(model, tokens: int, seq: int, batch: int, checkpointing: bool) -> float:
    """≈ 6·N·tokens (forward 2N + backward 4N; with LoRA the frozen weights still get input
    gradients), + attention, + one more forward (2N) under gradient checkpointing."""
    cfg = model.config.text_config
    n = sum(
        p.numel() * (2 if p.dtype == torch.uint8 else 1)
        for name, p in model.named_parameters()
        if "embed_tokens" not in name
    )
    attn = (
        4 * cfg.num_hidden_layers * cfg.hidden_size * seq * seq * batch * 3
    )  # fwd QK^T+AV, x3 for bwd
    passes = 8 if checkpointing else 6
    return passes * n * tokens + attn * (4 / 3 if checkpointing else 1)


def measure(
    model, collator, recs, batch: int, steps: int, fixed_len: int | None, device: str
) -> dict:
    """Mean step time over `steps` after 2 warm-up steps; peak memory of the whole run."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, tokens, seqs = [], 0, []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):
        chunk = [recs[(i * batch + j) % len(recs)] for j in range(batch)]
        b = collator(chunk)
        if fixed_len:  # pad to a fixed length instead of the longest in the batch
            pad = fixed_len - b["input_ids"].shape[1]
            b["input_ids"] = torch.nn.functional.pad(
                b["input_ids"], (0, pad), value=collator.processor.tokenizer.pad_token_id
            )
            b["attention_mask"] = torch.nn.functional.pad(b["attention_mask"], (0, pad), value=0)
            b["labels"] = torch.nn.functional.pad(b["labels"], (0, pad), value=-100)
        b = {k: v.to(device) for k, v in b.items()}
        b["pixel_values"] = b["pixel_values"].to(
            model.dtype if model.dtype != torch.float32 else torch.float32
        )
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
            tokens += int(b["attention_mask"].sum())
            seqs.append(b["input_ids"].shape[1])
    step = sum(times) / len(times)
    return {
        "step_s": step,
        "samples_s": batch / step,
        "tokens_s": tokens / sum(times),
        "seq": max(seqs),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    from peft import get_peft_model, prepare_model_for_kbit_training

    from tasks.model.collator import ReceiptCollator
    from tasks.model.modeling import load_processor, pick_attn

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tiny", action="store_true", help="tiny model (CPU test of the same code path)"
    )
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--target-tokens", type=int, default=250)
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    ceiling = matmul_tflops(device)
    batches = [int(b) for b in args.batches.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp) / "model", args.tiny)
        processor = load_processor(str(path))
        recs = records(max(batches) * (args.steps + 2), args.target_tokens, processor.tokenizer)
        collator = ReceiptCollator(processor, "Extract the receipt as JSON.", max_length=100_000)
        fixed = max(len(collator.encode(r)[0]) for r in recs)
        # The bench's own fixed recipe (plain QLoRA, attention LoRA), not the tiny default's.
        t = repo_params().train.model_copy(
            update={
                "lora_r": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "lora_target_modules": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
                "modules_to_save": [],
            }
        )
        attns = ["sdpa", "eager"] + (
            ["flash_attention_2"] if pick_attn("auto") == "flash_attention_2" else []
        )
        for quant in ("nf4", "none"):
            model = load_model(str(path), quantization=quant, compute_dtype=dtype, attn="sdpa")
            if quant == "nf4":
                model = prepare_model_for_kbit_training(
                    model,
                    use_gradient_checkpointing=True,
                    gradient_checkpointing_kwargs={"use_reentrant": False},
                )
            else:
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
                model.enable_input_require_grads()
            model = get_peft_model(model, lora_config(t))
            plan: list[tuple[str, bool, int, int | None]] = [
                (a, True, b, None)
                for a in attns
                for b in ([batches[-1]] if a != "sdpa" else batches)
            ]
            if quant == "nf4":
                plan += [
                    ("sdpa", False, batches[0], None),
                    ("sdpa", False, batches[-1], None),
                    ("sdpa", True, batches[-1], fixed),
                ]
            else:
                plan = [("sdpa", True, b, None) for b in (batches[0], batches[-1])]
            for attn, ckpt, batch, fixed_len in plan:
                model.base_model.model.set_attn_implementation(attn)
                if ckpt:
                    model.gradient_checkpointing_enable(
                        gradient_checkpointing_kwargs={"use_reentrant": False}
                    )
                else:
                    model.gradient_checkpointing_disable()
                row: dict[str, Any] = {
                    "quant": quant,
                    "attn": attn,
                    "ckpt": ckpt,
                    "batch": batch,
                    "padding": "fixed" if fixed_len else "longest",
                }
                try:
                    m = measure(model, collator, recs, batch, args.steps, fixed_len, device)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append(row | {"error": "OOM"})
                    continue
                flops = step_flops(model, m["tokens_s"] * m["step_s"], m["seq"], batch, ckpt)
                mfu = flops / m["step_s"] / 1e12 / ceiling if ceiling == ceiling else float("nan")
                rows.append(row | m | {"mfu": mfu})
                print(json.dumps(rows[-1]), flush=True)
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                    "matmul_tflops": ceiling,
                    "rows": rows,
                },
                indent=2,
            )
        )
    dev = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"\n{dev}: bf16 matmul ceiling {ceiling:.0f} TFLOP/s")
    print(
        f"{'quant':5} {'attn':17} {'ckpt':4} {'bs':>2} {'pad':7} {'samples/s':>9} {'tokens/s':>9} "
        f"{'peak GiB':>8} {'MFU':>5}"
    )
    for r in rows:
        if "error" in r:
            print(
                f"{r['quant']:5} {r['attn']:17} {str(r['ckpt'])[0]:4} {r['batch']:>2} {r['padding']:7} {r['error']}"
            )
            continue
        print(
            f"{r['quant']:5} {r['attn']:17} {str(r['ckpt'])[0]:4} {r['batch']:>2} {r['padding']:7} "
            f"{r['samples_s']:9.2f} {r['tokens_s']:9.0f} {r['peak_gib']:8.2f} {r['mfu']:5.2f}"
        )


if __name__ == "__main__":
    main()
