"""Merge stage: fold the LoRA adapter into a full-precision base and save it as safetensors.

The base is reloaded in 16/32-bit, never 4-bit: merging into a quantised base changes
outputs (a known peft pitfall).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.config import Params, load_params
from tasks.io import atomic_dir, quiet_telemetry
from tasks.modeling import inference_dtype, load_model, load_processor, resolve_base


def run_merge(
    params: Params, base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path
) -> Path:
    from peft import PeftModel

    base, revision = resolve_base(params.model, base_dir)
    model = load_model(
        base,
        quantization="none",
        compute_dtype=inference_dtype(params.train.compute_dtype),
        attn="sdpa",
        revision=revision,
        device_map="cpu",
    )
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    processor = load_processor(str(adapter_dir))
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description="Merge the adapter into a full-precision base.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--base", default="artifacts/base")
    ap.add_argument("--adapter", default="artifacts/adapter")
    ap.add_argument("--out", default="artifacts/merged")
    args = ap.parse_args(argv)
    print("merge:", run_merge(load_params(args.params), args.base, args.adapter, args.out))


if __name__ == "__main__":
    main()
