"""The embedded tiny LLaVA, built from config offline: `LlavaConfig` (a small CLIP vision
tower + a small Llama) and a byte-level tokenizer, one token per character. `make pretrain`
(tasks.reader.pretrain) teaches it to read; `model.base: tiny` then starts from that reader.
"""

from __future__ import annotations

import torch

from tasks.core.config import TinyModelParams
from tasks.model.modeling import IMAGE_TOKEN

# USER/ASSISTANT, as llava-1.5 writes it. A newline right after {% endfor %} would be dropped: {{ '\n' }}.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{{ '\n' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{{ ' ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_tokenizer():
    """A byte-level tokenizer with no merges: one token per printed character (one per byte
    beyond ASCII), so every character the tiny base learns to read is a token of its own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + len(specials),  # the alphabet alone: no merges
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator([""], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=TINY_CHAT_TEMPLATE,
    )


def build_tiny(p: TinyModelParams):
    """A freshly initialised tiny LLaVA and its processor, built offline from `LlavaConfig`.

    `tasks.reader.pretrain` teaches it to read; the base stage loads the pretrained copy."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tiny_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=p.vision_hidden,
            intermediate_size=p.vision_hidden * 4,
            num_hidden_layers=p.vision_layers,
            num_attention_heads=p.vision_heads,
            image_size=p.image_size,
            patch_size=p.patch_size,
            projection_dim=p.vision_hidden,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=p.text_hidden,
            intermediate_size=p.text_intermediate,
            num_hidden_layers=p.text_layers,
            num_attention_heads=p.text_heads,
            num_key_value_heads=p.text_heads,
            max_position_embeddings=p.max_positions,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(p.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    # Receipts are tall: resize to the square input rather than centre-crop their top and bottom off.
    image_processor = CLIPImageProcessor(
        size={"height": p.image_size, "width": p.image_size},
        crop_size={"height": p.image_size, "width": p.image_size},
        do_center_crop=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=p.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=TINY_CHAT_TEMPLATE,
    )
    return model, processor
