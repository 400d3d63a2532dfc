"""Base stage: the model that training starts from.

`model.base: tiny` builds the embedded LLaVA from params (its tokenizer trained on the
train targets); any other value is a hub id or path, recorded in `BASE` and loaded by
later stages through `from_pretrained`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.config import Params, load_params
from tasks.io import atomic_dir, quiet_telemetry, write_text_atomic
from tasks.modeling import base_ref, build_tiny, resolve_base


def run_build_base(params: Params, dataset_dir: str | Path, out_dir: str | Path) -> str:
    """The base stage: build the tiny model (tokenizer trained on train targets) or note the hub id."""
    from tasks.dataset import load_dataset_dir

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if params.model.base == "tiny":
            train = load_dataset_dir(dataset_dir, decode_images=False)["train"]
            texts = list(train["target"]) + [params.ingest.prompt, "USER: ASSISTANT:"]
            build_tiny(params.model.tiny, texts, tmp)
        else:
            write_text_atomic(tmp / "BASE", base_ref(params.model))
    return resolve_base(params.model, out_dir)[0]


def main(argv: list[str] | None = None) -> None:
    quiet_telemetry()
    ap = argparse.ArgumentParser(description="Build the tiny base, or record the hub base.")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dataset", default="artifacts/dataset")
    ap.add_argument("--base", default="artifacts/base")
    args = ap.parse_args(argv)
    print("base:", run_build_base(load_params(args.params), args.dataset, args.base))


if __name__ == "__main__":
    main()
