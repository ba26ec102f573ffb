"""Idefics3 and SmolVLM (`Idefics3ForConditionalGeneration`, `SmolVLMForConditionalGeneration`,
config.model_type "idefics3" and "smolvlm"): one architecture, so one module, and an adapter that
is Idefics2's but for how images become tokens and vectors.

Their processors take the text Idefics2's does (one `<image>` per image, see `idefics2.processor_text`)
and expand each image by its size: with `do_image_splitting`, an image larger than one tile becomes
a grid of tiles, each `<fake_token_around_image><row_i_col_j>` and `image_seq_len` `<image>` tokens,
rows ending in a newline, then the downscaled whole image as
`\\n<fake_token_around_image><global-img>` and `<image>` tokens closed by a fake token; a small
image is that last group alone. Pixels are (batch, most tiles in a prompt, 3, tile, tile) with
`pixel_attention_mask`. A pixel-shuffle connector turns each tile into its `image_seq_len` vectors.

SmolVLM's processor is Idefics3's plus video, and transformers builds it only with torchvision
installed (its video processor needs it). For images the two write the same tokens and pixels
(tests/models/test_idefics3.py checks it with SmolVLM's own prompt-string function), so both
families load their processor as Idefics3Processor, which needs no torchvision.
"""

from __future__ import annotations

from transformers import Idefics3ForConditionalGeneration, Idefics3Processor, SmolVLMForConditionalGeneration

from ..prompts import IMAGE, Prompt
from .idefics2 import IMAGE_TOKENS as IDEFICS2_TOKENS
from .idefics2 import Idefics2Adapter, processor_inputs, processor_text

__all__ = ["Idefics3Adapter", "SmolVLMAdapter", "load_processor", "processor_inputs", "processor_text"]

GLOBAL_IMAGE = "<global-img>"
IMAGE_TOKENS = (*IDEFICS2_TOKENS, GLOBAL_IMAGE)  # and the grid tokens, <row_i_col_j>


def load_processor(name: str) -> Idefics3Processor:
    """The processor of an Idefics3 or SmolVLM checkpoint (hub id or folder); remote code is never trusted."""
    return Idefics3Processor.from_pretrained(name, trust_remote_code=False)


class Idefics3Adapter(Idefics2Adapter):
    family = "idefics3"
    model_class = Idefics3ForConditionalGeneration
    processor_class = Idefics3Processor

    @classmethod
    def load_processor(cls, name: str):
        return load_processor(name)

    @property
    def image_tokens(self) -> tuple[str, ...]:
        vocab = self.tokenizer.get_vocab()
        grid = tuple(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7))
        return IMAGE_TOKENS + tuple(token for token in grid if token in vocab)

    def prompt_text(self, prompt: Prompt, add_start_token: bool) -> str:
        """Idefics3Processor's expansion of `processor_text`: each image by its own grid of tiles
        (from its size, as the image processor splits it; tested equal)."""
        text = processor_text(prompt, self.tokenizer.bos_token if add_start_token else "", self)
        parts = text.split(IMAGE)
        out = parts[0]
        every_image = [item for item in prompt.items if not isinstance(item, str)]  # those cut from the left too
        for ref, part in zip(every_image, parts[1:]):
            out += self.image_text(ref) + part
        return out


    def image_sizes(self, prompt: Prompt) -> list[int]:
        """How many `<image>` tokens each image (cut or not) takes: its tiles' and the whole image's."""
        return [self.image_text(ref).count(IMAGE) for ref in prompt.items if not isinstance(ref, str)]

    def image_text(self, ref) -> str:
        """The processor's expansion of one image's `<image>`, by its grid of tiles."""
        from ..engine import load_image

        width, height = load_image(ref).size
        _, rows, cols = self.processor.image_processor.get_number_of_image_patches(height, width, {})
        return self.processor.replace_image_token({"rows": [[rows]], "cols": [[cols]]}, 0)


class SmolVLMAdapter(Idefics3Adapter):
    family = "smolvlm"
    model_class = SmolVLMForConditionalGeneration
