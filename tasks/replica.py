"""Hub-format replicas: a hub LLaVA's genuine non-weight files with small random weights.

    python -m tasks.replica --hub-files ../shared/hub-configs/llava-1.5-7b-hf --out /tmp/llava-replica

The Hub can't be reached from CI, but everything that a GPU worker loads besides the weights can
be: the config, the processor (image size, crop, patch size), the tokenizer with `<image>` = 32000
and `<pad>` = 32001, and the chat template. A replica keeps all of them as they are and shrinks
only the layer sizes, so `from_pretrained(<replica dir>)` goes down exactly the code path that
`from_pretrained("llava-hf/llava-1.5-7b-hf")` does: 336-px CLIP with patch 14 (576 image tokens),
`vision_feature_layer` -2, the Llama tokenizer and the USER/ASSISTANT template. `--dims 7b`
keeps the real sizes too (random weights): the shape of the GPU smoke run.

The weights are random: a replica answers nonsense. It shows that the real path runs and that
its token counts, masks, padding, template and adapters are right, not that it reads.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from tasks.io import atomic_dir

# Every file `from_pretrained` reads from a hub LLaVA repo, other than the weights and their index.
HUB_FILES = (
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
)
# Layer sizes only: what the processor, tokenizer and prompt depend on is never changed.
DIMS = {
    "tiny": {
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
        },
        # vision_feature_layer -2 needs at least 2 layers
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "projection_dim": 32,
        },
    },
    "7b": {"text": {}, "vision": {}},  # the hub config's own sizes: a 7B Llama, CLIP ViT-L/14
}


def build_replica(
    hub_files: str | Path, out_dir: str | Path, dims: str = "tiny", seed: int = 0
) -> Path:
    """Write a replica of the hub repo whose non-weight files are in `hub_files` to `out_dir`."""
    from transformers import AutoConfig, LlavaForConditionalGeneration

    hub_files, out_dir = Path(hub_files), Path(out_dir)
    if not (hub_files / "config.json").is_file():
        raise FileNotFoundError(f"{hub_files}: no config.json (the hub repo's non-weight files)")
    config = AutoConfig.from_pretrained(hub_files)
    for key, value in DIMS[dims]["text"].items():
        setattr(config.text_config, key, value)
    for key, value in DIMS[dims]["vision"].items():
        setattr(config.vision_config, key, value)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in HUB_FILES:  # after save_pretrained: the hub's generation config wins
            if (hub_files / name).is_file():
                shutil.copy(hub_files / name, Path(tmp) / name)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hub-files", required=True, help="a hub LLaVA repo's non-weight files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dims", choices=sorted(DIMS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print("replica:", build_replica(args.hub_files, args.out, args.dims, args.seed))


if __name__ == "__main__":
    main()
