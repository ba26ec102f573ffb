"""Idefics2 (`Idefics2ForConditionalGeneration`, config.model_type "idefics2"): the adapter, and the
harness's interleaved prompts as Idefics2Processor inputs.

The processor takes text in which each image is one `<image>` and writes it out as
`<fake_token_around_image>`, `<image>` x `image_seq_len` (the perceiver resampler's latents),
`<fake_token_around_image>` (five such groups with `do_image_splitting`: four crops and the whole
image), merging the fake tokens of adjacent images. Pixels are padded to the batch's largest image,
and `pixel_attention_mask` marks the real ones. Base checkpoints get the prompt as the task writes
it: no chat template, no `User:`/`Assistant:` turns; an instruct checkpoint takes its own chat
template where a protocol says `chat_template: true` (`ModelAdapter.chat_text`).

The decoder reads each image's resampled vectors in place of its `<image>` tokens, in the input
embeddings only: so the fast paths all hold. Each image is encoded once per run, alone (the vision
tower and the resampler mask out a batch's pixel padding, so alone or padded gives the same
vectors); the prompt's embeddings take them once, and every later token (generated, or a ranked
candidate) is text that only reads the key/value cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from transformers import Idefics2ForConditionalGeneration, Idefics2Processor

from ..errors import UserError
from ..prompts import FAKE_TOKEN, IMAGE, Prompt
from .base import EncodeImages, Forward, ModelAdapter, check_tokenizer, cut_whole_blocks, generation_positions, left_padded

IMAGE_TOKENS = (IMAGE, FAKE_TOKEN)


def processor_text(prompt: Prompt, start_token: str, adapter: ModelAdapter | None = None) -> str:
    """The text Idefics2's (and Idefics3's) processor takes for `prompt`: its text items as the
    task wrote them, one `<image>` for each image, after `start_token` (`<s>`, or nothing); a chat
    prompt in the checkpoint's template (`adapter.chat_text`)."""
    if prompt.chat:
        return start_token + adapter.chat_text(prompt)
    return start_token + "".join(item if isinstance(item, str) else IMAGE for item in prompt.items)


def processor_inputs(processor, prompts: Sequence[Prompt], add_start_token: bool,
                     adapter: ModelAdapter | None = None) -> dict[str, torch.Tensor]:
    """What the family's processor returns for a batch: left-padded `input_ids` and
    `attention_mask`, and for prompts with images `pixel_values` and `pixel_attention_mask`
    (batch, most images in a prompt, ...), a prompt with fewer images padded with zero images.

    The start token is written into the text and the tokenizer adds none, so that a task's
    add_start_token decides it whatever the checkpoint's tokenizer adds by default. `adapter`
    renders chat prompts (`processor_text`)."""
    from ..engine import load_image  # engine imports the models package

    tokenizer = processor.tokenizer
    start = tokenizer.bos_token if add_start_token else ""
    texts = [processor_text(prompt, start, adapter) for prompt in prompts]
    images = [[load_image(ref) for ref in prompt.images] for prompt in prompts]
    tokenizer.padding_side = "left"
    inputs = processor(text=texts, images=images if any(images) else None, padding="longest",
                       add_special_tokens=False, return_tensors="pt")
    return dict(inputs)


class Idefics2Adapter(ModelAdapter):
    family = "idefics2"
    image_end_token = FAKE_TOKEN  # every image's placeholder ends with one
    model_class = Idefics2ForConditionalGeneration
    processor_class = Idefics2Processor
    cached_features = True
    left_truncation = True
    fast_generation = True
    prefix_ranking = True
    chat_templates = True

    @classmethod
    def check_processor(cls, processor, name: str) -> None:
        if not isinstance(processor, cls.processor_class):
            raise UserError(f"{name} has a {type(processor).__name__}, not an {cls.processor_class.__name__}; "
                            f"is it an {cls.family} checkpoint?")
        check_tokenizer(processor, name, IMAGE_TOKENS, cls.family)

    # -- text ----------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    @property
    def image_tokens(self) -> tuple[str, ...]:
        return IMAGE_TOKENS

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IMAGE)

    def prompt_text(self, prompt: Prompt, add_start_token: bool) -> str:
        """Idefics2Processor's expansion of `processor_text`, rule for rule (tested equal)."""
        text = processor_text(prompt, self.tokenizer.bos_token if add_start_token else "", self)
        image = f"{FAKE_TOKEN}{IMAGE * self.processor.image_seq_len}{FAKE_TOKEN}"
        if self.processor.image_processor.do_image_splitting:
            image *= 5  # four crops and the whole image
        text = text.replace(IMAGE, image).replace(FAKE_TOKEN + FAKE_TOKEN, FAKE_TOKEN)
        return re.sub(rf"{re.escape(FAKE_TOKEN)}(?=[^\s<])", FAKE_TOKEN + " ", text)  # a word after an image

    def cut_from_left(self, prompt: Prompt, count: int, add_start_token: bool) -> Prompt:
        """An image here is a block of tokens (from its first placeholder token to the fake token
        closing it): a cut that would end inside one is widened to the block's end, and the image goes
        whole, so the ids kept are the processor's for the images kept, less a prefix of text. A fake
        token two images share stays, as the next image's opener."""
        ids = self.token_ids(prompt, add_start_token)
        return cut_whole_blocks(prompt, count, 1 if add_start_token else 0, self.image_blocks(ids, prompt))

    def image_blocks(self, ids: list[int], prompt: Prompt) -> list[tuple[int, int]]:
        """(first, past last) position of each image's placeholder tokens in the prompt's `ids`. A
        fake token closing an image is the next image's opener too where that image has none of its
        own (Idefics2 merges the two); Idefics3 writes both, and each is its own image's."""
        placeholders = set(self.tokenizer.convert_tokens_to_ids(list(self.image_tokens)))
        at_images = [at for at, token in enumerate(ids) if token == self.image_token_id]
        blocks, used, floor = [], 0, 0
        for size in self.image_sizes(prompt):
            first, last = at_images[used], at_images[used + size - 1]
            used += size
            while first > floor and ids[first - 1] in placeholders and ids[first - 1] != self.image_token_id:
                first -= 1
            past = last + 1
            after = ids[past + 1] if past + 1 < len(ids) else None
            shared = after in placeholders and after != self.fake_token_id  # the next image opens with this fake token
            if past < len(ids) and ids[past] == self.fake_token_id and not shared:
                past += 1
            blocks.append((first, past))
            floor = past
        return blocks

    def image_sizes(self, prompt: Prompt) -> list[int]:
        """How many `<image>` tokens each of the prompt's images (cut or not) takes."""
        size = self.processor.image_seq_len * (5 if self.processor.image_processor.do_image_splitting else 1)
        return [size] * sum(not isinstance(item, str) for item in prompt.items)

    @property
    def fake_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(FAKE_TOKEN)

    # -- the plain path ------------------------------------------------------------------------

    def on_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {key: value.to(self.device) for key, value in inputs.items()}
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.dtype)
        return out

    def build_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        """The processor's inputs; for prompts cut from the left, its ids for the whole prompts less
        each cut (`cut_ids`), and its pixels for the images kept (a processor asked to truncate
        would cut the text's right and keep the first images)."""
        if not any(prompt.cut_tokens for prompt in prompts):
            return self.on_device(processor_inputs(self.processor, prompts, add_start_token, self))
        whole = [replace(prompt, cut_tokens=0, cut_images=0) for prompt in prompts]
        inputs = processor_inputs(self.processor, whole, add_start_token, self)
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        input_ids, attention_mask = left_padded([self.cut_ids(ids, prompt, add_start_token) for ids, prompt in zip(rows, prompts)],
                                                self.tokenizer.pad_token_id)
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if any(prompt.images for prompt in prompts):
            from ..engine import load_image

            pixels = self.processor.image_processor([[load_image(ref) for ref in prompt.images] for prompt in prompts],
                                                    return_tensors="pt")
            out.update({key: pixels[key] for key in ("pixel_values", "pixel_attention_mask")})
        return self.on_device(out)

    def image_inputs(self, prompt: Prompt) -> dict[str, torch.Tensor]:
        from ..engine import load_image

        if not prompt.images:
            return {}
        out = self.processor.image_processor([[load_image(ref) for ref in prompt.images]], return_tensors="pt")
        return self.on_device({key: out[key] for key in ("pixel_values", "pixel_attention_mask")})

    def full_inputs(self, sequences: Sequence[list[int]], prompt: Prompt, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """With the position ids `generate` would give left-padded rows, so that padding shifts nothing."""
        inputs = self.sequence_inputs(sequences, prompt)
        inputs["position_ids"] = generation_positions(inputs["attention_mask"], inputs["input_ids"].shape[1])
        rows = len(sequences)
        return {**inputs, **{key: value.expand(rows, *value.shape[1:]).contiguous() for key, value in images.items()}}

    # -- the fast path -------------------------------------------------------------------------

    def text_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        return self.sequence_inputs([self.token_ids(prompt, add_start_token) for prompt in prompts], None)

    def sequence_inputs(self, sequences: Sequence[list[int]], prompt: Prompt | None) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = left_padded(sequences, self.tokenizer.pad_token_id)
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(images, crops, 3, H, W); the image cache preprocesses one image at a time, so no pixel is padding."""
        return self.processor.image_processor([[image] for image in images], return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def compute_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, crops, 3, H, W) pixels -> (n, crops x image_seq_len, hidden): the vectors the decoder
        reads in place of each image's `<image>` tokens, by the model's get_image_features. The
        pixels are one image's (no padding to mask): in a padded batch the model masks the padding
        out of the vision tower and the resampler, so it computes the same vectors."""
        pixels = pixels.to(device=self.device, dtype=self.model.dtype)
        return torch.stack(list(self.model.model.get_image_features(pixels, return_dict=True).pooler_output))

    def image_features(self, prompts: Sequence[Prompt], encode: EncodeImages) -> torch.Tensor | None:
        """Every image's vectors, prompt after prompt, in the order of their `<image>` tokens (the
        order the model's inputs merger fills them in); None for a batch without images."""
        refs = [ref for prompt in prompts for ref in prompt.images]
        if not refs:
            return None
        return torch.cat([encode([ref])[0] for ref in refs])  # one at a time: images differ in crops

    def forward(self, inputs: dict[str, torch.Tensor], features, cache=None, logits_to_keep: int = 1) -> Forward:
        """The model's forward pass on input embeddings with the image vectors merged in where the
        `<image>` tokens are (only the prompt's first pass has any). Position ids are the caller's
        (beam search's side-by-side beams with their 4-d mask, ranking's candidates) or, as
        `generate` counts them, from the 2-d attention mask."""
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        position_ids = inputs.get("position_ids")
        if position_ids is None:
            position_ids = generation_positions(attention_mask, input_ids.shape[1])
        embeds = self.model.get_input_embeddings()(input_ids)
        at_images = input_ids == self.image_token_id
        if features is not None and bool(at_images.any()):
            # What the models' forward does with the vectors of pixel inputs (Idefics2's inputs_merger,
            # SmolVLM's get_placeholder_mask): each <image> token's embedding replaced, in order.
            if at_images.sum() * embeds.shape[-1] != features.numel():
                raise AssertionError(f"{int(at_images.sum())} <image> tokens but {features.shape[0]} image vectors")
            embeds = embeds.masked_scatter(at_images.unsqueeze(-1), features.to(embeds.device, embeds.dtype))
        out = self.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=True, logits_to_keep=logits_to_keep)
        return Forward(out.logits, out.cache)

    def step_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A generated token is text: it reads the images through the key/value cache only."""
        return {}

    def continuation_inputs(self, prefix: dict[str, torch.Tensor], features, rows: int, width: int):
        return {}, None  # candidates are text after every image of the context

    # -- RICES ---------------------------------------------------------------------------------

    @property
    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_model

    @torch.no_grad()
    def vision_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The vision tower's last hidden state averaged over the real patches of each whole image
        (the last crop with splitting); each image alone, so that no padding is averaged in."""
        out = []
        for image in images:
            pixels = self.preprocess([image])[0, -1:].to(self.device, self.dtype)
            hidden = self.vision_tower(pixel_values=pixels).last_hidden_state
            out.append(hidden.mean(dim=1)[0].float().cpu().numpy())
        return np.stack(out)
