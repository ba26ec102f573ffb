"""A tiny LLaVA-OneVision (`llava_onevision`) with random weights from a fixed seed, for tests and
`idefics-eval demo-model DIR --family llava_onevision`.

It keeps what makes the family differ from IDEFICS: each `<image>` is expanded by the processor
into one token per visual feature, and the features replace those tokens' embeddings. A prompt
with one image gets "anyres" features (the image resized whole, plus the crops of the grid
pinpoint that fits it best, unpadded, a newline feature after each row); a prompt with several
images gets the whole image only, padded to a square, plus one newline feature. Crops are 16
pixels, a 2x2 patch grid each, and four pinpoints (up to 2x2 crops) keep every image small.

`instruct=True` makes it an instruct checkpoint (as llava-onevision-qwen2-*-ov-chat): the
tokenizer gains Qwen2's turn tokens and the processor a chat template of the real one's layout
(`CHAT_TEMPLATE`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerFast
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)

from ..models.llava_onevision import ImageTextProcessor
from .model import VOCAB_SIZE, build_tokenizer, save_checkpoint

DEMO_NAME = "idefics-eval/demo-tiny-random-llava-onevision"
IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"  # ids VOCAB_SIZE + 1 and VOCAB_SIZE + 2
CROP_SIZE = 16
PATCH_SIZE = 8
GRID_PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 32]]
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")  # ids VOCAB_SIZE + 3 and + 4

# The token layout of the llava-hf LLaVA-OneVision template, written here: each message as
# `<|im_start|>` and its role on a line, then all its images, one `<image>` line each, then its
# texts, then `<|im_end|>` and a newline; to generate, `<|im_start|>assistant` and a newline. No
# system turn, no start token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>\n' -}}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def family_tokenizer(instruct: bool = False) -> PreTrainedTokenizerFast:
    """The IDEFICS demo's tokenizer (it knows `<image>`) with `<video>`, which the processor asks
    for, and for an instruct checkpoint the turn tokens after it."""
    tokenizer = build_tokenizer()
    tokens = (VIDEO_TOKEN, *(CHAT_TOKENS if instruct else ()))
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in tokens], special_tokens=True)
    return tokenizer


def build_processor(instruct: bool = False) -> ImageTextProcessor:
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": CROP_SIZE, "width": CROP_SIZE}, image_grid_pinpoints=GRID_PINPOINTS
    )
    return ImageTextProcessor(
        image_processor=image_processor,
        tokenizer=family_tokenizer(instruct),
        num_image_tokens=(CROP_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE if instruct else None,
    )


def build_config(instruct: bool = False) -> LlavaOnevisionConfig:
    return LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": CROP_SIZE,
            "patch_size": PATCH_SIZE,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "qwen2",
            # <fake_token_around_image> (unused), <image>, <video>, and an instruct checkpoint's turn tokens
            "vocab_size": VOCAB_SIZE + 3 + (len(CHAT_TOKENS) if instruct else 0),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        image_token_index=VOCAB_SIZE + 1,
        video_token_index=VOCAB_SIZE + 2,
        image_grid_pinpoints=GRID_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )


def build_model(seed: int = 0, instruct: bool = False) -> LlavaOnevisionForConditionalGeneration:
    """The tiny model with weights drawn from `seed` (same seed, same torch version: same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(build_config(instruct))
    model.config.name_or_path = f"{DEMO_NAME}{'-instruct' if instruct else ''}-seed{seed}"
    return model.eval()


def save_demo_model(directory: Path, seed: int = 0, instruct: bool = False) -> None:
    save_checkpoint(build_model(seed, instruct), build_processor(instruct), directory)
