"""A tiny LLaVA-OneVision (`llava_onevision`) with random weights from a fixed seed, for tests and
`idefics-eval demo-model DIR --family llava_onevision`.

It keeps what makes the family differ from IDEFICS: each `<image>` is expanded by the processor
into one token per visual feature, and the features replace those tokens' embeddings. A prompt
with one image gets "anyres" features (the image resized whole, plus the crops of the grid
pinpoint that fits it best, unpadded, a newline feature after each row); a prompt with several
images gets the whole image only, padded to a square, plus one newline feature. Crops are 16
pixels, a 2x2 patch grid each, and four pinpoints (up to 2x2 crops) keep every image small.
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


def family_tokenizer() -> PreTrainedTokenizerFast:
    """The IDEFICS demo's tokenizer (it knows `<image>`) with `<video>`, which the processor asks for."""
    tokenizer = build_tokenizer()
    tokenizer.add_tokens([AddedToken(VIDEO_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def build_processor() -> ImageTextProcessor:
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": CROP_SIZE, "width": CROP_SIZE}, image_grid_pinpoints=GRID_PINPOINTS
    )
    return ImageTextProcessor(
        image_processor=image_processor,
        tokenizer=family_tokenizer(),
        num_image_tokens=(CROP_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
    )


def build_config() -> LlavaOnevisionConfig:
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
            "vocab_size": VOCAB_SIZE + 3,  # <fake_token_around_image> (unused), <image>, <video>
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


def build_model(seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    """The tiny model with weights drawn from `seed` (same seed, same torch version: same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(build_config())
    model.config.name_or_path = f"{DEMO_NAME}-seed{seed}"
    return model.eval()


def save_demo_model(directory: Path, seed: int = 0) -> None:
    save_checkpoint(build_model(seed), build_processor(), directory)
