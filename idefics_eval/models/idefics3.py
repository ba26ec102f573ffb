"""Idefics3 and SmolVLM (`Idefics3ForConditionalGeneration`, `SmolVLMForConditionalGeneration`,
config.model_type "idefics3" and "smolvlm"): one architecture, so one module.

Their processors take the text Idefics2's does (one `<image>` per image, see `idefics2.processor_text`)
and expand each image by its size: with `do_image_splitting`, an image larger than one tile becomes
a grid of tiles, each `<fake_token_around_image><row_i_col_j>` and `image_seq_len` `<image>` tokens,
rows ending in a newline, then the downscaled whole image as
`\\n<fake_token_around_image><global-img>` and `<image>` tokens closed by a fake token; a small
image is that last group alone. Pixels are (batch, most tiles in a prompt, 3, tile, tile) with
`pixel_attention_mask`.

SmolVLM's processor is Idefics3's plus video, and transformers builds it only with torchvision
installed (its video processor needs it). For images the two write the same tokens and pixels
(tests/models/test_idefics3.py checks it with SmolVLM's own prompt-string function), so both
families load their processor as Idefics3Processor, which needs no torchvision.
"""

from __future__ import annotations

from transformers import Idefics3Processor

from .idefics2 import processor_inputs, processor_text

__all__ = ["load_processor", "processor_inputs", "processor_text"]


def load_processor(name: str) -> Idefics3Processor:
    """The processor of an Idefics3 or SmolVLM checkpoint (hub id or folder); remote code is never trusted."""
    return Idefics3Processor.from_pretrained(name, trust_remote_code=False)
