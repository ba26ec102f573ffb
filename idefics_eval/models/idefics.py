"""IDEFICS (`IdeficsForVisionText2Text`, config.model_type "idefics"): the adapter, and the inputs
IdeficsProcessor builds, rebuilt from token ids alone (tested equal).

An image is `<fake_token_around_image><image><fake_token_around_image>` in the text, one token per
image whatever its size; gated cross-attention layers read each image's perceiver-resampler latents
(or, without a resampler, the vision tower's last hidden state) through `image_attention_mask`
(batch, tokens, images): a token sees the latest image at or before it. The forward pass takes
those features precomputed, so every fast path holds: images encoded once per run, our own
generation loop, prefix-cached ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import IdeficsForVisionText2Text, IdeficsProcessor
from transformers.models.idefics.processing_idefics import (
    image_attention_mask_for_packed_input_ids,
    incremental_to_binary_attention_mask,
)

from ..errors import UserError
from ..prompts import FAKE_TOKEN, Prompt, cut_left
from .base import EncodeImages, Forward, ModelAdapter, check_tokenizer, left_padded
from .gated_cross_attention import image_key_values

IMAGE_TOKENS = ("<image>", "<fake_token_around_image>")


class IdeficsAdapter(ModelAdapter):
    family = "idefics"
    model_class = IdeficsForVisionText2Text
    image_end_token = FAKE_TOKEN
    cached_features = True
    left_truncation = True
    fast_generation = True
    prefix_ranking = True

    def check_chat_template(self, key: str, name: str) -> None:
        """Always refused, saying why: IDEFICS checkpoints, the instruct ones too, ship no chat template
        (the model card writes the instruct turns by hand), and one the harness made up would be
        recorded as if it were the checkpoint's. Their turn format, one `User:`/`Assistant:` exchange
        per shot, is a prompt file's business (docs/models.md#chat-templates)."""
        raise UserError(f"{key}: IDEFICS checkpoints ship no chat template ({name}); for an instruct one, write its "
                        "turns (User:...<end_of_utterance>\\nAssistant:) in a prompt file and remove chat_template")

    @classmethod
    def check_processor(cls, processor, name: str) -> None:
        if not isinstance(processor, IdeficsProcessor):
            raise UserError(f"{name} has a {type(processor).__name__}, not an IdeficsProcessor; is it an IDEFICS checkpoint?")
        check_tokenizer(processor, name, IMAGE_TOKENS, "IDEFICS")

    # -- text ----------------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        return int(self.config.max_position_embeddings)

    @property
    def image_tokens(self) -> tuple[str, ...]:
        return IMAGE_TOKENS

    def prompt_text(self, prompt: Prompt, add_start_token: bool) -> str:
        return prompt.processor_text(self.tokenizer.bos_token if add_start_token else "")

    # -- the plain path ------------------------------------------------------------------------

    def build_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        from ..engine import load_image  # engine imports the models package

        batch = [[item if isinstance(item, str) else load_image(item) for item in p.items] for p in prompts]
        inputs = self.processor(text=batch, return_tensors="pt", padding="longest")
        if not add_start_token:
            inputs = without_start_token(inputs, self.tokenizer)
        if any(p.cut_tokens for p in prompts):
            inputs = cut_inputs(inputs, prompts, self.tokenizer, add_start_token)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def image_inputs(self, prompt: Prompt) -> dict[str, torch.Tensor]:
        from ..engine import load_image

        return {"pixel_values": self.preprocess([load_image(ref) for ref in prompt.images]).to(self.device, self.dtype)}

    def full_inputs(self, sequences: Sequence[list[int]], prompt: Prompt, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pixels = images["pixel_values"]
        return {**self.sequence_inputs(sequences, prompt), "pixel_values": pixels.unsqueeze(0).expand(len(sequences), *pixels.shape)}

    # -- the fast path -------------------------------------------------------------------------

    def text_inputs(self, prompts: Sequence[Prompt], add_start_token: bool) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and image_attention_mask as IdeficsProcessor builds them
        (left-padded; tested equal), without touching any pixels."""
        input_ids, attention_mask = left_padded([self.token_ids(p, add_start_token) for p in prompts], self.tokenizer.pad_token_id)
        max_images = max(1, max(len(p.images) for p in prompts))
        if any(p.images for p in prompts):
            image_mask = image_attention_mask(input_ids, self.tokenizer, max_images)
        else:
            image_mask = torch.zeros(input_ids.shape[0], input_ids.shape[1], 1, dtype=torch.bool)
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device),
                "image_attention_mask": image_mask.to(self.device)}

    def sequence_inputs(self, sequences: Sequence[list[int]], prompt: Prompt) -> dict[str, torch.Tensor]:
        """Left-padded ids and masks for sequences that all show `prompt`'s images; the image mask by
        the processor's own function."""
        input_ids, attention_mask = left_padded(sequences, self.tokenizer.pad_token_id)
        incremental, _ = image_attention_mask_for_packed_input_ids(input_ids, self.tokenizer, "pt")
        image_mask = incremental_to_binary_attention_mask(incremental, "pt", num_classes=max(1, len(prompt.images)))
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device),
                "image_attention_mask": image_mask.to(self.device)}

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        out = self.processor.image_processor(list(images), return_tensors="pt")
        return out if isinstance(out, torch.Tensor) else out["pixel_values"]

    @torch.no_grad()
    def compute_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) pixels -> (n, tokens, dim) features, exactly as IdeficsModel.forward computes them."""
        model = self.model.model
        pixels = pixels.to(dtype=model.dtype, device=self.device).contiguous()
        hidden = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=False).last_hidden_state
        return model.perceiver_resampler(hidden) if model.config.use_resampler else hidden

    def image_features(self, prompts: Sequence[Prompt], encode: EncodeImages) -> torch.Tensor:
        """(batch x max images, tokens, dim): each prompt's image features, zero-padded to the batch's
        most images (padded images are masked out, so their values never reach a logit)."""
        max_images = max(1, max(len(p.images) for p in prompts))
        refs = [ref for p in prompts for ref in p.images]
        features = encode(refs) if refs else self.zero_feature().unsqueeze(0)
        out = features.new_zeros(len(prompts), max_images, *features.shape[1:])
        row = 0
        for index, prompt in enumerate(prompts):
            count = len(prompt.images)
            out[index, :count] = features[row : row + count]
            row += count
        return out.flatten(0, 1)

    def zero_feature(self) -> torch.Tensor:
        config = self.config
        if config.use_resampler:
            shape = (config.perceiver_config.resampler_n_latents, config.vision_config.embed_dim)
        else:
            vision = config.vision_config
            shape = ((vision.image_size // vision.patch_size) ** 2 + 1, vision.embed_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    @property
    def feature_kind(self) -> str:
        """The forward-pass keyword that takes precomputed features for this checkpoint."""
        return "perceiver_embeddings" if self.config.use_resampler else "image_encoder_embeddings"

    def forward(self, inputs: dict[str, torch.Tensor], features: torch.Tensor, cache=None, logits_to_keep: int = 1) -> Forward:
        out = self.model(**inputs, cache=cache, **{self.feature_kind: features}, use_cache=True, logits_to_keep=logits_to_keep)
        return Forward(out.logits, out.cache)

    def step_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A generated token sees what the prompt's last token sees."""
        return {"image_attention_mask": inputs["image_attention_mask"][:, -1:]}

    def continuation_inputs(self, prefix: dict[str, torch.Tensor], features: torch.Tensor, rows: int, width: int):
        """The candidates' tokens see only the context's last image: the cross-attention gets just that
        one (the others would be masked out anyway), not every image once per candidate row."""
        last_image_row = prefix["image_attention_mask"][0, -1]
        seen = last_image_row.nonzero().flatten()
        seen = seen if len(seen) else torch.zeros(1, dtype=torch.long, device=last_image_row.device)
        mask = last_image_row[seen].expand(rows, width, -1)
        return {"image_attention_mask": mask}, features[seen].repeat(rows, 1, 1)  # (rows x images, latents, dim)

    def decoding(self, inputs: dict[str, torch.Tensor], features: torch.Tensor):
        """The gated cross-attention's image keys and values projected once for the batch."""
        return image_key_values(self.model, features, inputs["image_attention_mask"].shape[-1])

    # -- RICES ---------------------------------------------------------------------------------

    @property
    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_model

    @torch.no_grad()
    def vision_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The vision tower's pooled (CLS) output."""
        pixels = self.preprocess(images)
        output = self.vision_tower(pixel_values=pixels.to(self.device, self.dtype))
        return output.pooler_output.float().cpu().numpy()


def without_start_token(inputs: dict, tokenizer) -> dict:
    """The processor's left-padded inputs with each row's leading <s> turned into padding (the
    processor always adds it), and a column every row pads dropped: as if it had never been added."""
    input_ids, attention_mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    first = attention_mask.argmax(dim=-1)
    rows = torch.arange(input_ids.shape[0])
    if not bool((input_ids[rows, first] == tokenizer.bos_token_id).all()):
        raise AssertionError("IdeficsProcessor no longer starts every prompt with <s>")
    input_ids[rows, first] = tokenizer.pad_token_id
    attention_mask[rows, first] = 0
    keep = 1 if not bool(attention_mask[:, 0].any()) else 0
    out = dict(inputs, input_ids=input_ids[:, keep:], attention_mask=attention_mask[:, keep:])
    out["image_attention_mask"] = inputs["image_attention_mask"][:, keep:]
    return out


def cut_inputs(inputs: dict, prompts: Sequence[Prompt], tokenizer, add_start_token: bool) -> dict:
    """The processor's inputs for prompts cut from the left: each row's tokens less its `cut_tokens`
    (`cut_left`), its pixels less the `cut_images` whose <image> token was cut, re-padded on the
    left, and the image attention mask the processor builds for the cut ids. (The processor cannot
    cut them itself: truncating from the left, it would keep the first images, not the last.)"""
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    input_ids, attention_mask = left_padded([cut_left(ids, p, 1 if add_start_token else 0) for ids, p in zip(rows, prompts)],
                                            tokenizer.pad_token_id)
    pixels, kept = inputs["pixel_values"], [len(p.images) for p in prompts]
    cut_pixels = pixels.new_zeros(len(prompts), max(1, *kept), *pixels.shape[2:])
    for row, prompt in enumerate(prompts):
        cut_pixels[row, : kept[row]] = pixels[row, prompt.cut_images : prompt.cut_images + kept[row]]
    incremental, _ = image_attention_mask_for_packed_input_ids(input_ids, tokenizer, "pt")
    image_mask = incremental_to_binary_attention_mask(incremental, "pt", num_classes=cut_pixels.shape[1])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": cut_pixels,
            "image_attention_mask": image_mask}


def image_attention_mask(input_ids: torch.Tensor, tokenizer, num_images: int) -> torch.Tensor:
    """IdeficsProcessor's (batch, tokens, num_images) mask, vectorised: a token sees the latest
    image at or before it, none before the first image or after an end-of-document token (until
    the next image), and none numbered `num_images` or more."""
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    eod_id = tokenizer.eos_token_id
    is_image = input_ids == image_id
    count = is_image.long().cumsum(-1) - 1
    positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    last_image = torch.where(is_image, positions, -1).cummax(-1).values
    eod_at = torch.where(input_ids == eod_id, positions, -1).cummax(-1).values
    eod_before = torch.cat([torch.full_like(eod_at[:, :1], -1), eod_at[:, :-1]], dim=1)  # seen_eod applies after
    incremental = torch.where(eod_before > last_image, -1, count)
    incremental = torch.where(incremental >= num_images, -1, incremental)
    valid = incremental >= 0
    mask = torch.nn.functional.one_hot(incremental.clamp(min=0), num_classes=num_images)
    return mask * valid.unsqueeze(-1)
