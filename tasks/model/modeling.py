"""Base model, processor and prompt format: the tiny embedded LLaVA, or any LLaVA from the hub/a path.

`model.base: tiny` is a small LLaVA built from `LlavaConfig` (CLIP vision tower + Llama) with
a byte-level tokenizer (one token per character), made offline and pretrained to read by
`tasks.reader.pretrain`; it never touches the hub. Any other value (e.g. `llava-hf/llava-1.5-7b-hf`)
goes through `from_pretrained` on the same code path.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from tasks.core.config import ModelParams, TrainParams
from tasks.core.errors import BadInput, MissingInput

log = logging.getLogger(__name__)
# bitsandbytes' CPU backend tries the optional `kernels` package (which would fetch a kernel
# from the hub) on import and warns when it is missing; its own CPU kernels are used instead.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft's k-bit preparation and Trainer still call transformers' old gradient-checkpointing
# names, which warn (FutureWarning) on every call; the new names do the same thing.
warnings.filterwarnings(
    "ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning
)
# No "Loading weights" progress bar per load: in a log file they run together into one line.
hf_logging.disable_progress_bar()

IMAGE_TOKEN = "<image>"
# Modules that stay in full precision under 4-bit: transformers 5 needs the full prefixes.
SKIP_4BIT = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def resolve_base(m: ModelParams, tiny_dir: str | Path) -> tuple[str, str | None]:
    """(where the base weights load from, revision): the built tiny model's directory,
    or the hub id/path at its pinned revision."""
    if m.base != "tiny":
        return m.base, m.revision
    if not (Path(tiny_dir) / "config.json").is_file():
        raise MissingInput(f"{tiny_dir}: no base model here (the base stage writes it)")
    return str(tiny_dir), None


def require_adapter(adapter_dir: str | Path) -> str:
    """The adapter folder, as a string; MissingInput if the train stage has not written it."""
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise MissingInput(f"{adapter_dir}: no adapter here (the train stage writes it)")
    return str(adapter_dir)


def base_ref(m: ModelParams) -> str:
    """The base as recorded next to artifacts built from it: 'name@revision'."""
    return f"{m.base}@{m.revision or 'main'}\n"


def inference_dtype(compute_dtype: str) -> str:
    """Full precision on CPU; the training compute dtype on a GPU."""
    return compute_dtype if torch.cuda.is_available() else "float32"


def pick_attn(requested: str) -> str:
    """flash_attention_2 needs flash-attn and CUDA; otherwise sdpa. The choice is logged."""
    has_flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    if requested == "auto":
        choice = "flash_attention_2" if has_flash else "sdpa"
    elif requested == "flash_attention_2" and not has_flash:
        log.warning("flash_attention_2 requested but flash-attn/CUDA missing: using sdpa")
        choice = "sdpa"
    else:
        choice = requested
    log.info("attention implementation: %s", choice)
    return choice


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_processor(path: str, revision: str | None = None):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path, revision=revision)


def fit_images(processor, mode: str):
    """Make a centre-cropping image processor keep the whole receipt (`model.image_fit`).

    llava-1.5's processor resizes the shortest edge to 336 and centre-crops the longest: a
    tall receipt loses its top (store, first items) and bottom (totals). "pad" swaps in
    transformers' LlavaImageProcessor with `do_pad` (pad to a square in the mean colour, as
    LLaVA-1.5 was trained, then resize); "resize" squashes to the crop size; "crop" keeps the
    processor as it is. A processor that doesn't crop, or pads already, is returned unchanged.
    The processor saved beside the adapter carries the choice to evaluate, merge and serving."""
    ip = processor.image_processor
    if mode == "crop" or not getattr(ip, "do_center_crop", False) or getattr(ip, "do_pad", False):
        return processor
    if type(ip).__name__.startswith("LlavaNext"):
        return processor  # anyres tiles the whole image; it never crops it away
    from transformers import LlavaImageProcessor

    keep = {
        k: v
        for k, v in ip.to_dict().items()
        if k not in ("image_processor_type", "processor_class", "_processor_class")
    }
    crop = ip.crop_size
    if mode == "pad":
        processor.image_processor = LlavaImageProcessor(**keep, do_pad=True)
    else:
        square = {"height": crop["height"], "width": crop["width"]}
        processor.image_processor = type(ip)(**(keep | {"do_center_crop": False, "size": square}))
    log.info("image_fit %s: %s no longer centre-crops receipts", mode, type(ip).__name__)
    return processor


def load_model(
    path: str,
    *,
    quantization: str = "none",
    compute_dtype: str = "float32",
    attn: str = "sdpa",
    revision: str | None = None,
    device_map: Any = None,
):
    """Load a LLaVA (LLaVA-1.5 or LLaVA-NeXT, by its config); with quantization='nf4', 4-bit
    NF4 + double quant, vision tower and projector kept full precision."""
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    kwargs: dict[str, Any] = {
        "revision": revision,
        "attn_implementation": attn,
        "dtype": torch_dtype(compute_dtype),
    }
    if quantization == "nf4":
        if attn == "flash_attention_2" and compute_dtype == "float32":
            raise ValueError(
                "flash_attention_2 with a 4-bit base needs train.compute_dtype bfloat16 or float16"
            )
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
            llm_int8_skip_modules=SKIP_4BIT,
        )
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)


def lora_config(t: TrainParams):
    from peft import LoraConfig

    return LoraConfig(
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        target_modules=t.lora_target_modules,
        modules_to_save=t.modules_to_save or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


# What the model is told before the OCR lines; the text after it is the engine's, verbatim.
OCR_HEADER = "OCR:"


def instruction(prompt: str, ocr: str | None) -> str:
    """The user turn's text: the instruction, then (with OCR grounding) the OCR lines.

    The one place the prompt is built: the collator, generation, predict, the served pyfunc
    and batch scoring all call it. `ocr=None` means no grounding; "" means OCR found nothing,
    which the model is told as it is."""
    if ocr is None:
        return prompt
    return f"{prompt}\n{OCR_HEADER}\n{ocr}"


def prompt_text(processor, prompt: str) -> str:
    """The model's own chat format for one image + the instruction, ending where the answer starts."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def prompt_token_count(processor, prompt: str) -> int:
    """Tokens of the chat-formatted prompt, its single <image> placeholder not counted."""
    text = prompt_text(processor, prompt)
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) - 1


def varies_with_image(processor) -> bool:
    """Whether the image-token count depends on the image's size (LLaVA-NeXT's anyres tiling)."""
    return bool(getattr(processor.image_processor, "image_grid_pinpoints", None))


def image_token_count(processor, image_size: tuple[int, int] | None = None) -> int:
    """How many tokens one <image> expands to: 576 for llava-1.5 at 336 px whatever the image;
    for LLaVA-NeXT it depends on the image's (width, height), given as `image_size`."""
    from PIL import Image

    if image_size is None:
        size = (
            processor.image_processor.crop_size
            if processor.image_processor.do_center_crop
            else processor.image_processor.size
        )
        h = size.get("height") or size.get("shortest_edge")
        w = size.get("width") or size.get("shortest_edge")
        image_size = (w, h)
    ids = processor(images=Image.new("RGB", image_size), text=IMAGE_TOKEN, return_tensors="pt")[
        "input_ids"
    ][0]
    return int((ids == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).sum())


class TargetsTooLong(BadInput):
    """Targets whose training sequence would not fit the base's positions, named by record."""


def check_targets_fit(
    processor,
    max_positions: int,
    prompt: str,
    records: Iterable[dict[str, Any]],
    ocr: bool = False,
    left_out: list[str] | None = None,
) -> int:
    """Refuse records whose sequence (image tokens + prompt + target + eos) exceeds the base's
    `max_positions`; `records` carry split, id, target, with `ocr` their OCR text (which the
    prompt then carries, `tasks.inference.ocr.instruction`) and, for LLaVA-NeXT, image_size
    (width, height). With `left_out` (train.too_long: skip), train records that do not fit
    are appended to it by id instead of refused. Returns the longest sequence, in tokens."""
    from tasks.model.modeling import instruction

    tok = processor.tokenizer
    n_plain = prompt_token_count(processor, prompt)
    varies = varies_with_image(processor)
    fixed = None if varies else image_token_count(processor)
    per_size: dict[tuple[int, int], int] = {}
    longest, bad = 0, []
    for r in records:
        if varies:
            size = tuple(r["image_size"])
            if size not in per_size:
                per_size[size] = image_token_count(processor, size)  # type: ignore[arg-type]
            n_image = per_size[size]  # type: ignore[index]
        else:
            n_image = fixed or 0
        n_prompt = (
            prompt_token_count(processor, instruction(prompt, r.get("ocr") or ""))
            if ocr
            else n_plain
        )
        n_target = len(tok(r["target"], add_special_tokens=False)["input_ids"])
        total = n_image + n_prompt + n_target + 3  # eos, and bos around the expanded image
        if total > max_positions and left_out is not None and r["split"] == "train":
            left_out.append(r["id"])
            continue
        longest = max(longest, total)
        if total > max_positions:
            what = f"{n_prompt} prompt tokens" + (" (OCR text included)" if ocr else "")
            bad.append(
                f"{r['split']}/{r['id']}: field target is {n_target} tokens; with {n_image} image"
                f" and {what} the sequence is {total}"
            )
    if bad:
        shown = "\n".join(f"- {b}" for b in bad[:20])
        more = f"\n(+{len(bad) - 20} more)" if len(bad) > 20 else ""
        raise TargetsTooLong(
            f"{len(bad)} record(s) do not fit the base's {max_positions} positions:\n{shown}{more}"
        )
    return longest


def dataset_fit_records(dd, processor) -> Iterable[dict[str, Any]]:
    """Every record of a processed DatasetDict (images undecoded) as check_targets_fit reads it;
    image sizes from the image header, only where the image-token count depends on them."""
    import io

    from PIL import Image

    varies = varies_with_image(processor)
    for split, ds in dd.items():
        for r in ds:
            size = None
            if varies:
                with Image.open(io.BytesIO(r["image"]["bytes"])) as im:
                    size = im.size
            yield {
                "split": split,
                "id": r["id"],
                "target": r["target"],
                "ocr": r.get("ocr"),
                "image_size": size,
            }


def max_positions_of(path: str, revision: str | None = None) -> int:
    """The base's text positions (its language model's max_position_embeddings)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, revision=revision)
    return int(getattr(cfg, "text_config", cfg).max_position_embeddings)
