"""A tiny Llama 3.2 Vision (`mllama`) with random weights from a fixed seed, for tests and
`idefics-eval demo-model DIR --family mllama`.

It keeps what makes the family differ from IDEFICS: one `<|image|>` token per image, gated
cross-attention layers fed by a tiled vision encoder (a global encoder after the local one,
intermediate layers concatenated), aspect-ratio ids and masks, and a cross-attention mask per
token, image and tile. Tiles are 16 pixels and an image gets at most two, so a non-square image
is split (1x2 or 2x1) as a large one would be.

`instruct=True` makes it an instruct checkpoint: the tokenizer gains Llama 3's turn tokens and the
processor a chat template of the real Llama-3.2-Vision-Instruct's layout (`CHAT_TEMPLATE`).
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
CHAT_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")  # ids VOCAB_SIZE + 3 to + 5

# The token layout of Llama-3.2-Vision-Instruct's template, written here: the start token; a system
# turn (knowledge cut-off and date) only when no message holds an image; each message as its role's
# header, a blank line, its items in order (`<|image|>` for an image), `<|eot_id|>`; then, to
# generate, the assistant's header and a blank line. Like the real one, it dates the system turn
# `date_string` if given, else today (`strftime_now`), else its fallback; the harness always gives
# `date_string` (`ModelAdapter.chat_text`), so prompts do not change with the day.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if date_string is not defined -%}"
    "{%- if strftime_now is defined -%}{%- set date_string = strftime_now('%d %b %Y') -%}"
    "{%- else -%}{%- set date_string = '26 Jul 2024' -%}{%- endif -%}"
    "{%- endif -%}"
    "{%- set found = namespace(image=false) -%}"
    "{%- for message in messages -%}{%- if message['content'] is not string -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'image' -%}{%- set found.image = true -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{%- endfor -%}"
    "{%- if not found.image -%}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n'"
    " + 'Today Date: ' + date_string + '\n\n<|eot_id|>' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|image|>' -}}{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"
)


def family_tokenizer(instruct: bool = False) -> PreTrainedTokenizerFast:
    """The IDEFICS demo's tokenizer with `<|image|>` (id VOCAB_SIZE + 2, after IDEFICS's two image
    tokens, which this model never sees), and for an instruct checkpoint the turn tokens after it
    (extra embedding rows, as `<|image|>`'s: the model's +8 rows past its vocabulary hold them) and
    the start token put in front of every text, as Llama 3's tokenizer does (the templated text holds
    its own, so it is tokenized with no special tokens added, as the model card says)."""
    tokenizer = build_tokenizer()
    tokens = (IMAGE_TOKEN, *(CHAT_TOKENS if instruct else ()))
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in tokens], special_tokens=True)
    if instruct:
        tokenizer.add_bos_token = True
        tokenizer.update_post_processor()
    return tokenizer


def build_processor(instruct: bool = False) -> MllamaProcessor:
    image_processor = MllamaImageProcessorPil(size={"height": TILE_SIZE, "width": TILE_SIZE}, max_image_tiles=MAX_TILES)
    return MllamaProcessor(image_processor=image_processor, tokenizer=family_tokenizer(instruct),
                           chat_template=CHAT_TEMPLATE if instruct else None)


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


def build_model(seed: int = 0, instruct: bool = False) -> MllamaForConditionalGeneration:
    """The tiny model with weights drawn from `seed`. Its scalar tanh gates (cross-attention, tile
    and position embeddings) start at zero in the real model, which would make images irrelevant;
    here they are opened. An instruct one has the same weights (its turn tokens are in the extra rows)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MllamaForConditionalGeneration(build_config())
        for name, parameter in model.named_parameters():
            if "gate" in name and parameter.numel() == 1:
                torch.nn.init.ones_(parameter)
    model.config.name_or_path = f"{DEMO_NAME}{'-instruct' if instruct else ''}-seed{seed}"
    return model.eval()


def save_demo_model(directory: Path, seed: int = 0, instruct: bool = False) -> None:
    save_checkpoint(build_model(seed, instruct), build_processor(instruct), directory)
