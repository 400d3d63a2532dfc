"""Train stage: QLoRA (4-bit NF4 base + LoRA through peft) with transformers' Trainer.

Checkpoints every `save_steps`; a rerun after a crash resumes from the last one
(checkpoints from different params are discarded, never resumed). When the remote train
flow sets RECEIPT_CHECKPOINT_EVERY, checkpoints go to the DVC remote every that many steps
and a rerun on any host resumes from the last pushed one (tasks/checkpoints.py). Writes the
adapter + processor and a training summary (steps, loss curve, samples/s, peak memory).

With more than one process (`train.num_processes`, or RECEIPT_NUM_PROCESSES; "auto" = one
per visible GPU) the CLI relaunches itself under torchrun and the Trainer runs DDP (NCCL on
GPUs, gloo on CPU); rank 0 alone writes the adapter, the summary and the loss curve.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from tasks.checkpoints import CheckpointStore, PushCheckpoints, push_every
from tasks.config import Params, TrainParams, load_params
from tasks.io import atomic_dir, quiet_telemetry, write_json_atomic, write_text_atomic
from tasks.modeling import (
    IMAGE_TOKEN,
    base_ref,
    check_targets_fit,
    dataset_fit_records,
    fit_images,
    image_token_count,
    load_model,
    load_processor,
    lora_config,
    max_positions_of,
    pick_attn,
    prompt_text,
    prompt_token_count,
    resolve_base,
    varies_with_image,
)
from tasks.ocr import instruction

log = logging.getLogger(__name__)


class TargetTooLong(ValueError):
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
    # OCR grounding: each record's `ocr` text follows the image in its prompt (tasks.ocr).
    ocr: bool = False

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
        encoded = [self.encode(r) for r in records]
        width = max(len(ids) for ids, _, _ in encoded)
        input_ids = torch.full((len(encoded), width), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        for i, (ids, n_prompt, _) in enumerate(encoded):
            row = torch.tensor(ids)
            input_ids[i, : len(ids)] = row
            attention[i, : len(ids)] = 1
            labels[i, n_prompt : len(ids)] = row[n_prompt:]
        labels[input_ids == image_id] = -100
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
        } | {key: _stack([v[key] for _, _, v in encoded]) for key in encoded[0][2]}


class ProgressLog(TrainerCallback):
    """One readable line per logging step: step / total, loss, elapsed time and ETA (in place
    of Trainer's bare `{'loss': …, 'epoch': …}` dicts)."""

    start: float | None = None
    first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.first_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        done, total = state.global_step, state.max_steps
        elapsed = time.perf_counter() - (self.start or time.perf_counter())
        rate = elapsed / max(1, done - self.first_step)
        print(
            f"train: step {done}/{total}  loss {float(logs['loss']):.4f}  "
            f"lr {float(logs.get('learning_rate', 0)):.2e}  "
            f"elapsed {_clock(elapsed)}  eta {_clock(rate * (total - done))}",
            flush=True,
        )


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


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


def peak_memory_mb() -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def num_processes(t: TrainParams) -> int:
    """How many data-parallel train processes: RECEIPT_NUM_PROCESSES, else the param ("auto" = GPUs)."""
    raw: int | str = os.environ.get("RECEIPT_NUM_PROCESSES") or t.num_processes
    if raw == "auto":
        return max(1, torch.cuda.device_count())
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"RECEIPT_NUM_PROCESSES / train.num_processes: {raw!r} is not a count >= 1"
        )
    return n


def torchrun(n: int, argv: list[str]) -> int:
    """Run this CLI again under torchrun with n processes on this machine; its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
    log.info("train: %d processes (DDP) under torchrun", n)
    return subprocess.call([*cmd, "-m", "tasks.train", *argv])


def base_fingerprint(base: str) -> str:
    """Identity of the base weights: small files by content, large ones by size; a hub id as is."""
    root = Path(base)
    if not root.is_dir():
        return base
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(root)}:{size}".encode())
        if size < 64 * 2**20:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def total_steps(t: TrainParams, records: int, world: int = 1) -> int:
    """Optimizer steps of a run, as Trainer counts them (max_steps wins when set)."""
    if t.max_steps > 0:
        return t.max_steps
    per_epoch = max(1, math.ceil(records / (t.batch_size * world)) // t.gradient_accumulation_steps)
    return math.ceil(t.epochs * per_epoch)


def _scheduler_kwargs(t: TrainParams, records: int, world: int) -> dict[str, Any]:
    if t.lr_scheduler != "warmup_stable_decay":
        return {}
    return {"num_decay_steps": max(1, round(t.decay_fraction * total_steps(t, records, world)))}


def _checkpoint_dir(ckpt_dir: Path, digest: str) -> Path:
    """Checkpoints of other params, data or base are stale: discard them instead of resuming them.

    They exist for crash recovery only; a finished run removes them (see run_train).
    """
    stamp = ckpt_dir / "RUN_DIGEST"
    if ckpt_dir.exists() and (not stamp.exists() or stamp.read_text().strip() != digest):
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest + "\n")
    return ckpt_dir


def run_train(
    params: Params,
    dataset_dir: str | Path,
    base_dir: str | Path,
    adapter_dir: str | Path,
    ckpt_dir: str | Path,
    summary_path: str | Path,
    loss_csv: str | Path | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """QLoRA-train the adapter; return (and write) the training summary.

    `callbacks` are extra transformers TrainerCallbacks (progress reporting, tests).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from tasks.dataset import load_dataset_dir

    t = params.train
    base, revision = resolve_base(params.model, base_dir)
    processor = fit_images(load_processor(base, revision), params.model.image_fit)
    # every target fits the base's positions (the base stage checked it too, where it could)
    ocr = params.model.ocr_prompt
    left_out: list[str] = []
    check_targets_fit(
        processor,
        max_positions_of(base, revision),
        params.ingest.prompt,
        dataset_fit_records(load_dataset_dir(dataset_dir, decode_images=False), processor),
        ocr=ocr,
        left_out=left_out if t.too_long == "skip" else None,
    )
    dd = load_dataset_dir(dataset_dir)
    train = dd["train"]
    if left_out:
        log.warning("train: left out (longer than the base's positions): %s", ", ".join(left_out))
        skip = set(left_out)
        # in memory: a cache file written into the dataset would change the DVC output
        train = train.filter(
            lambda rid: rid not in skip, input_columns="id", keep_in_memory=True
        ).flatten_indices(keep_in_memory=True)
    sizes = [im.size for im in train["image"]] if varies_with_image(processor) else None
    max_length = max_length_for(
        processor,
        params.ingest.prompt,
        list(train["target"]),
        sizes,
        ocr=list(train["ocr"]) if ocr else None,
    )
    attn = pick_attn(t.attn_implementation)
    on_gpu = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # Seed before the adapters exist: peft draws lora_A from torch's global generator, and
    # Trainer seeds only when it is built, after. Unseeded, two runs on identical inputs
    # started from different adapters and ended far apart (#10: totals 0.57 vs 0.04).
    set_seed(t.seed)
    model = load_model(
        base,
        quantization=t.quantization,
        compute_dtype=t.compute_dtype,
        attn=attn,
        revision=revision,
        device_map={"": local_rank} if on_gpu else None,  # DDP: each rank its own whole copy
    )
    if t.quantization == "nf4":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=t.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif t.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config(t))
    trainable, total = model.get_nb_trainable_parameters()

    run_digest = f"{params.digest()}-{train._fingerprint}-{base_fingerprint(base)}"
    if t.group_by_length:  # the sampler's key: characters of prompt text and target
        train = train.add_column(
            "length",
            [len(tg) + len(o or "") for tg, o in zip(train["target"], train["ocr"], strict=True)],
        )
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        lr_scheduler_kwargs=_scheduler_kwargs(t, len(train), world),
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not on_gpu,
        disable_tqdm=True,
        bf16=t.compute_dtype == "bfloat16",  # autocast on a CPU too (AMX runs bf16)
        fp16=on_gpu and t.compute_dtype == "float16",
        ddp_backend=None if on_gpu or world == 1 else "gloo",
        # frozen 4-bit base + checkpointing: every trainable param gets a grad each step
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    every = push_every()
    store = CheckpointStore(Path.cwd(), run_digest) if every else None
    pulled = None
    with args.main_process_first(local=False, desc="checkpoint dir"):
        if args.process_index == 0:
            _checkpoint_dir(Path(ckpt_dir), run_digest)
            if store is not None:  # the last pushed checkpoint, wherever it was trained
                pulled = store.restore(Path(ckpt_dir))
    ckpt = Path(ckpt_dir)
    collator = ReceiptCollator(processor, params.ingest.prompt, max_length, ocr=ocr)
    for record in train:  # fail before training, naming the record, if any target is too long
        collator.encode(record)
    resume = get_last_checkpoint(str(ckpt))
    start_step = int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0
    pusher = PushCheckpoints(store, every, start_step) if store is not None else None
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=collator,
        callbacks=[ProgressLog(), *(callbacks or []), *([pusher] if pusher else [])],
    )
    trainer.remove_callback(PrinterCallback)  # ProgressLog says the same, readably
    if resume:
        log.info("resuming from %s", resume)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    curve = [
        {"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h
    ]
    summary = {
        "base": params.model.base,
        "quantization": t.quantization,
        "attn_implementation": attn,
        "compute_dtype": t.compute_dtype,
        "device": "cuda" if on_gpu else "cpu",
        "processes": world,
        "trainable_params": trainable,
        "total_params": total,
        "max_length": max_length,
        "train_records": len(train),
        "left_out_too_long": left_out,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "resumed_from": resume,
        "resumed_from_step": start_step,
        "steps_this_run": trainer.state.global_step - start_step,
        "checkpoints": {
            "remote": store.remote if store else None,
            "pulled_step": pulled,
            "pushed_steps": pusher.pushed if pusher else [],
        },
        "host": socket.gethostname(),
        "workdir": str(Path.cwd()),
        "device_name": torch.cuda.get_device_name(local_rank) if on_gpu else "cpu",
        "train_seconds": round(seconds, 2),
        "train_loss": result.training_loss,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "final_loss": curve[-1]["loss"] if curve else None,
        **peak_memory_mb(),
    }
    if not trainer.is_world_process_zero():  # DDP: rank 0 writes the one copy of everything
        return summary | {"loss_curve": curve}

    with atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        write_text_atomic(tmp / "BASE", base_ref(params.model))
    write_json_atomic(summary_path, summary)
    if loss_csv:  # the loss curve, as a DVC plot
        write_text_atomic(
            loss_csv, "step,loss\n" + "".join(f"{c['step']},{c['loss']}\n" for c in curve)
        )
    # The run finished and its adapter is saved: its checkpoints would only make a forced
    # rerun "resume" at the last step and train nothing.
    for finished in ckpt.glob("checkpoint-*"):
        shutil.rmtree(finished)
    if store is not None:
        store.clear()
    return summary | {"loss_curve": curve}


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description="QLoRA-train the adapter.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", default="artifacts/dataset")
    ap.add_argument("--base", default="artifacts/base")
    ap.add_argument("--adapter", default="artifacts/adapter")
    ap.add_argument("--checkpoints", default="artifacts/checkpoints")
    ap.add_argument("--summary", default="reports/train.json")
    ap.add_argument("--loss-csv", default="reports/train_loss.csv")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    n = num_processes(params.train)
    if n > 1 and "LOCAL_RANK" not in os.environ:
        sys.exit(torchrun(n, sys.argv[1:] if argv is None else argv))
    try:
        s = run_train(
            params,
            args.dataset,
            args.base,
            args.adapter,
            args.checkpoints,
            args.summary,
            args.loss_csv,
        )
    except TargetTooLong as exc:
        print(f"train: {exc}", file=sys.stderr)
        sys.exit(1)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print(
        f"train: {s['steps']} steps in {s['train_seconds']} s, final loss {s['final_loss']}, "
        f"{s['samples_per_second']} samples/s -> {args.adapter}"
    )


if __name__ == "__main__":
    main()
