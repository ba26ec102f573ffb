"""A tiny Idefics2 with random weights from a fixed seed (`demo-model DIR --family idefics2`).

The real model's structure at toy size: a SigLIP-style vision tower, a perceiver resampler that
turns each image into `image_seq_len` vectors, a Mistral decoder that reads them in place of as
many `<image>` tokens. Images keep their aspect ratio (shortest edge 32, longest 48 pixels), so a
batch of differently shaped images is padded and `pixel_attention_mask` marks the real pixels, as
with the real checkpoints. The tokenizer is the IDEFICS demo's byte-level BPE (it already knows
`<fake_token_around_image>` and `<image>`), set to start every text with `<s>` as Mistral's does.

`instruct=True` makes it an instruct checkpoint (as idefics2-8b): the same weights and tokenizer
(`<end_of_utterance>` is already in it), and a chat template of the real one's layout (`CHAT_TEMPLATE`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import Idefics2Config, Idefics2ForConditionalGeneration, Idefics2Processor, PreTrainedTokenizerFast
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

from .model import build_tokenizer

DEMO_NAME = "idefics-eval/demo-tiny-random-idefics2"
IMAGE_SEQ_LEN = 4  # <image> tokens per image: the resampler's latents
EXTRA_TOKENS = ("<end_of_utterance>",)  # the processor adds it; the model's vocabulary must hold it

# The token layout of idefics2-8b's template (Idefics3 and SmolVLM write the same turns after their
# start token), written here: each message as its role, capitalised, and a colon (and a space unless
# its first item is an image), its items in order (`<image>` for an image), `<end_of_utterance>` and a
# newline; to generate, `Assistant:`. No system turn, no start token.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- message['role'] | capitalize -}}"
    "{%- if message['content'] is string -%}{{- ': ' + message['content'] -}}{%- else -%}"
    "{{- ':' if message['content'][0]['type'] == 'image' else ': ' -}}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<end_of_utterance>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
)


def family_tokenizer(extra_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """The demo tokenizer with `extra_tokens` as special tokens, adding `<s>` in front of every text
    as the Mistral and Llama tokenizers of the Idefics2/3 checkpoints do."""
    tokenizer = build_tokenizer()
    if extra_tokens:
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in extra_tokens], special_tokens=True)
    tokenizer.add_bos_token = True
    tokenizer.update_post_processor()
    return tokenizer


def build_processor(do_image_splitting: bool = False, instruct: bool = False) -> Idefics2Processor:
    image_processor = Idefics2ImageProcessorPil(
        size={"shortest_edge": 32, "longest_edge": 48}, do_image_splitting=do_image_splitting
    )
    return Idefics2Processor(image_processor=image_processor, tokenizer=family_tokenizer(EXTRA_TOKENS), image_seq_len=IMAGE_SEQ_LEN,
                             chat_template=CHAT_TEMPLATE if instruct else None)


def build_config(tokenizer: PreTrainedTokenizerFast) -> Idefics2Config:
    return Idefics2Config(
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 48,  # the longest edge: position embeddings cover every patch of any image
            "patch_size": 8,
        },
        perceiver_config={
            "hidden_size": 64,
            "resampler_n_latents": IMAGE_SEQ_LEN,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 16,
            "num_key_value_heads": 1,
        },
        text_config={
            "model_type": "mistral",
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
    )


def build_model(seed: int = 0, instruct: bool = False) -> Idefics2ForConditionalGeneration:
    """The tiny model with weights drawn from `seed` (same seed, same torch version: same weights);
    an instruct one has the same weights under its own name."""
    config = build_config(family_tokenizer(EXTRA_TOKENS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Idefics2ForConditionalGeneration(config)
    model.config.name_or_path = f"{DEMO_NAME}{'-instruct' if instruct else ''}-seed{seed}"
    return model.eval()


def save_demo_model(directory: Path, seed: int = 0, instruct: bool = False) -> None:
    """Write the tiny Idefics2 and its processor as a checkpoint folder (`--model DIR` loads it)."""
    from .model import save_checkpoint

    save_checkpoint(build_model(seed, instruct), build_processor(instruct=instruct), directory)
