"""Merge stage: fold the LoRA adapter into a full-precision base and save it as safetensors.

The base is reloaded in 16/32-bit, never 4-bit: merging into a quantised base changes
outputs (a known peft pitfall).
"""

from __future__ import annotations

from pathlib import Path

from tasks.core import cli
from tasks.core.config import Params
from tasks.core.io import atomic_dir
from tasks.model.modeling import (
    inference_dtype,
    load_model,
    load_processor,
    require_adapter,
    resolve_base,
)


def run_merge(
    params: Params, base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path
) -> Path:
    from peft import PeftModel

    adapter = require_adapter(adapter_dir)
    base, revision = resolve_base(params.model, base_dir)
    model = load_model(
        base,
        quantization="none",
        compute_dtype=inference_dtype(params.train.compute_dtype),
        attn="sdpa",
        revision=revision,
        device_map="cpu",
    )
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    processor = load_processor(adapter)
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    ap = cli.parser(
        "Merge the adapter into a full-precision base.", paths=("base", "adapter", "merged")
    )
    cli.run("merge", ap, lambda a, p: f"merge: {run_merge(p, a.base, a.adapter, a.merged)}", argv)


if __name__ == "__main__":
    main()
