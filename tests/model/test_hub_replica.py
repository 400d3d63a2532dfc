"""The real LLaVA path, without the weights: a replica of llava-hf/llava-1.5-7b-hf built from its
genuine config, processor, tokenizer and chat template (../shared/hub-configs) with tiny random
weights, loaded through `from_pretrained` as the hub id is, and run through the whole pipeline;
the same for a stand-in of llava-hf/llava-v1.6-mistral-7b-hf (LLaVA-NeXT: anyres tiles, a
variable image-token count), built from its reference values because its files were not found.

The replica's weights are random, so nothing here says it reads: these tests prove the path
(token counts, masks, padding, template, adapters, crop, registration), not the quality.
"""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageDraw

from devtools.replica import build_next_standin, build_replica
from tasks.model.modeling import (
    IMAGE_TOKEN,
    fit_images,
    image_token_count,
    load_model,
    load_processor,
    prompt_text,
)
from tests.conftest import SHARED, git_env, make_project, needs, small_params

HUB_LLAVA = SHARED / "hub-configs" / "llava-1.5-7b-hf"
pytestmark = needs(HUB_LLAVA)
PROMPT = "Extract the receipt as JSON."


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return build_replica(HUB_LLAVA, tmp_path_factory.mktemp("hub") / "llava-1.5-7b-hf")


@pytest.fixture(scope="module")
def next_standin(tmp_path_factory):
    return build_next_standin(HUB_LLAVA, tmp_path_factory.mktemp("hub") / "llava-v1.6-standin")


def test_the_replica_loads_as_the_hub_model_does(replica):
    processor = load_processor(str(replica))
    tok = processor.tokenizer
    assert type(processor).__name__ == "LlavaProcessor"
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == 32000 and tok.pad_token_id == 32001
    assert image_token_count(processor) == 576  # 336 px / patch 14, squared
    assert prompt_text(processor, PROMPT) == f"USER: <image>\n{PROMPT} ASSISTANT:"
    model = load_model(str(replica))
    c = model.config
    assert (c.vision_config.image_size, c.vision_config.patch_size) == (336, 14)
    assert c.vision_feature_layer == -2 and c.text_config.vocab_size == 32064
    assert c.text_config.hidden_size == 64  # only the sizes are the replica's own


def tall_receipt() -> Image.Image:
    """A receipt three times as tall as wide, with a red bar along its top edge and a blue one
    along its bottom edge (store name and totals live there)."""
    image = Image.new("RGB", (200, 600), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 199, 19), fill=(255, 0, 0))
    draw.rectangle((0, 580, 199, 599), fill=(0, 0, 255))
    return image


def edge_marks(processor, image) -> tuple[bool, bool]:
    """Whether the red (top) and blue (bottom) marks reach pixel_values."""
    ip = processor.image_processor
    pv = processor(images=image, text=IMAGE_TOKEN, return_tensors="pt")["pixel_values"][0]
    mean = torch.tensor(ip.image_mean).view(3, 1, 1)
    std = torch.tensor(ip.image_std).view(3, 1, 1)
    rgb = pv * std + mean  # back to 0..1
    red = (rgb[0] > 0.8) & (rgb[1] < 0.2) & (rgb[2] < 0.2)
    blue = (rgb[2] > 0.8) & (rgb[0] < 0.2) & (rgb[1] < 0.2)
    return bool(red.any()), bool(blue.any())


def test_the_hub_processor_crops_a_tall_receipt_and_image_fit_keeps_it_whole(replica):
    image = tall_receipt()
    assert edge_marks(load_processor(str(replica)), image) == (False, False)  # cropped away
    for mode in ("pad", "resize"):
        processor = fit_images(load_processor(str(replica)), mode)
        assert edge_marks(processor, image) == (True, True), mode
        assert image_token_count(processor) == 576
    assert edge_marks(fit_images(load_processor(str(replica)), "crop"), image) == (False, False)


def test_image_fit_survives_the_processor_saved_beside_the_adapter(replica, tmp_path):
    fit_images(load_processor(str(replica)), "pad").save_pretrained(tmp_path)
    assert edge_marks(load_processor(str(tmp_path)), tall_receipt()) == (True, True)


def test_llava_next_tiles_receipts_by_size_and_trains_on_a_mixed_batch(next_standin):
    """anyres: the image-token count follows the receipt's size; records with different tile
    counts share a batch (zero-padded tiles, image_sizes), and the 4-bit model trains on it."""
    from tasks.model.collator import ReceiptCollator, max_length_for
    from tasks.model.modeling import varies_with_image

    processor = load_processor(str(next_standin))
    assert varies_with_image(processor)
    assert prompt_text(processor, PROMPT) == f"[INST] <image>\n{PROMPT} [/INST]"
    small, big = (192, 192), (700, 700)
    counts = {size: image_token_count(processor, size) for size in (small, big)}
    assert counts[small] < counts[big] and counts[small] > 576
    records = [
        {"id": f"r{i}", "image": Image.new("RGB", size, "white"), "target": '{"total":"1"}'}
        for i, size in enumerate((small, big))
    ]
    targets: list[str] = [str(r["target"]) for r in records]
    longest = max_length_for(processor, PROMPT, targets, [small, big])
    batch = ReceiptCollator(processor, PROMPT, longest)(records)
    assert batch["image_sizes"].tolist() == [[192, 192], [700, 700]]  # (height, width)
    assert batch["pixel_values"].shape[:2] == (2, 5)  # 1 + 2 tiles, zero-padded; 1 + 4 tiles
    assert ((batch["input_ids"] == 32000).sum(dim=1).tolist()) == [counts[small], counts[big]]
    model = load_model(str(next_standin), quantization="nf4")
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    loss = model(**batch).loss
    assert torch.isfinite(loss)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["llava-1.5", "llava-next"])
def test_the_whole_pipeline_runs_on_the_replica(which, request, tmp_path_factory):
    """dvc repro with `model.base: <replica dir>`: 4-bit NF4 + LoRA on the language model only,
    evaluate, gate, merge, register (adapter + pinned base), then the pyfunc reads a receipt."""
    replica = request.getfixturevalue("replica" if which == "llava-1.5" else "next_standin")
    from tasks.data.dataset import load_dataset_dir
    from tasks.evaluate import load_for_inference
    from tasks.inference.generation import Settings, generate
    from tasks.inference.reader import ReceiptReader
    from tasks.model.collator import ReceiptCollator, max_length_for

    p = small_params(
        model={"base": str(replica)},
        train={
            "modules_to_save": [],
            "lora_target_modules": r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
            "args": {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 100},
        },
        evaluate={"max_new_tokens": 8, "batch_size": 2},
    )
    project = make_project(tmp_path_factory.mktemp("replica-project"), p)
    env = git_env()
    subprocess.run([sys.executable, "-m", "tasks.refresh_data"], cwd=project, env=env, check=True)
    done = subprocess.run(
        ["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    art, reports = project / "artifacts", project / "reports"
    base_dir, adapter = art / "base", art / "adapter"

    # the base stage records the hub base; nothing of the tiny reader is used
    assert (base_dir / "BASE").read_text().startswith(str(replica))
    # LoRA on the language model's attention only: no adapter inside the vision tower
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] is None
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names and all("language_model" in n and "lora_" in n for n in names)

    # the processor trained with is the hub's, with the crop turned into a pad (image_fit;
    # LLaVA-NeXT's tiles never crop)
    trained_with = load_processor(str(adapter))
    assert trained_with.image_processor.do_pad
    hub = load_processor(str(replica))
    assert prompt_text(trained_with, PROMPT) == prompt_text(hub, PROMPT)
    assert trained_with.tokenizer.chat_template == hub.tokenizer.chat_template

    # training batches: 576 image tokens, right padding, prompt and pads masked, EOS learned
    dd = load_dataset_dir(project / "artifacts" / "dataset")
    records = [dd["train"][0], dd["train"][1]]
    targets = [r["target"] for r in records]
    sizes = [r["image"].size for r in records]
    collator = ReceiptCollator(
        trained_with, PROMPT, max_length_for(trained_with, PROMPT, targets, sizes)
    )
    batch = collator(records)
    eos = trained_with.tokenizer.eos_token_id
    tokens = [image_token_count(trained_with, r["image"].size) for r in records]
    assert (batch["input_ids"] == 32000).sum(dim=1).tolist() == tokens
    assert tokens == ([576, 576] if which == "llava-1.5" else tokens) and min(tokens) >= 576
    for row in range(2):
        mask = batch["attention_mask"][row]
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        labels = batch["labels"][row]
        assert labels[n - 1] == eos and (labels[n:] == -100).all()
        assert (labels[batch["input_ids"][row] == 32000] == -100).all()
        answer = labels[labels != -100]
        assert trained_with.tokenizer.decode(answer[:-1]) == targets[row]

    # evaluate / gate / register ran on it
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["n"] == len(dd["test"])
    assert json.loads((reports / "gate.json").read_text())["passed"] is True
    reg = json.loads((reports / "registration.json").read_text())
    assert reg["tags"]["artifact"] == "adapter" and reg["version"] == "1"

    # generation pads on the left; the merged model answers as base + adapter does
    images = dd["test"]["image"][:2]
    model, processor = load_for_inference(p, base_dir, adapter)
    with_adapter = generate(model, processor, images, PROMPT, 8, 2)
    assert processor.tokenizer.padding_side == "left"
    merged = ReceiptReader(art / "merged", Settings.from_params(p)).read(images)
    assert [r["raw"] for r in merged] == with_adapter

    # the registered pyfunc (adapter + the pinned base) loads and reads a receipt
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    pyfunc = mlflow.pyfunc.load_model(reg["model_uri"])
    png = (project / "data").rglob("*.png").__next__().read_bytes()
    frame = pyfunc.predict(pd.DataFrame({"image": [png]}))
    assert (
        list(frame.columns) == ["json", "valid_json", "raw", "confidence", "warnings"]
        and len(frame) == 1
    )
