"""Llama 3.2 Vision (`mllama`): cross-attention to tiled images, as in Flamingo.

Each image is one `<|image|>` token in the text; the text tokens after it, up to the next image,
cross-attend to that image's tiles (`cross_attention_mask`: token x image x tile), and the tokens
after the last image attend to it until the end. MllamaProcessor builds all of this from a text
with the image tokens in place and the images in the same order; this module only writes that
text. The processor puts `<|begin_of_text|>` itself, after any images that open the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image
from transformers import BatchFeature, MllamaProcessor

from ..examples import ImageRef
from ..prompts import Prompt

IMAGE_TOKEN = "<|image|>"


def prompt_text(prompt: Prompt) -> str:
    """The prompt as MllamaProcessor reads it: text items as written, one image token per image."""
    return "".join(item if isinstance(item, str) else IMAGE_TOKEN for item in prompt.items)


def processor_inputs(
    processor: MllamaProcessor, prompts: Sequence[Prompt], load: Callable[[ImageRef], Image.Image]
) -> BatchFeature:
    """input_ids, attention_mask, pixel_values, aspect_ratio_ids, aspect_ratio_mask and
    cross_attention_mask for `prompts`, left-padded (generation continues every row at the end)."""
    return processor(
        images=[[load(ref) for ref in prompt.images] for prompt in prompts],
        text=[prompt_text(prompt) for prompt in prompts],
        padding="longest",
        padding_side="left",
        return_tensors="pt",
    )
