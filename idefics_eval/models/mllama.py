"""Llama 3.2 Vision (`mllama`): cross-attention to tiled images, as in Flamingo.

Each image is one `<|image|>` token in the text; the text tokens after it, up to the next image,
cross-attend to that image's tiles (`cross_attention_mask`: token x image x tile), and the tokens
after the last image attend to it until the end. MllamaProcessor builds all of this from a text
with the image tokens in place and the images in the same order; this module only writes that
text. The processor puts `<|begin_of_text|>` itself, after any images that open the text.

An instruct checkpoint's chat template (a protocol's `chat_template: true`) writes the start token
first, then the user turn's header, its items (`<|image|>` where each image stands), and the
assistant turn's header; the processor then takes that text as the model card feeds it, the
tokenizer adding nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, MllamaForConditionalGeneration, MllamaProcessor
from transformers.models.mllama.image_processing_pil_mllama import get_optimal_tiled_canvas
from transformers.models.mllama.processing_mllama import (
    build_string_from_input,
    convert_sparse_cross_attention_mask_to_dense,
    get_cross_attention_token_mask,
)

from ..errors import UserError
from ..examples import ImageRef
from ..prompts import Prompt
from .base import EncodeImages, Forward, ModelAdapter, generation_positions, left_padded

IMAGE_TOKEN = "<|image|>"


def prompt_text(prompt: Prompt, adapter: ModelAdapter | None = None) -> str:
    """The prompt as MllamaProcessor reads it: text items as written, one image token per image; a
    chat prompt in the checkpoint's template, less the start token it writes (`adapter.chat_text`)."""
    if prompt.chat:
        return adapter.chat_text(prompt)
    return "".join(item if isinstance(item, str) else IMAGE_TOKEN for item in prompt.items)


def processor_inputs(
    processor: MllamaProcessor, prompts: Sequence[Prompt], load: Callable[[ImageRef], Image.Image],
    adapter: ModelAdapter | None = None,
) -> BatchFeature:
    """input_ids, attention_mask, pixel_values, aspect_ratio_ids, aspect_ratio_mask and
    cross_attention_mask for `prompts`, left-padded (generation continues every row at the end).
    Chat prompts (rendered by `adapter`) go in as the model card gives them: the templated text with
    its start token, and no special tokens added by the tokenizer."""
    images = [[load(ref) for ref in prompt.images] for prompt in prompts]
    chat = any(prompt.chat for prompt in prompts)
    start = processor.tokenizer.bos_token if chat else ""
    return processor(
        images=images if any(images) else None,  # a batch of text-only prompts
        text=[start + prompt_text(prompt, adapter) for prompt in prompts],
        padding="longest",
        padding_side="left",
        add_special_tokens=not chat,
        return_tensors="pt",
    )


class MllamaAdapter(ModelAdapter):
    """Every fast path holds: the forward pass takes the projected vision states
    (`cross_attention_states`) in place of pixels, and the cross-attention layers keep their image
    keys and values in the key/value cache, so the decoding steps and the candidates of a ranked
    query run on the cache alone."""

    family = "mllama"
    cached_features = True
    left_truncation = True
    fast_generation = True
    prefix_ranking = True
    chat_templates = True
    chat_image_token = IMAGE_TOKEN
    model_class = MllamaForConditionalGeneration

    @classmethod
    def check_processor(cls, processor, name: str) -> None:
        if not isinstance(processor, MllamaProcessor):
            raise UserError(f"{name} has a {type(processor).__name__}, not an MllamaProcessor; is it a Llama 3.2 Vision checkpoint?")
        if IMAGE_TOKEN not in processor.tokenizer.get_vocab():
            raise UserError(f"the tokenizer of {name} does not know {IMAGE_TOKEN}; it is not a Llama 3.2 Vision tokenizer")

    # -- text ----------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    @property
    def image_tokens(self) -> tuple[str, ...]:
        """None to ban: `<|image|>`'s id is past the output vocabulary (an input-only embedding row),
        so it can never be generated, and `generate` refuses a ban on an id it cannot produce."""
        return () if self.image_token_id >= self.config.text_config.vocab_size else (IMAGE_TOKEN,)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    def prompt_text(self, prompt: Prompt, add_start_token: bool) -> str:
        """With the start token, what the processor tokenizes: the tokens its tokenizer adds by
        itself, then the text with `<|begin_of_text|>` after any images that open it (the
        processor's own rule); without, the bare text. A chat prompt's text opens with its template's
        header, after the start token alone (as `processor_inputs` gives it)."""
        text = prompt_text(prompt, self)
        if not add_start_token:
            return text
        if prompt.chat:
            return self.tokenizer.bos_token + text
        added = self.tokenizer("", add_special_tokens=True)["input_ids"]
        text = build_string_from_input(text, self.tokenizer.bos_token, IMAGE_TOKEN)
        return "".join(self.tokenizer.convert_ids_to_tokens(added)) + text

    def start_ids(self, prompt: Prompt, add_start_token: bool) -> list[int]:
        """The ids a prompt cut from the left keeps first: the tokens the tokenizer adds by itself
        and `<|begin_of_text|>` (a chat prompt's start token alone; none without the start token)."""
        if not add_start_token:
            return []
        added = [] if prompt.chat else self.tokenizer("", add_special_tokens=True)["input_ids"]
        return [*added, self.tokenizer.bos_token_id]

    def cut_ids(self, ids: list[int], prompt: Prompt, add_start_token: bool) -> list[int]:
        """The start tokens (`start_ids`), then `ids` past them and the `cut_tokens` cut. The processor
        writes an image that opens the text before `<|begin_of_text|>`; `cut_from_left` makes every
        cut take such images, so the tokens cut are the first `cut_tokens` of the whole prompt's ids
        other than the start tokens, and the start token stays where a prompt not opening with an
        image has it."""
        if not prompt.cut_tokens:
            return ids
        start = self.start_ids(prompt, add_start_token)
        return start + ids[len(start) + prompt.cut_tokens :]

    def cut_from_left(self, prompt: Prompt, count: int, add_start_token: bool) -> Prompt:
        """At least `count` tokens after the start token cut, and at least the images that open the
        prompt before it (see `cut_ids`); `cut_images`: the `<|image|>` tokens cut."""
        ids = self.token_ids(prompt, add_start_token)
        start = self.start_ids(prompt, add_start_token)
        opening = 0
        if start:
            while ids[len(start) - 1 + opening] == self.image_token_id:
                opening += 1
        cut = replace(prompt, cut_tokens=max(count, opening))
        images = ids.count(self.image_token_id) - self.cut_ids(ids, cut, add_start_token).count(self.image_token_id)
        return replace(cut, cut_images=images)

    # -- the plain path ------------------------------------------------------------------------

    def build_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        """The processor's inputs. Without the start token (which the processor always puts), or for
        prompts cut from the left, the processor's own parts: the processor's ids for the whole
        prompts (the tokenizer's on the bare text without the start token) less each cut
        (`cut_ids`), the image processor on the images kept, the cross-attention mask on those ids."""
        from ..engine import load_image  # engine imports the models package

        cut = any(prompt.cut_tokens for prompt in prompts)
        if add_start_token and not cut:
            return self.on_device(dict(processor_inputs(self.processor, prompts, load_image, self)))
        if add_start_token:
            whole = processor_inputs(self.processor, [replace(prompt, cut_tokens=0, cut_images=0) for prompt in prompts],
                                     load_image, self)
            rows = [ids[mask.bool()].tolist() for ids, mask in zip(whole["input_ids"], whole["attention_mask"])]
        else:
            rows = [self.tokenizer(prompt_text(prompt, self), add_special_tokens=False)["input_ids"] for prompt in prompts]
        input_ids, attention_mask = left_padded([self.cut_ids(ids, prompt, add_start_token) for ids, prompt in zip(rows, prompts)],
                                                self.tokenizer.pad_token_id)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        images = [[load_image(ref) for ref in prompt.images] for prompt in prompts]
        if any(images):
            pixels = self.processor.image_processor(images, return_tensors="pt")
            inputs["cross_attention_mask"] = self._cross_attention_mask(input_ids, pixels.pop("num_tiles"))
            inputs.update(pixels)
        return self.on_device(inputs)

    def image_inputs(self, prompt: Prompt) -> dict[str, torch.Tensor]:
        from ..engine import load_image

        if not prompt.images:
            return {}
        return self.on_device(self.preprocess([load_image(ref) for ref in prompt.images]))

    def full_inputs(self, sequences: Sequence[list[int]], prompt: Prompt, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """With the positions `generate` would give the left-padded rows (the model counts from the
        first column otherwise)."""
        rows, inputs = len(sequences), self.sequence_inputs(sequences, prompt)
        inputs["position_ids"] = generation_positions(inputs["attention_mask"], inputs["input_ids"].shape[1])
        return {**inputs, **{key: value.expand(rows, *value.shape[1:]) for key, value in images.items()}}

    # -- the fast path -------------------------------------------------------------------------

    def text_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and cross_attention_mask as the processor builds them, the
        tiles of each image counted from its size alone (no pixels)."""
        input_ids, attention_mask = left_padded([self.token_ids(prompt, add_start_token) for prompt in prompts],
                                                self.tokenizer.pad_token_id)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if any(prompt.images for prompt in prompts):
            inputs["cross_attention_mask"] = self._cross_attention_mask(input_ids, self._tiles(prompts))
        return self.on_device(inputs)

    def sequence_inputs(self, sequences: Sequence[list[int]], prompt: Prompt) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = left_padded(sequences, self.tokenizer.pad_token_id)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if prompt.images:
            inputs["cross_attention_mask"] = self._cross_attention_mask(input_ids, self._tiles([prompt]) * len(sequences))
        return self.on_device(inputs)

    def _tiles(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """How many tiles the image processor cuts each image into, from the image's size."""
        from ..engine import load_image

        image_processor = self.processor.image_processor
        tile = image_processor.size["height"]
        counts = []
        for prompt in prompts:
            counts.append([])
            for ref in prompt.images:
                width, height = load_image(ref).size
                canvas_height, canvas_width = get_optimal_tiled_canvas(height, width, image_processor.max_image_tiles, tile)
                counts[-1].append((canvas_height // tile) * (canvas_width // tile))
        return counts

    def _cross_attention_mask(self, input_ids: torch.Tensor, tiles: list[list[int]]) -> torch.Tensor:
        """The processor's own functions on the (padded) ids: a token sees the tiles of the latest
        image before it (consecutive images together), none before the first."""
        spans = [get_cross_attention_token_mask(ids, self.image_token_id) for ids in input_ids.tolist()]
        dense = convert_sparse_cross_attention_mask_to_dense(
            spans, tiles, max_num_tiles=self.processor.image_processor.max_image_tiles, length=input_ids.shape[1])
        return torch.from_numpy(dense)

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """pixel_values (1, images, tiles, 3, tile, tile), aspect_ratio_ids and aspect_ratio_mask of
        `images` shown together."""
        pixels = self.processor.image_processor([list(images)], return_tensors="pt")
        return {key: value for key, value in pixels.items() if key != "num_tiles"}

    @torch.no_grad()
    def compute_features(self, pixels: dict[str, torch.Tensor]) -> torch.Tensor:
        """(images, tiles, patches, hidden): the vision model's output through the projector, as
        MllamaModel.forward computes its cross_attention_states (each image apart from the others)."""
        model = self.model.model
        vision = model.vision_model(
            pixel_values=pixels["pixel_values"].to(self.device, model.dtype),
            aspect_ratio_ids=pixels["aspect_ratio_ids"].to(self.device),
            aspect_ratio_mask=pixels["aspect_ratio_mask"].to(self.device),
        ).last_hidden_state
        return model.multi_modal_projector(vision)[0]

    def image_features(self, prompts: Sequence[Prompt], encode: EncodeImages) -> torch.Tensor | None:
        """cross_attention_states (batch x max images x tiles, patches, hidden): each prompt's image
        features, zero for the images it lacks (the cross-attention mask hides them)."""
        max_images = max(len(prompt.images) for prompt in prompts)
        if max_images == 0:
            return None
        features = encode([ref for prompt in prompts for ref in prompt.images])
        out = features.new_zeros(len(prompts), max_images, *features.shape[1:])
        row = 0
        for index, prompt in enumerate(prompts):
            count = len(prompt.images)
            out[index, :count] = features[row : row + count]
            row += count
        return out.flatten(0, 2)

    def forward(self, inputs: dict[str, torch.Tensor], features, cache=None, logits_to_keep: int = 1) -> Forward:
        """The image states enter on the first pass only: after it the cross-attention layers read
        them from the cache (passing them again would append them a second time)."""
        inputs = dict(inputs)
        if "position_ids" not in inputs:
            inputs["position_ids"] = generation_positions(inputs["attention_mask"], inputs["input_ids"].shape[1])
        states = features if cache is None else None
        out = self.model(**inputs, cross_attention_states=states, cache=cache, use_cache=True, logits_to_keep=logits_to_keep)
        return Forward(out.logits, out.cache)

    def step_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A generated token sees what the prompt's last token sees (as `generate` extends the mask)."""
        if "cross_attention_mask" not in inputs:
            return {}
        return {"cross_attention_mask": inputs["cross_attention_mask"][:, -1:]}

    def continuation_inputs(self, prefix: dict[str, torch.Tensor], features, rows: int, width: int):
        """A candidate's tokens see what the context's last token sees; the image states are in the cache."""
        if "cross_attention_mask" not in prefix:
            return {}, features
        last = prefix["cross_attention_mask"][:, -1:]
        return {"cross_attention_mask": last.expand(rows, width, *last.shape[2:])}, features


    # -- RICES ---------------------------------------------------------------------------------

    @property
    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_model

    @torch.no_grad()
    def vision_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The vision model's output averaged over each image's own tiles and patches."""
        embeddings = []
        for image in images:
            pixels = self.on_device(self.preprocess([image]))
            hidden = self.vision_tower(**pixels).last_hidden_state[0, 0]  # (tiles, patches, dim)
            tiles = int(pixels["aspect_ratio_mask"][0, 0].sum())
            embeddings.append(hidden[:tiles].flatten(0, 1).mean(dim=0))
        return torch.stack(embeddings).float().cpu().numpy()
