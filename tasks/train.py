"""Train stage: QLoRA (4-bit NF4 base + LoRA through peft) with transformers' Trainer.

`train.args` are TrainingArguments by their own names. Checkpoints every `save_steps`; a
rerun after a crash resumes from the last one (checkpoints from different params are
discarded, never resumed). In a run the remote train flow handed over, checkpoints also go
to the DVC remote every `remote.checkpoint_every` steps and a rerun on any host resumes from
the last pushed one (tasks/remote/checkpoints.py). Writes the adapter + processor and a
training summary (steps, loss curve, samples/s, peak memory).

With more than one process (`train.num_processes`; "auto" = one per visible GPU) the CLI
relaunches itself under torchrun and the Trainer runs DDP (NCCL on GPUs, gloo on CPU);
rank 0 alone writes the adapter, the summary and the loss curve.

With `train.average_last` K > 1 the adapter written is the mean of the weights at the last K
epochs' ends (tasks/model/averaging.py); checkpoints carry those weights, so a resumed run
averages the same ones.
"""

from __future__ import annotations

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

from tasks.core import cli
from tasks.core.config import Params, TrainParams
from tasks.core.digest import tree_digest
from tasks.core.io import atomic_dir, write_json_atomic, write_text_atomic
from tasks.core.progress import clock
from tasks.model.averaging import EpochAverage
from tasks.model.collator import ReceiptCollator, max_length_for
from tasks.model.modeling import (
    base_ref,
    check_targets_fit,
    dataset_fit_records,
    fit_images,
    load_model,
    load_processor,
    lora_config,
    max_positions_of,
    pick_attn,
    resolve_base,
    varies_with_image,
)
from tasks.remote.checkpoints import CheckpointStore, PushCheckpoints, push_every

log = logging.getLogger(__name__)


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
            f"elapsed {clock(elapsed)}  eta {clock(rate * (total - done))}",
            flush=True,
        )


def peak_memory_mb() -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def num_processes(t: TrainParams) -> int:
    """How many data-parallel train processes ("auto" = one per visible GPU, 1 on a CPU)."""
    return max(1, torch.cuda.device_count()) if t.num_processes == "auto" else t.num_processes


def torchrun(n: int, argv: list[str]) -> int:
    """Run this CLI again under torchrun with n processes on this machine; its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
    log.info("train: %d processes (DDP) under torchrun", n)
    return subprocess.call([*cmd, "-m", "tasks.train", *argv])


def total_steps(t: TrainParams, records: int, world: int = 1) -> int:
    """Optimizer steps of a run, as Trainer counts them (max_steps wins when set)."""
    a = t.args
    if a.max_steps > 0:
        return a.max_steps
    batch = a.per_device_train_batch_size * world
    per_epoch = max(1, math.ceil(records / batch) // a.gradient_accumulation_steps)
    return math.ceil(a.num_train_epochs * per_epoch)


def _scheduler_kwargs(t: TrainParams, records: int, world: int) -> dict[str, Any]:
    if t.args.lr_scheduler_type != "warmup_stable_decay":
        return {}
    return {"num_decay_steps": max(1, round(t.decay_fraction * total_steps(t, records, world)))}


def training_arguments(t: TrainParams, ckpt_dir: str | Path, records: int, world: int):
    """params' `train.args` as they are, plus what this machine decides (device, precision
    flags, DDP backend) and what the pipeline fixes (no reporting, no progress bars)."""
    from transformers import TrainingArguments

    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        **t.args.model_dump(),
        lr_scheduler_kwargs=_scheduler_kwargs(t, records, world),
        save_strategy="steps",
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


def train_split(params: Params, dataset_dir: str | Path, processor, base: str, revision):
    """The train split, less the records too long for the base's positions when
    `train.too_long` is skip (named in the log and the summary); refused otherwise."""
    from tasks.data.dataset import load_dataset_dir

    left_out: list[str] = []
    check_targets_fit(
        processor,
        max_positions_of(base, revision),
        params.ingest.prompt,
        dataset_fit_records(load_dataset_dir(dataset_dir, decode_images=False), processor),
        ocr=params.model.ocr_prompt,
        left_out=left_out if params.train.too_long == "skip" else None,
    )
    train = load_dataset_dir(dataset_dir)["train"]
    if left_out:
        log.warning("train: left out (longer than the base's positions): %s", ", ".join(left_out))
        skip = set(left_out)
        # in memory: a cache file written into the dataset would change the DVC output
        train = train.filter(
            lambda rid: rid not in skip, input_columns="id", keep_in_memory=True
        ).flatten_indices(keep_in_memory=True)
    if params.train.args.train_sampling_strategy == "group_by_length":
        # the sampler's key: characters of prompt text and target
        lengths = [
            len(tg) + len(o or "") for tg, o in zip(train["target"], train["ocr"], strict=True)
        ]
        train = train.add_column("length", lengths)
    return train, left_out


def receipt_collator(params: Params, processor, train) -> ReceiptCollator:
    """The collator, sized from the longest record; every record encoded once up front so a
    record too long fails before training, naming it."""
    ocr = params.model.ocr_prompt
    sizes = [im.size for im in train["image"]] if varies_with_image(processor) else None
    max_length = max_length_for(
        processor,
        params.ingest.prompt,
        list(train["target"]),
        sizes,
        ocr=list(train["ocr"]) if ocr else None,
    )
    bg = params.train.ocr_background
    collator = ReceiptCollator(
        processor,
        params.ingest.prompt,
        max_length,
        ocr=ocr,
        background=bg.share,
        background_lines=bg.max_lines,
        seed=params.train.args.seed,
        pad_to_multiple_of=params.train.pad_to_multiple_of,
        attention_mask=False,  # right padding: the same loss, and sdpa's faster causal kernel
    )
    for record in train:
        collator.encode(record)
    return collator


def qlora_model(t: TrainParams, base: str, revision: str | None):
    """The base (4-bit NF4 unless `quantization: none`) with LoRA adapters, ready to train."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    on_gpu = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # set by torchrun
    model = load_model(
        base,
        quantization=t.quantization,
        compute_dtype=t.compute_dtype,
        attn=pick_attn(t.attn_implementation),
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
    return get_peft_model(model, lora_config(t))


def base_fingerprint(base: str) -> str:
    """Identity of the base weights: small files by content, large ones by size; a hub id as is."""
    root = Path(base)
    return tree_digest(root, size_only_above=64 * 2**20)[:16] if root.is_dir() else base


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
    from transformers import set_seed

    t = params.train
    base, revision = resolve_base(params.model, base_dir)
    processor = fit_images(load_processor(base, revision), params.model.image_fit)
    train, left_out = train_split(params, dataset_dir, processor, base, revision)
    collator = receipt_collator(params, processor, train)
    # Seed before the adapters exist: peft draws lora_A from torch's global generator, and
    # Trainer seeds only when it is built, after that.
    set_seed(t.args.seed)
    model = qlora_model(t, base, revision)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    args = training_arguments(t, ckpt_dir, len(train), world)
    run_digest = f"{params.digest()}-{train._fingerprint}-{base_fingerprint(base)}"
    ckpts = _Checkpoints.prepare(args, Path(ckpt_dir), run_digest, params.remote.checkpoint_every)
    average = EpochAverage(t.average_last, ckpts.resume) if t.average_last > 1 else None
    trainer, result, seconds = _fit(
        model, args, train, collator, ckpts, [*(callbacks or []), *([average] if average else [])]
    )
    summary = _summary(params, model, trainer, result, seconds, ckpts) | {
        "max_length": collator.max_length,
        "train_records": len(train),
        "left_out_too_long": left_out,
        # the steps (epoch ends) whose adapter weights the written adapter averages
        "averaged_steps": (average and average.apply(model)) or [trainer.state.global_step],
    }
    if trainer.is_world_process_zero():  # DDP: rank 0 writes the one copy of everything
        _save(params, model, processor, summary, adapter_dir, summary_path, loss_csv)
        ckpts.finish()
    return summary


@dataclass
class _Checkpoints:
    """Where this run's checkpoints live: the local folder (stamped with the run's digest)
    and, with `remote.checkpoint_every` under the remote train flow, the DVC remote."""

    local: Path
    store: CheckpointStore | None
    pulled: int | None
    resume: str | None
    start_step: int
    pusher: PushCheckpoints | None

    @classmethod
    def prepare(cls, args, local: Path, run_digest: str, every_param: int) -> _Checkpoints:
        from transformers.trainer_utils import get_last_checkpoint

        every = push_every(every_param)
        store = CheckpointStore(Path.cwd(), run_digest) if every else None
        pulled = None
        with args.main_process_first(local=False, desc="checkpoint dir"):
            if args.process_index == 0:
                _checkpoint_dir(local, run_digest)
                if store is not None:  # the last pushed checkpoint, wherever it was trained
                    pulled = store.restore(local)
        resume = get_last_checkpoint(str(local))
        start = int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0
        pusher = PushCheckpoints(store, every, start) if store is not None else None
        return cls(local, store, pulled, resume, start, pusher)

    def finish(self) -> None:
        """The run finished and its adapter is saved: its checkpoints would only make a forced
        rerun "resume" at the last step and train nothing."""
        for finished in self.local.glob("checkpoint-*"):
            shutil.rmtree(finished)
        if self.store is not None:
            self.store.clear()


def _fit(model, args, train, collator, ckpts: _Checkpoints, callbacks: list | None):
    """Trainer.fit, resumed from the last checkpoint if there is one; (trainer, result, seconds)."""
    from transformers import PrinterCallback, Trainer

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=collator,
        callbacks=[ProgressLog(), *(callbacks or []), *([ckpts.pusher] if ckpts.pusher else [])],
    )
    trainer.remove_callback(PrinterCallback)  # ProgressLog says the same, readably
    if ckpts.resume:
        log.info("resuming from %s", ckpts.resume)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=ckpts.resume)
    return trainer, result, time.perf_counter() - start


def _summary(params: Params, model, trainer, result, seconds: float, ckpts: _Checkpoints):
    t = params.train
    on_gpu = torch.cuda.is_available()
    trainable, total = model.get_nb_trainable_parameters()
    curve = [
        {"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h
    ]
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return {
        "base": params.model.base,
        "quantization": t.quantization,
        "attn_implementation": pick_attn(t.attn_implementation),
        "compute_dtype": t.compute_dtype,
        "device": "cuda" if on_gpu else "cpu",
        "processes": trainer.args.world_size,
        "trainable_params": trainable,
        "total_params": total,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "resumed_from": ckpts.resume,
        "resumed_from_step": ckpts.start_step,
        "steps_this_run": trainer.state.global_step - ckpts.start_step,
        "checkpoints": {
            "remote": ckpts.store.remote if ckpts.store else None,
            "pulled_step": ckpts.pulled,
            "pushed_steps": ckpts.pusher.pushed if ckpts.pusher else [],
        },
        "host": socket.gethostname(),
        "workdir": str(Path.cwd()),
        "device_name": torch.cuda.get_device_name(local_rank) if on_gpu else "cpu",
        "train_seconds": round(seconds, 2),
        "train_loss": result.training_loss,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "final_loss": curve[-1]["loss"] if curve else None,
        **peak_memory_mb(),
        "loss_curve": curve,
    }


def _save(params, model, processor, summary, adapter_dir, summary_path, loss_csv) -> None:
    """The adapter (+ processor and the base it belongs to), the summary and the loss curve."""
    with atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        write_text_atomic(tmp / "BASE", base_ref(params.model))
    curve = summary["loss_curve"]
    write_json_atomic(summary_path, {k: v for k, v in summary.items() if k != "loss_curve"})
    if loss_csv:  # the loss curve, as a DVC plot
        rows = "".join(f"{c['step']},{c['loss']}\n" for c in curve)
        write_text_atomic(loss_csv, "step,loss\n" + rows)


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "QLoRA-train the adapter.",
        paths=("dataset", "base", "adapter", "checkpoints", "train_summary", "train_loss"),
    )

    def body(a, p) -> str | None:
        n = num_processes(p.train)
        if n > 1 and "LOCAL_RANK" not in os.environ:
            sys.exit(torchrun(n, sys.argv[1:] if argv is None else argv))
        s = run_train(p, a.dataset, a.base, a.adapter, a.checkpoints, a.train_summary, a.train_loss)
        if int(os.environ.get("RANK", "0")) != 0:
            return None
        return (
            f"train: {s['steps']} steps in {s['train_seconds']} s, final loss {s['final_loss']}, "
            f"{s['samples_per_second']} samples/s -> {a.adapter}"
        )

    cli.run("train", ap, body, argv, log_format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()
