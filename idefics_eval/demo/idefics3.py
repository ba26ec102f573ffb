"""Tiny Idefics3 and SmolVLM models with random weights from a fixed seed
(`demo-model DIR --family idefics3` or `--family smolvlm`).

The two families are one architecture (SmolVLM is Idefics3 with other checkpoints' settings): a
SigLIP-style vision tower on 32-pixel tiles, a pixel-shuffle connector that turns each tile into
`image_seq_len` vectors, a Llama decoder. An image larger than one tile is split into a grid of
tiles plus a downscaled global view, each tile marked by its `<row_i_col_j>` token, as the real
processors do (up to 2 x 2 tiles here: longest edge 64 pixels).

SmolVLM's processor cannot be built without torchvision (its video processor needs it), so the
SmolVLM folder carries the processor settings that Idefics3's processor reads; for images the two
processors write the same tokens and pixels (tests/models/test_idefics3_inputs.py checks it against
SmolVLM's own prompt-string function).

`instruct=True` makes it an instruct checkpoint (as Idefics3-8B-Llama3, SmolVLM-Instruct): the same
weights and tokenizer, and a chat template of the real ones' layout (`CHAT_TEMPLATE`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    PreTrainedTokenizerFast,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

from .idefics2 import CHAT_TEMPLATE as IDEFICS2_CHAT_TEMPLATE
from .idefics2 import family_tokenizer

FAMILIES = ("idefics3", "smolvlm")
TILE = 32  # pixels on a side of one tile (the vision tower's image size)
PATCH = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (TILE // PATCH) ** 2 // SCALE_FACTOR**2  # <image> tokens per tile
GRID_TOKENS = tuple(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7))
EXTRA_TOKENS = ("<end_of_utterance>", "<global-img>", *GRID_TOKENS)
# Idefics3-8B-Llama3's and SmolVLM-Instruct's templates write the start token (`<|begin_of_text|>`,
# `<|im_start|>`: each tokenizer's own), then Idefics2's turns.
CHAT_TEMPLATE = "{{- bos_token -}}" + IDEFICS2_CHAT_TEMPLATE
_CLASSES = {
    "idefics3": (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil),
    "smolvlm": (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil),
}


def demo_name(family: str) -> str:
    return f"idefics-eval/demo-tiny-random-{family}"


def build_processor(family: str = "idefics3", do_image_splitting: bool = True, instruct: bool = False) -> Idefics3Processor:
    image_processor_class = _CLASSES[family][2]
    image_processor = image_processor_class(
        do_image_splitting=do_image_splitting, max_image_size={"longest_edge": TILE}, size={"longest_edge": 2 * TILE}
    )
    return Idefics3Processor(
        image_processor=image_processor, tokenizer=family_tokenizer(EXTRA_TOKENS), image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE if instruct else None,
    )


def build_config(family: str, tokenizer: PreTrainedTokenizerFast) -> Idefics3Config | SmolVLMConfig:
    return _CLASSES[family][0](
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=SCALE_FACTOR,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": TILE,
            "patch_size": PATCH,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 172,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 2048,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(family: str = "idefics3", seed: int = 0,
                instruct: bool = False) -> Idefics3ForConditionalGeneration | SmolVLMForConditionalGeneration:
    """The tiny model with weights drawn from `seed` (same seed, same torch version: same weights);
    an instruct one has the same weights under its own name."""
    config = build_config(family, family_tokenizer(EXTRA_TOKENS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _CLASSES[family][1](config)
    model.config.name_or_path = f"{demo_name(family)}{'-instruct' if instruct else ''}-seed{seed}"
    return model.eval()


def save_demo_model(directory: Path, family: str = "idefics3", seed: int = 0, instruct: bool = False) -> None:
    """Write the tiny model and its processor as a checkpoint folder (`--model DIR` loads it)."""
    from .model import save_checkpoint

    save_checkpoint(build_model(family, seed, instruct), build_processor(family, instruct=instruct), directory)
    if family == "smolvlm":  # what a SmolVLM checkpoint names; Idefics3Processor reads the same settings
        path = directory / "processor_config.json"
        settings = json.loads(path.read_text())
        path.write_text(json.dumps({**settings, "processor_class": "SmolVLMProcessor"}, indent=2) + "\n")
