"""A tiny Llama 3.2 Vision (`mllama`) with random weights from a fixed seed, for tests and
`idefics-eval demo-model DIR --family mllama`.

It keeps what makes the family differ from IDEFICS: one `<|image|>` token per image, gated
cross-attention layers fed by a tiled vision encoder (a global encoder after the local one,
intermediate layers concatenated), aspect-ratio ids and masks, and a cross-attention mask per
token, image and tile. Tiles are 16 pixels and an image gets at most two, so a non-square image
is split (1x2 or 2x1) as a large one would be.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor, PreTrainedTokenizerFast
from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

from .model import VOCAB_SIZE, build_tokenizer, save_checkpoint

DEMO_NAME = "idefics-eval/demo-tiny-random-mllama"
IMAGE_TOKEN = "<|image|>"
TILE_SIZE = 16
MAX_TILES = 2  # aspect ratios (1, 1), (1, 2), (2, 1), in the image processor's order


def family_tokenizer() -> PreTrainedTokenizerFast:
    """The IDEFICS demo's tokenizer with `<|image|>` (id VOCAB_SIZE + 2, after IDEFICS's two image
    tokens, which this model never sees)."""
    tokenizer = build_tokenizer()
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def build_processor() -> MllamaProcessor:
    image_processor = MllamaImageProcessorPil(size={"height": TILE_SIZE, "width": TILE_SIZE}, max_image_tiles=MAX_TILES)
    return MllamaProcessor(image_processor=image_processor, tokenizer=family_tokenizer())


def build_config() -> MllamaConfig:
    return MllamaConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_global_layers": 1,
            "attention_heads": 4,
            "image_size": TILE_SIZE,
            "patch_size": 8,
            "max_num_tiles": MAX_TILES,
            "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]],
            "intermediate_layers_indices": [0],
            "vision_output_dim": 64,  # the last layer and the one intermediate layer, concatenated
        },
        text_config={
            "vocab_size": VOCAB_SIZE,  # the token ids past it (<|image|>) are extra embedding rows, never outputs
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "cross_attention_layers": [1],
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        image_token_index=VOCAB_SIZE + 2,
    )


def build_model(seed: int = 0) -> MllamaForConditionalGeneration:
    """The tiny model with weights drawn from `seed`. Its scalar tanh gates (cross-attention, tile
    and position embeddings) start at zero in the real model, which would make images irrelevant;
    here they are opened."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MllamaForConditionalGeneration(build_config())
        for name, parameter in model.named_parameters():
            if "gate" in name and parameter.numel() == 1:
                torch.nn.init.ones_(parameter)
    model.config.name_or_path = f"{DEMO_NAME}-seed{seed}"
    return model.eval()


def save_demo_model(directory: Path, seed: int = 0) -> None:
    save_checkpoint(build_model(seed), build_processor(), directory)
