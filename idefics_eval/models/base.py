"""The model adapter: everything the engine, the ranker, the image cache, RICES and the dry run ask
of a model family, in one class. Each family (`config.model_type`) has one subclass in a module of
its own (`idefics.py`, ...); `models.ADAPTERS` maps the type to it. docs/models.md is this interface
in a page.

The family-agnostic code (the greedy and beam loops, prefix-cached ranking, batching, `--batch-size
auto`) sees model inputs as a dict holding `input_ids` and `attention_mask` (left-padded, on the
model's device) and whatever else the family's forward pass needs beside them, and image features
as a value it only passes back to the adapter. It never names a transformers model class.

Three capability flags say which fast paths are exact for a family; where one is False the engine
or the ranker takes the plain path (`model.generate` on the processor's inputs; one full forward
pass per candidate) and says so once (`fallback_note`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor

from ..console import quiet_libraries
from ..errors import UserError
from ..examples import ImageRef
from ..prompts import IMAGE, Prompt, cut_left

# The date a chat template writes where it would write today's (`date_string`: Llama 3.x's "Today
# Date"): the fallback of Llama 3.1's and 3.2's own templates, so prompts never change with the day.
CHAT_DATE = "26 Jul 2024"

# What the image cache gives an adapter: the features of these images, in order (`image_cache.encode_images`).
EncodeImages = Callable[[Sequence[ImageRef]], torch.Tensor]


def left_padded(sequences: Sequence[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask of `sequences`, padded on the left to the longest."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def check_tokenizer(processor, name: str, tokens: Sequence[str], family: str) -> None:
    """One line when the tokenizer lacks one of the family's image tokens (another family's checkpoint)."""
    vocab = processor.tokenizer.get_vocab()
    missing = [token for token in tokens if token not in vocab]
    if missing:
        raise UserError(f"the tokenizer of {name} does not know {missing[0]}; it is not an {family} tokenizer")


def cut_whole_blocks(prompt: Prompt, count: int, start: int, blocks: Sequence[tuple[int, int]]) -> Prompt:
    """`prompt` with at least `count` tokens cut after its `start` first ones, where each image is the
    block of ids `blocks` gives it ((first, past last) position, in the uncut ids, in order): a cut
    that would end inside a block is widened to the block's end, and the image goes whole."""
    end, cut_images = start + count, 0
    for first, past in blocks:
        if first >= end:
            break
        end, cut_images = max(end, past), cut_images + 1
    return replace(prompt, cut_tokens=end - start, cut_images=cut_images)


def generation_positions(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """The position ids `generate` gives the last `length` tokens of left-padded rows: real tokens
    count from 0 after the padding, padding is 0 (`_prepare_position_ids_for_generation`)."""
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    return positions[:, -length:]


@dataclass
class Forward:
    """One forward pass: the logits it kept and the key/value cache to continue from."""

    logits: torch.Tensor
    cache: object


class ModelAdapter:
    """One model family behind the harness. Built on a processor and config alone (the dry run
    measures prompts without weights) or with the loaded model too (everything else)."""

    family: ClassVar[str]  # its config.model_type
    model_class: ClassVar[type]  # its transformers model class, loaded by `load`
    cached_features: ClassVar[bool] = False  # the forward pass takes image features computed once per run
    left_truncation: ClassVar[bool] = False  # its inputs honour a prompt cut from the left (`Prompt.cut_tokens`)
    fast_generation: ClassVar[bool] = False  # the engine's greedy/beam loop over `forward` equals model.generate
    prefix_ranking: ClassVar[bool] = False  # candidates scored on the shared prefix's key/value cache (packed,
    # a 4-d additive float mask and position_ids: `Ranker._packed_pass`)
    chat_templates: ClassVar[bool] = False  # `chat_text` wraps a chat prompt in the checkpoint's own template

    def __init__(self, processor, config, model: torch.nn.Module | None = None,
                 device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32):
        self.processor = processor
        self.config = config
        self.model = model
        self.device = device
        self.dtype = dtype

    # -- loading (the class, before there is a model) ------------------------------------------

    @classmethod
    def load(cls, name: str, *, dtype: torch.dtype, device_map: str | None, allow_pickle: bool, quiet: bool):
        """(model, processor) of checkpoint `name` (hub id or folder): `load_processor`, checked
        (`check_processor`) before the (long) weight loading, then `model_class` from safetensors
        only unless `allow_pickle`. Remote code is never trusted. `quiet`: no bars or warnings."""
        processor = cls.load_processor(name)
        cls.check_processor(processor, name)
        with quiet_libraries(quiet):
            model = cls.model_class.from_pretrained(
                name, dtype=dtype, device_map=device_map, use_safetensors=None if allow_pickle else True,
                trust_remote_code=False,
            )
        return model, processor

    @classmethod
    def load_processor(cls, name: str):
        """The checkpoint's processor (a family may need to build it otherwise)."""
        return AutoProcessor.from_pretrained(name, trust_remote_code=False)

    @classmethod
    def check_processor(cls, processor, name: str) -> None:
        """A UserError, in one line, when `processor` is not this family's."""
        raise NotImplementedError

    # -- text ----------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def max_length(self) -> int:
        """The context length, in tokens."""
        raise NotImplementedError

    @property
    def image_tokens(self) -> tuple[str, ...]:
        """Tokens that stand for images: never generated (`engine.banned_token_ids`)."""
        raise NotImplementedError

    # A special token that ends every image in `prompt_text` (the tokenizer starts afresh after it,
    # so the ranker tokenises a query's candidates once per task: `Ranker._requests_reused`); None: none.
    image_end_token: ClassVar[str | None] = None

    def prompt_text(self, prompt: Prompt, add_start_token: bool) -> str:
        """The text the family's processor tokenizes for `prompt` (image placeholders included), with
        or without the tokenizer's start token; token counts, truncation and ranking read it."""
        raise NotImplementedError

    def check_chat_template(self, key: str, name: str) -> None:
        """A UserError, in one line, when checkpoint `name` cannot take a protocol's chat_template
        (`key` names where the protocol sets it): its family has no chat turns here, or it has no template."""
        if not self.chat_templates:
            raise UserError(f"{key}: chat templates are not supported for {self.family} checkpoints ({name}); "
                            "remove chat_template for it")
        if self.chat_template is None:
            raise UserError(f"{key}: {name} has no chat template (a base checkpoint?); remove chat_template, "
                            "or use the instruct checkpoint")

    @property
    def chat_template(self) -> str | None:
        """The checkpoint's Jinja chat template: its processor's, else its tokenizer's; None: none."""
        return getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)

    # The placeholder a family's chat template writes for an image content item (the one its processor expands).
    chat_image_token: ClassVar[str] = IMAGE

    def chat_text(self, prompt: Prompt) -> str:
        """A chat prompt's text before the family expands its images: one user turn holding its items,
        each image as the template writes it (`chat_image_token`, where the template puts it), the
        assistant turn's start, and its `reply`, all through the checkpoint's own template. A start
        token the template writes is dropped: the task's add_start_token decides it.

        The text never depends on the day of the run: a template that dates its prompts from
        `date_string` (Llama 3.x's, in a system turn) gets `CHAT_DATE`, and transformers' clock
        (`strftime_now`, a global of its template environment, which a render variable shadows) is
        hidden, so a template that reads it anyway is refused in one line."""
        content = [{"type": "text", "text": item} if isinstance(item, str) else {"type": "image"} for item in prompt.items]
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], chat_template=self.chat_template, add_generation_prompt=True,
                tokenize=False, date_string=CHAT_DATE, strftime_now=None)
        except TypeError:  # it called strftime_now, which the harness does not give it
            if "strftime_now" not in self.chat_template:
                raise
            raise UserError(f"the chat template of {self.config.name_or_path or self.family} writes today's date "
                            "(strftime_now), so its prompts would change with the day of the run; make it read "
                            "date_string, or remove chat_template from the protocol") from None
        if text.count(self.chat_image_token) != sum(not isinstance(item, str) for item in prompt.items):
            raise UserError(f"the chat template of {self.config.name_or_path or self.family} does not write one "
                            f"{self.chat_image_token} per image; remove chat_template from the protocol")
        bos = self.tokenizer.bos_token
        if bos and text.startswith(bos):
            text = text[len(bos):]
        return text + prompt.reply

    def token_ids(self, prompt: Prompt, add_start_token: bool = True) -> list[int]:
        """The prompt's token ids, as the family's processor encodes them (tested equal), less the
        tokens cut from its left (`cut_left`)."""
        ids = self.tokenizer(self.prompt_text(prompt, add_start_token), add_special_tokens=False)["input_ids"]
        return self.cut_ids(ids, prompt, add_start_token)

    def cut_ids(self, ids: list[int], prompt: Prompt, add_start_token: bool) -> list[int]:
        """`ids` (the prompt's uncut ids, or a longer sequence starting with them) less the prompt's
        `cut_tokens`: by default `cut_left` (the start token `<s>` is the first id); a family whose
        start token is not always first (Llama 3.2 Vision) or not one token has its own rule. Every
        path that builds token ids of a prompt goes through here."""
        return cut_left(ids, prompt, 1 if add_start_token else 0)

    def cut_from_left(self, prompt: Prompt, count: int, add_start_token: bool) -> Prompt:
        """`prompt` with at least its first `count` tokens after the start token cut (`Prompt.cut_tokens`)
        and the images whose placeholder went with them (`cut_images`). By default an image is one
        `<image>` token (IDEFICS's); a family whose images are blocks of tokens widens the cut so that
        it never splits one."""
        ids = self.token_ids(prompt, add_start_token)
        start = 1 if add_start_token else 0
        image_id = self.tokenizer.convert_tokens_to_ids(IMAGE)
        return replace(prompt, cut_tokens=count, cut_images=ids[start : start + count].count(image_id))

    # -- the plain path: the family's own processor on the images (the reference) -------------

    def build_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        """`model.generate`'s inputs for a batch: the processor on the decoded images, on the device."""
        raise NotImplementedError

    def image_inputs(self, prompt: Prompt) -> dict[str, torch.Tensor]:
        """The processor's image inputs (pixels, ...) for `prompt`'s images, on the device."""
        raise NotImplementedError

    def full_inputs(self, sequences: Sequence[list[int]], prompt: Prompt, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`model(**inputs)` for token sequences that all show `prompt`'s images (`image_inputs`):
        ranking's reference, one full forward pass per candidate."""
        raise NotImplementedError

    # -- the fast path -------------------------------------------------------------------------

    def text_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        """`build_inputs` without touching any pixels: the same ids and masks (tested equal)."""
        raise NotImplementedError

    def sequence_inputs(self, sequences: Sequence[list[int]], prompt: Prompt) -> dict[str, torch.Tensor]:
        """`text_inputs` for token sequences that all show `prompt`'s images."""
        raise NotImplementedError

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The image processor's pixels for `images`."""
        raise NotImplementedError

    def compute_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels -> the per-image features the forward pass reads, as the model computes them."""
        raise NotImplementedError

    def image_features(self, prompts: Sequence[Prompt], encode: EncodeImages):
        """The image features a batch's forward passes read, from `encode` (cached per image). A
        family without `cached_features` ignores `encode` and returns what its forward takes instead
        (pixels, for its first pass)."""
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor], features, cache=None, logits_to_keep: int = 1) -> Forward:
        """One pass with the key/value cache; `logits_to_keep` 0 keeps every position's logits.
        `inputs` may hold `position_ids` beside the family's own keys, and a 4-d boolean
        `attention_mask` (batch, 1, queries, keys): beam search feeds a prompt's beams side by side
        in one row (`engine.BeamSteps`), so a family with `fast_generation` must honour both."""
        raise NotImplementedError

    def step_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What each token generated after `inputs` carries beside its id and attention mask."""
        raise NotImplementedError

    def continuation_inputs(self, prefix: dict[str, torch.Tensor], features, rows: int, width: int):
        """(inputs beside ids, masks and positions; features) for `rows` continuations of `width`
        tokens each, run on the key/value cache of `prefix` (one row)."""
        raise NotImplementedError

    def decoding(self, inputs: dict[str, torch.Tensor], features) -> AbstractContextManager:
        """What holds while one batch is decoded (the passes inside take these rows and features):
        work the family does once per batch rather than once per pass. Nothing by default."""
        return nullcontext()

    def share_cache(self, cache, rows: int):
        """A one-row cache seen by `rows` rows without copying it (updates concatenate new tensors)."""
        shared = copy.copy(cache)
        shared.layers = []
        for layer in cache.layers:
            clone = copy.copy(layer)
            if layer.keys is None:  # a layer the prefix never filled (Llama 3.2 Vision's cross-attention, no image)
                shared.layers.append(clone)
                continue
            clone.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
            clone.values = layer.values.expand(rows, *layer.values.shape[1:])
            shared.layers.append(clone)
        return shared

    # -- RICES ---------------------------------------------------------------------------------

    def on_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`inputs` on the model's device, pixels in its dtype."""
        out = {key: value.to(self.device) for key, value in inputs.items()}
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.dtype)
        return out

    @property
    def vision_tower(self) -> torch.nn.Module:
        raise NotImplementedError

    def vision_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """One embedding per image from the model's own vision tower (RICES with --rices-encoder model)."""
        raise NotImplementedError

    # -- what the fast paths may assume ----------------------------------------------------------

    @classmethod
    def fallback_note(cls, path: str) -> str | None:
        """One line when `path` ("generation" or "ranking") takes the plain path for this family."""
        if path == "generation" and not cls.fast_generation:
            return f"{cls.family}: generation runs model.generate (no fast loop for this family)"
        if path == "ranking" and not cls.prefix_ranking:
            return f"{cls.family}: ranking runs one full forward pass per candidate (no prefix cache for this family)"
        return None
