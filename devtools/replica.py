"""Hub-format replicas: a hub LLaVA's genuine non-weight files with small random weights.

    python -m devtools.replica --hub-files ../shared/hub-configs/llava-1.5-7b-hf --out /tmp/llava-replica

The Hub can't be reached from CI, but everything that a GPU worker loads besides the weights can
be: the config, the processor (image size, crop, patch size), the tokenizer with `<image>` = 32000
and `<pad>` = 32001, and the chat template. A replica keeps all of them as they are and shrinks
only the layer sizes, so `from_pretrained(<replica dir>)` goes down exactly the code path that
`from_pretrained("llava-hf/llava-1.5-7b-hf")` does: 336-px CLIP with patch 14 (576 image tokens),
`vision_feature_layer` -2, the Llama tokenizer and the USER/ASSISTANT template. `--dims 7b`
keeps the real sizes too (random weights): the shape of the GPU smoke run. `--next` builds the
LLaVA-NeXT (llava-v1.6-mistral-7b-hf) stand-in: see `build_next_standin`.

The weights are random: a replica answers nonsense. It shows that the real path runs and that
its token counts, masks, padding, template and adapters are right, not that it reads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from tasks.core.io import atomic_dir

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
DIMS: dict[str, dict[str, dict[str, Any]]] = {
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
    # 7B-sized: bf16 (as the hub's float16 checkpoint, 14 GB), built on the GPU when there is one
    big = dims != "tiny"
    device = "cuda" if big and torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlavaForConditionalGeneration(config)
    if big:
        model = model.to(torch.bfloat16)  # type: ignore[arg-type]
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        for name in HUB_FILES:  # after save_pretrained: the hub's generation config wins
            if (hub_files / name).is_file():
                shutil.copy(hub_files / name, Path(tmp) / name)
    return out_dir


# llava-hf/llava-v1.6-mistral-7b-hf, from ../shared/hub-configs/llava-v1.6-mistral-7b-hf/REFERENCE.md:
# no copy of its files could be found, so its replica is a stand-in built from these values.
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# Its prompt format, "[INST] <image>\nWhat is shown in this image? [/INST]" (the model card's).
NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}"
    "{% if message['role'] == 'user' %} [/INST]{% else %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def build_next_standin(
    llava15_files: str | Path, out_dir: str | Path, dims: str = "tiny", seed: int = 0
) -> Path:
    """A stand-in for llava-hf/llava-v1.6-mistral-7b-hf: its config values (anyres tiling over
    `image_grid_pinpoints`, CLIP 336/14, image newline, a Mistral text model with 8 KV heads),
    its image processor settings and prompt format, through transformers' own LlavaNext
    classes. Its tokenizer files were not found: the stand-in borrows llava-1.5's Llama
    tokenizer (the same 32000 sentencepiece pieces + `<image>` 32000 + `<pad>` 32001 layout as
    Mistral's, not the same pieces)."""
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    llava15_files, out_dir = Path(llava15_files), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(llava15_files)
    tokenizer.chat_template = NEXT_CHAT_TEMPLATE
    text: dict[str, Any] = {
        "vocab_size": 32064,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000.0,
        "sliding_window": None,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
    }
    vision: dict[str, Any] = {
        "image_size": 336,
        "patch_size": 14,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
    }
    if dims == "tiny":
        text |= DIMS["tiny"]["text"] | {"num_key_value_heads": 2}
        vision |= DIMS["tiny"]["vision"]
    # as the hub's config.json has them (pad_token_id and use_image_newline_parameter included)
    hub_keys: dict[str, Any] = {
        "image_token_index": 32000,
        "pad_token_id": 32001,
        "image_grid_pinpoints": NEXT_PINPOINTS,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "use_image_newline_parameter": True,
        "tie_word_embeddings": False,
    }
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**vision), text_config=MistralConfig(**text), **hub_keys
    )
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config)
    model.generation_config.bos_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 32001
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        do_center_crop=True,
        do_pad=True,
        image_grid_pinpoints=NEXT_PINPOINTS,
        resample=3,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        # CLIP's CLS token, which "default" then drops: as llava-1.5's processor_config says.
        # With 0 (the class default, and the 2024 config's) every image is one token short
        # of its features and the forward pass fails.
        num_additional_image_tokens=1,
        chat_template=NEXT_CHAT_TEMPLATE,
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return out_dir


def _first_of_each_folder(cord_json_dir: str | Path, sizes: dict[str, int], out: Path) -> Path:
    """A copy of the CORD-v1 annotation folders holding only the files a replica of these
    sizes can use (dev fills validation, then test), so that only those are rendered. The
    records keep their ids, and so their per-record render seeds."""
    from tasks.data.sources.cord_json import SPLIT_DIRS

    need = dict(sizes) | {"validation": sizes.get("validation", 0) + sizes.get("test", 0)}
    for folder, split in SPLIT_DIRS.items():
        (out / folder).mkdir(parents=True)
        for path in sorted((Path(cord_json_dir) / folder).glob("*.json"))[: need.get(split, 0)]:
            shutil.copy(path, out / folder / path.name)
    return out


def build_cord_v2_replica(
    cord_json_dir: str | Path,
    sample_dir: str | Path,
    out_dir: str | Path,
    sizes: dict[str, int] | None = None,
    max_side: int = 1280,
) -> Path:
    """A local replica of the naver-clova-ix/cord-v2 dataset repo, for `hf:<out_dir>`.

    The hub layout (../shared/hub-configs/cord-v2/SCHEMA.md): `data/<split>-0000i-of-0000n-
    <hash>.parquet` shards of `image` (Image) and `ground_truth` (a JSON string of gt_parse,
    meta, valid_line, ...), a README with the licence and `dataset_infos.json`. Rows are real
    CORD annotations (rendered, since CORD v1's photos are not here) plus the real sample
    photo with its annotation, first in test; `sizes` takes the first n of each split (CORD
    v1's dev annotations fill validation, then test). The hub's dataset_infos.json is left
    out: `load_dataset` checks split sizes against it, and a replica is smaller."""
    import datasets

    from tasks.data.receipt_json import derive_gt_parse
    from tasks.data.sources import cord_json, imagefolder

    out_dir = Path(out_dir)
    sizes = sizes or {"train": 800, "validation": 100, "test": 100}
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in sizes}
    for r in imagefolder.load(sample_dir):
        rows["test"].append({"image": r.image_bytes, "ann": json.loads(r.ground_truth)})
    with tempfile.TemporaryDirectory() as tmp_in:
        chosen = _first_of_each_folder(cord_json_dir, sizes, Path(tmp_in))
        for r in cord_json.load(chosen, max_side):
            split = r.split or "train"
            if split == "validation" and len(rows[split]) >= sizes[split]:
                split = "test"
            if split in rows and len(rows[split]) < sizes[split]:
                rows[split].append({"image": r.image_bytes, "ann": json.loads(r.ground_truth)})
    features = datasets.Features(
        {"image": datasets.Image(), "ground_truth": datasets.Value("string")}
    )
    with atomic_dir(out_dir) as tmp:
        (Path(tmp) / "data").mkdir()
        for split, items in rows.items():
            items = items[: sizes[split]]
            gts = [
                json.dumps({"gt_parse": derive_gt_parse(i["ann"]["valid_line"])} | i["ann"])
                for i in items
            ]
            ds = datasets.Dataset.from_dict(
                {
                    "image": [{"bytes": i["image"], "path": None} for i in items],
                    "ground_truth": gts,
                },
                features=features,
            )
            ds.to_parquet(str(Path(tmp) / "data" / f"{split}-00000-of-00001-replica.parquet"))
        (Path(tmp) / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hub-files", required=True, help="a hub LLaVA repo's non-weight files")
    ap.add_argument(
        "--next", action="store_true", help="the llava-v1.6-mistral stand-in (--hub-files: 1.5's)"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--dims", choices=sorted(DIMS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    build = build_next_standin if args.next else build_replica
    print("replica:", build(args.hub_files, args.out, args.dims, args.seed))


if __name__ == "__main__":
    main()
