"""Idefics2 (`Idefics2ForConditionalGeneration`, config.model_type "idefics2"): the harness's
interleaved prompts as Idefics2Processor inputs.

The processor takes text in which each image is one `<image>` and writes it out as
`<fake_token_around_image>`, `<image>` x `image_seq_len` (the perceiver resampler's latents),
`<fake_token_around_image>` (five such groups with `do_image_splitting`: four crops and the whole
image), merging the fake tokens of adjacent images. The decoder reads the resampled image vectors
in place of the `<image>` tokens. Pixels are padded to the batch's largest image, and
`pixel_attention_mask` marks the real ones. Base checkpoints get the prompt as the task writes it:
no chat template, no `User:`/`Assistant:` turns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..prompts import IMAGE, Prompt


def processor_text(prompt: Prompt, start_token: str) -> str:
    """The text Idefics2's (and Idefics3's) processor takes for `prompt`: its text items as the
    task wrote them, one `<image>` for each image, after `start_token` (`<s>`, or nothing)."""
    return start_token + "".join(item if isinstance(item, str) else IMAGE for item in prompt.items)


def processor_inputs(processor, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
    """What the family's processor returns for a batch: left-padded `input_ids` and
    `attention_mask`, and for prompts with images `pixel_values` and `pixel_attention_mask`
    (batch, most images in a prompt, ...), a prompt with fewer images padded with zero images.

    The start token is written into the text and the tokenizer adds none, so that a task's
    add_start_token decides it whatever the checkpoint's tokenizer adds by default."""
    from ..engine import load_image  # engine imports the models package

    tokenizer = processor.tokenizer
    start = tokenizer.bos_token if add_start_token else ""
    texts = [processor_text(prompt, start) for prompt in prompts]
    images = [[load_image(ref) for ref in prompt.images] for prompt in prompts]
    tokenizer.padding_side = "left"
    inputs = processor(text=texts, images=images if any(images) else None, padding="longest",
                       add_special_tokens=False, return_tensors="pt")
    return dict(inputs)
