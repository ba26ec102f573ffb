"""LLaVA-OneVision (`llava_onevision`): image features in place of the image's tokens.

The processor expands each `<image>` into one token per visual feature, and the model puts the
projected vision features in those tokens' embeddings. How many depends on the prompt: a prompt
with a single image gets "anyres" features (the whole image, the crops of the grid pinpoint that
fits it best with the padding cut away, a newline feature after each row), a prompt with several
images (any few-shot prompt) gets each whole image only, padded to a square, and one newline
feature. This module writes the text with one `<image>` per image and leaves the rest to the
processor. An instruct checkpoint's chat template (a protocol's `chat_template: true`) writes the
user turn with all its images first, one `<image>` line each, then its text: the shots' images are
no longer next to their text there, which is the checkpoint's own format, and the harness keeps it.

transformers (5.x) builds LlavaOnevisionProcessor only with a video processor, and its video
processor needs torchvision, which this harness does not depend on. The harness passes no
videos, so it loads the processor without that part: the same class, image processor and
tokenizer, so the same ids, pixels and image sizes (tested against the processor's own
`__call__`).

A prompt cut from the left (`truncation: left`) keeps the features its images have in the whole
prompt: an image shown among several stays so even where the cut leaves it alone, so the ids are
the whole prompt's less a prefix and the features of the images kept are the whole prompt's less
those of the images cut.
"""

from __future__ import annotations

import inspect
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BatchFeature,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
)
from transformers.utils import CHAT_TEMPLATE_FILE

from ..errors import UserError
from ..examples import ImageRef
from ..prompts import Prompt, cut_left
from .base import EncodeImages, Forward, ModelAdapter, cut_whole_blocks, generation_positions, left_padded

IMAGE_TOKEN, VIDEO_TOKEN = "<image>", "<video>"
PROCESSOR_CONFIG = "processor_config.json"


class ImageTextProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without its video processor (see the module's docstring)."""

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token=IMAGE_TOKEN,
                 video_token="<video>", vision_aspect_ratio="anyres_max_9"):
        super().__init__(image_processor, tokenizer, None, num_image_tokens, vision_feature_select_strategy,
                         chat_template, image_token, video_token, vision_aspect_ratio)

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """LlavaOnevisionProcessor's files (AutoProcessor loads them where torchvision is installed),
        the chat template, if any, in its own file as transformers writes it."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        settings = {name: getattr(self, name) for name in _SETTINGS}
        config = {"processor_class": LlavaOnevisionProcessor.__name__, **settings}
        (path / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if self.chat_template:
            (path / CHAT_TEMPLATE_FILE).write_text(self.chat_template)


_SETTINGS = [name for name in inspect.signature(ImageTextProcessor.__init__).parameters
             if name not in ("self", "image_processor", "tokenizer", "chat_template")]


def load_processor(name: str | Path) -> ImageTextProcessor:
    """The processor of a checkpoint (folder or hub id): its image processor, tokenizer, processor
    settings and chat template (transformers' own reading of the processor's files)."""
    config, _ = LlavaOnevisionProcessor.get_processor_dict(name)
    settings = {key: config[key] for key in [*_SETTINGS, "chat_template"] if key in config}
    image_processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=False)
    return ImageTextProcessor(image_processor, AutoTokenizer.from_pretrained(name, trust_remote_code=False), **settings)


def prompt_text(prompt: Prompt, bos_token: str | None, adapter: ModelAdapter | None = None) -> str:
    """The prompt as the processor reads it: `bos_token` (Qwen2's tokenizers have none), then the
    text items as written and one `<image>` per image (the processor expands each); a chat prompt
    in the checkpoint's template (`adapter.chat_text`)."""
    if prompt.chat:
        return (bos_token or "") + adapter.chat_text(prompt)
    return (bos_token or "") + "".join(item if isinstance(item, str) else IMAGE_TOKEN for item in prompt.items)


def processor_inputs(
    processor: LlavaOnevisionProcessor, prompts: Sequence[Prompt], load: Callable[[ImageRef], Image.Image],
    bos_token: str | None, adapter: ModelAdapter | None = None,
) -> BatchFeature:
    """input_ids, attention_mask, pixel_values, image_sizes and batch_num_images for `prompts`,
    left-padded (generation continues every row at the end); `adapter` renders chat prompts."""
    images = [[load(ref) for ref in prompt.images] for prompt in prompts]
    return processor(
        images=images if any(images) else None,  # a batch of text-only prompts
        text=[prompt_text(prompt, bos_token, adapter) for prompt in prompts],
        padding="longest",
        padding_side="left",
        add_special_tokens=False,  # the text holds its start token, if any
        return_tensors="pt",
    )


def every_image(prompt: Prompt) -> list[ImageRef]:
    """The prompt's images, those cut from its left too: how each is shown (alone or among several)
    and how many tokens it takes are the whole prompt's, so that a cut only removes tokens."""
    return [item for item in prompt.items if not isinstance(item, str)]


def batch_num_images(patched: Sequence[bool]) -> torch.Tensor:
    """The `batch_num_images` under which the model shows each of a batch's images as `patched`
    says, image by image (True: alone, by its anyres crops; False: as one of several). The model
    reads it only so, as `[n == 1] * n` for each entry in turn, zipped with the images: a run of
    images shown among several is one entry, a prompt's lone image is 1, and a single image shown
    among several (a prompt cut to its last image) is 2, the zip dropping the second, which only the
    last image of a batch can do without shifting the ones after it."""
    counts = []
    for alone, run in itertools.groupby(patched):
        length = len(list(run))
        counts += [1] * length if alone else [max(length, 2)]
    if [n == 1 for n in counts for _ in range(n)][: len(patched)] != list(patched):
        raise UserError("--plain-generation: LLaVA-OneVision cannot be given, in one batch, a prompt cut from the left "
                        "to its last image and then a prompt with one image; add --batch-size 1")
    return torch.tensor(counts, dtype=torch.long)


class LlavaOnevisionAdapter(ModelAdapter):
    """Every fast path holds: the forward pass takes the embeddings with the image features already
    in place (`inputs_embeds`), so decoding and ranking run on the key/value cache. Only the
    features of an image shown among several (any prompt with shots) are cached: a lone image's
    anyres features depend on the grid its size picks and are computed with the prompt."""

    family = "llava_onevision"
    cached_features = True
    left_truncation = True
    fast_generation = True
    prefix_ranking = True
    chat_templates = True
    chat_image_token = IMAGE_TOKEN
    model_class = LlavaOnevisionForConditionalGeneration

    @classmethod
    def load_processor(cls, name: str) -> ImageTextProcessor:
        return load_processor(name)

    @classmethod
    def check_processor(cls, processor, name: str) -> None:
        if not isinstance(processor, LlavaOnevisionProcessor):
            raise UserError(f"{name} has a {type(processor).__name__}, not a LlavaOnevisionProcessor; is it a LLaVA-OneVision checkpoint?")
        if processor.image_token not in processor.tokenizer.get_vocab():
            raise UserError(f"the tokenizer of {name} does not know {processor.image_token}; it is not a LLaVA-OneVision tokenizer")
        if not processor.num_image_tokens:
            raise UserError(f"{name}: {PROCESSOR_CONFIG} gives no num_image_tokens; it is not a LLaVA-OneVision processor")

    # -- text ----------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    @property
    def image_tokens(self) -> tuple[str, ...]:
        vocab = self.tokenizer.get_vocab()
        return tuple(token for token in (self.processor.image_token, self.processor.video_token) if token in vocab)

    def start_text(self, add_start_token: bool) -> str:
        """What a prompt starts with: the tokens the tokenizer would add by itself, or else its
        start token (Qwen2's tokenizers have neither)."""
        if not add_start_token:
            return ""
        added = self.tokenizer("", add_special_tokens=True)["input_ids"]
        return "".join(self.tokenizer.convert_ids_to_tokens(added)) if added else (self.tokenizer.bos_token or "")

    def prompt_text(self, prompt: Prompt, add_start_token: bool) -> str:
        """The processor's text (`prompt_text`: the task's, or the chat template's) with each
        `<image>` repeated once per feature of its image, in order, as the processor expands it
        (for every image, those cut from the left too: `cut_ids` cuts the ids)."""
        pieces = prompt_text(prompt, self.start_text(add_start_token), self).split(IMAGE_TOKEN)
        text = pieces[0]
        for size, piece in zip(self.image_sizes(prompt), pieces[1:], strict=True):
            text += self.processor.image_token * size + piece
        return text

    def image_sizes(self, prompt: Prompt) -> list[int]:
        """How many `<image>` tokens each of the prompt's images (cut or not) takes."""
        from ..engine import load_image

        images = every_image(prompt)
        return [self._features(load_image(ref), len(images) > 1) for ref in images]

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.processor.image_token)

    def start_length(self, add_start_token: bool) -> int:
        """How many ids `start_text` is: what a cut keeps first."""
        return len(self.tokenizer(self.start_text(add_start_token), add_special_tokens=False)["input_ids"])

    def cut_ids(self, ids: list[int], prompt: Prompt, add_start_token: bool) -> list[int]:
        """`cut_left` after the start text's ids (none where the tokenizer has no start token: Qwen2's)."""
        return cut_left(ids, prompt, self.start_length(add_start_token))

    def cut_from_left(self, prompt: Prompt, count: int, add_start_token: bool) -> Prompt:
        """An image here is its run of `<image>` tokens, one per feature (the whole prompt's: shown
        among several where it has several images): a cut that would end inside one is widened to its
        end and the image goes whole, its features and size with it."""
        ids = self.token_ids(prompt, add_start_token)
        return cut_whole_blocks(prompt, count, self.start_length(add_start_token), self.image_blocks(ids, prompt))

    def image_blocks(self, ids: list[int], prompt: Prompt) -> list[tuple[int, int]]:
        """(first, past last) position of each image's `<image>` tokens in the prompt's `ids`."""
        at_images = [at for at, token in enumerate(ids) if token == self.image_token_id]
        blocks, used = [], 0
        for size in self.image_sizes(prompt):
            blocks.append((at_images[used], at_images[used + size - 1] + 1))
            used += size
        return blocks

    def _features(self, image: Image.Image, several: bool) -> int:
        """How many features the model puts in place of `image`, alone or among several."""
        processor = self.processor
        if several:
            count = processor.num_image_tokens + 1  # the whole image and one newline
            return count - 1 if processor.vision_feature_select_strategy == "default" else count
        width, height = image.size
        return processor._get_num_multimodal_tokens(image_sizes=[(height, width)])["num_image_tokens"][0]

    # -- the plain path ------------------------------------------------------------------------

    def build_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        """The processor's inputs; for prompts cut from the left, its inputs for the whole prompts
        less each cut (`cut_ids`) and less the pixels and sizes of the images cut (`kept_images`)."""
        from ..engine import load_image  # engine imports the models package

        start = self.start_text(add_start_token)
        if not any(prompt.cut_tokens for prompt in prompts):
            return self.on_device(processor_inputs(self.processor, prompts, load_image, start, self))
        whole = processor_inputs(self.processor, [replace(prompt, cut_tokens=0, cut_images=0) for prompt in prompts],
                                 load_image, start, self)
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(whole["input_ids"], whole["attention_mask"])]
        input_ids, attention_mask = left_padded([self.cut_ids(ids, prompt, add_start_token) for ids, prompt in zip(rows, prompts)],
                                                self.tokenizer.pad_token_id)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if any(prompt.images for prompt in prompts):
            inputs.update(self.kept_images(whole, prompts))
            inputs["batch_num_images"] = batch_num_images([len(every_image(p)) == 1 for p in prompts for _ in p.images])
        return self.on_device(inputs)

    def kept_images(self, pixels, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        """The processor's `pixel_values` and `image_sizes` (one row per image) for the whole
        prompts, less those of each prompt's images cut from the left (its first `cut_images`)."""
        kept, at = [], 0
        for prompt, count in zip(prompts, pixels["batch_num_images"].tolist(), strict=True):
            kept += range(at + prompt.cut_images, at + count)
            at += count
        return {"pixel_values": pixels["pixel_values"][kept], "image_sizes": pixels["image_sizes"][kept]}

    def image_inputs(self, prompt: Prompt) -> dict[str, torch.Tensor]:
        from ..engine import load_image

        if not prompt.images:
            return {}
        pixels = self.processor.image_processor([[load_image(ref) for ref in every_image(prompt)]], return_tensors="pt")
        return self.on_device(self.kept_images(pixels, [prompt]))

    def full_inputs(self, sequences: Sequence[list[int]], prompt: Prompt, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each row shows the prompt's images again (as the whole prompt shows them), with the
        positions `generate` would give it."""
        rows, inputs = len(sequences), self.sequence_inputs(sequences, prompt)
        inputs["position_ids"] = generation_positions(inputs["attention_mask"], inputs["input_ids"].shape[1])
        if not images:
            return inputs
        alone = [len(every_image(prompt)) == 1] * (len(prompt.images) * rows)
        return {**inputs, "pixel_values": images["pixel_values"].repeat(rows, *[1] * (images["pixel_values"].dim() - 1)),
                "image_sizes": images["image_sizes"].repeat(rows, 1),
                "batch_num_images": batch_num_images(alone).to(self.device)}

    # -- the fast path -------------------------------------------------------------------------

    def text_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        return self.sequence_inputs([self.token_ids(prompt, add_start_token) for prompt in prompts], None)

    def sequence_inputs(self, sequences: Sequence[list[int]], prompt: Prompt) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = left_padded(sequences, self.tokenizer.pad_token_id)
        return self.on_device({"input_ids": input_ids, "attention_mask": attention_mask})

    def preprocess(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """pixel_values (images, 3, H, W) as for a prompt with several images: each whole image
        padded to a square. (Given alone, the image processor would cut an image into its anyres
        crops; beside a copy of itself it is processed as one of several.)"""
        shown = list(images) if len(images) > 1 else list(images) * 2
        pixels = self.processor.image_processor([shown], return_tensors="pt")
        return {"pixel_values": pixels["pixel_values"][: len(images), 0], "image_sizes": pixels["image_sizes"][: len(images)]}

    @torch.no_grad()
    def compute_features(self, pixels: dict[str, torch.Tensor]) -> torch.Tensor:
        """(images, features + 1, hidden): what LlavaOnevisionModel.get_image_features gives an
        image shown among several: the selected vision layer, projected, then the newline feature."""
        model, config = self.model.model, self.config
        output = model.vision_tower(pixels["pixel_values"].to(self.device, model.dtype), output_hidden_states=True)
        layer = config.vision_feature_layer
        if isinstance(layer, int):
            hidden = output.hidden_states[layer]
        else:
            hidden = torch.cat([output.hidden_states[index] for index in layer], dim=-1)
        if config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        features = model.multi_modal_projector(hidden)
        newline = model.image_newline.to(features)[None, None].expand(features.shape[0], 1, -1)
        return torch.cat([features, newline], dim=1)

    @torch.no_grad()
    def _anyres_features(self, image: Image.Image) -> torch.Tensor:
        """A lone image's features, by the model's own method (not cached: see the class)."""
        pixels = self.processor.image_processor([[image]], return_tensors="pt")
        output = self.model.model.get_image_features(
            pixels["pixel_values"].to(self.device, self.model.dtype), pixels["image_sizes"].to(self.device),
            batch_num_images=pixels["batch_num_images"].to(self.device), return_dict=True,
        )
        return output.pooler_output[0]

    def image_features(self, prompts: Sequence[Prompt], encode: EncodeImages) -> torch.Tensor | None:
        """(image tokens of the batch, hidden): the features in the order their tokens appear, row by row."""
        from ..engine import load_image

        several = [ref for prompt in prompts if len(every_image(prompt)) > 1 for ref in prompt.images]
        cached = iter(encode(several)) if several else iter(())
        parts = []
        for prompt in prompts:
            if len(every_image(prompt)) == 1:
                parts.append(self._anyres_features(load_image(prompt.images[0])))
            else:
                parts += [next(cached) for _ in prompt.images]  # those kept, shown as among the whole prompt's
        return torch.cat(parts) if parts else None

    def forward(self, inputs: dict[str, torch.Tensor], features, cache=None, logits_to_keep: int = 1) -> Forward:
        """The token embeddings with the features scattered over the image tokens, as the model does."""
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        embeds = self.model.get_input_embeddings()(input_ids)
        is_image = input_ids == self.config.image_token_id
        if bool(is_image.any()):
            embeds = embeds.masked_scatter(is_image.unsqueeze(-1), features.to(embeds.dtype))
        positions = inputs.get("position_ids")
        positions = generation_positions(attention_mask, input_ids.shape[1]) if positions is None else positions
        out = self.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=logits_to_keep)
        return Forward(out.logits, out.cache)

    def step_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {}

    def continuation_inputs(self, prefix: dict[str, torch.Tensor], features, rows: int, width: int):
        """Candidates hold no image token: the features are in the prefix's cache already."""
        return {}, None


    # -- RICES ---------------------------------------------------------------------------------

    @property
    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    @torch.no_grad()
    def vision_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The vision tower's last hidden state, averaged over the patches of each whole image."""
        pixels = self.preprocess(images)["pixel_values"].to(self.device, self.dtype)
        return self.vision_tower(pixels).last_hidden_state.mean(dim=1).float().cpu().numpy()
