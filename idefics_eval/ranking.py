"""Model requests, ranked: the log-likelihood of each candidate continuation after a shared context.

This is the plain path: one forward pass over context + candidate for every candidate, which the
faster prefix-cached path must match. The images of a query are preprocessed once and shared by
all its candidates; the token and image-attention inputs are built exactly as IdeficsProcessor
builds them (tested equal), so no image is preprocessed once per candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.models.idefics.processing_idefics import (
    image_attention_mask_for_packed_input_ids,
    incremental_to_binary_attention_mask,
)

from .engine import load_image
from .models import LoadedModel
from .prompts import Prompt


def continuation_ids(tokenizer, context: str, full: str) -> tuple[list[int], int]:
    """Token ids of `full` and how many of the last ones are the continuation after `context`.

    The continuation is whatever follows the longest common token prefix of the two texts, so a
    merge across the boundary (e.g. "Answer:" + " no") is scored as the model would see it.
    """
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    common = 0
    for a, b in zip(context_ids, full_ids):
        if a != b:
            break
        common += 1
    common = min(common, len(full_ids) - 1)  # at least one token is scored; <s> always leads
    return full_ids, len(full_ids) - common


class Ranker:
    def __init__(self, loaded: LoadedModel, batch_size: int):
        self.loaded = loaded
        self.batch_size = batch_size

    def pixel_values(self, prompt: Prompt) -> torch.Tensor:
        images = [load_image(ref) for ref in prompt.images]
        pixels = self.loaded.processor.image_processor(images, return_tensors="pt")
        pixels = pixels if isinstance(pixels, torch.Tensor) else pixels["pixel_values"]
        return pixels.to(self.loaded.device, self.loaded.dtype)

    def encode(self, sequences: Sequence[list[int]], pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Left-padded ids, masks and images for sequences that all show the same images."""
        tokenizer = self.loaded.processor.tokenizer
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        incremental, _ = image_attention_mask_for_packed_input_ids(input_ids, tokenizer, "pt")
        image_attention_mask = incremental_to_binary_attention_mask(incremental, "pt", num_classes=max(1, pixels.shape[0]))
        device = self.loaded.device
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
            "pixel_values": pixels.unsqueeze(0).expand(len(sequences), *pixels.shape),
            "image_attention_mask": image_attention_mask.to(device),
        }

    @torch.no_grad()
    def loglikelihoods(self, context: Prompt, continuations: Sequence[Prompt], normalize: str) -> list[float]:
        """Log-likelihood of each `continuations[i]` (context + candidate i) past the context.

        `normalize` "sum" adds the candidate's token log-probabilities; "mean" divides by their count.
        """
        tokenizer = self.loaded.processor.tokenizer
        bos = tokenizer.bos_token
        context_text = context.processor_text(bos)
        requests = [continuation_ids(tokenizer, context_text, full.processor_text(bos)) for full in continuations]
        pixels = self.pixel_values(context)
        results: list[float] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            inputs = self.encode([ids for ids, _ in batch], pixels)
            logits = self.loaded.model(**inputs).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = inputs["input_ids"][:, 1:]
            token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for row, (_, count) in enumerate(batch):
                total = token_logprobs[row, -count:].sum().item()
                results.append(total / count if normalize == "mean" else total)
        return results
