"""Model requests, ranked: the log-likelihood of each candidate continuation after a shared context.

Two paths give the same numbers (tested to 1e-4 in float32):

* `loglikelihoods_full`, the plain definition: one forward pass over context + candidate for every
  candidate. The images of a query are preprocessed once and shared by all its candidates; the
  token and image-attention inputs are built exactly as IdeficsProcessor builds them (tested).
* `loglikelihoods` (the default): the images go through the vision tower and perceiver resampler
  once per run (shared with generation through `image_cache`); the shared token prefix (shots +
  query) runs once with the key/value cache; then only the candidates' own tokens run, in batches, on top of that cache. When every candidate is a single
  token, the next-token distribution after the prefix is read directly and nothing more runs.
  ImageNet's 1,000 class names cost one prefix pass plus a few short batches instead of 1,000
  full passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import copy

import torch
from transformers.models.idefics.processing_idefics import (
    image_attention_mask_for_packed_input_ids,
    incremental_to_binary_attention_mask,
)

from .engine import load_image
from .image_cache import ImageFeatureCache, encode_images, shared_cache
from .models import LoadedModel
from .prompts import Prompt


def continuation_ids(tokenizer, context: str, full: str) -> tuple[list[int], int]:
    """Token ids of `full` and how many of the last ones are the continuation after `context`."""
    return continuations_ids(tokenizer, context, [full])[0]


def continuations_ids(tokenizer, context: str, fulls: Sequence[str]) -> list[tuple[list[int], int]]:
    """For each full text: its token ids and how many of the last ones continue `context`.

    The continuation is whatever follows the longest common token prefix of the two texts, so a
    merge across the boundary (e.g. "Answer:" + " no") is scored as the model would see it.
    """
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    result = []
    for full_ids in tokenizer(list(fulls), add_special_tokens=False)["input_ids"]:
        common = 0
        for a, b in zip(context_ids, full_ids):
            if a != b:
                break
            common += 1
        common = min(common, len(full_ids) - 1)  # at least one token is scored; one always leads (<s> or the image)
        result.append((full_ids, len(full_ids) - common))
    return result


class Ranker:
    def __init__(self, loaded: LoadedModel, batch_size: int, image_cache: ImageFeatureCache | None = None,
                 add_start_token: bool = True):
        self.loaded = loaded
        self.batch_size = batch_size
        self.add_start_token = add_start_token  # every context starts with <s> (the task's add_start_token)
        # Shared with the run's generator: a shot shown to many queries is encoded once.
        # ImageFeatureCache(max_bytes=0) turns caching off.
        self.image_cache = shared_cache(loaded) if image_cache is None else image_cache

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

    def _requests(self, context: Prompt, continuations: Sequence[Prompt]) -> list[tuple[list[int], int]]:
        tokenizer = self.loaded.processor.tokenizer
        bos = tokenizer.bos_token if self.add_start_token else ""
        return continuations_ids(tokenizer, context.processor_text(bos), [full.processor_text(bos) for full in continuations])

    @torch.no_grad()
    def loglikelihoods(self, context: Prompt, continuations: Sequence[Prompt], normalize: str) -> list[float]:
        """Log-likelihood of each `continuations[i]` (context + candidate i) past the context,
        from one cached pass over the shared prefix.

        `normalize` "sum" adds the candidate's token log-probabilities; "mean" divides by their count;
        "sequence_sum" and "sequence_mean" do the same over every token of context + candidate after the
        first (the IDEFICS authors' whole-sequence score: the context's part differs between images).
        """
        requests = self._requests(context, continuations)
        # The prefix every request shares (a candidate can merge with the context's last token).
        shared = min(len(ids) - count for ids, count in requests)
        prefix = requests[0][0][:shared]
        assert all(ids[:shared] == prefix for ids, _ in requests)
        model = self.loaded.model
        images = self.perceiver_embeddings(context)
        image_key = "perceiver_embeddings" if model.config.use_resampler else "image_encoder_embeddings"
        inputs = self.encode([prefix], images.new_zeros(images.shape[0], 1))
        prefix_out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           **{image_key: images}, image_attention_mask=inputs["image_attention_mask"],
                           use_cache=True)
        prefix_logprobs = torch.log_softmax(prefix_out.logits[0].float(), dim=-1)
        first = prefix_logprobs[-1]  # predicts token `shared`
        whole = normalize in WHOLE_SEQUENCE
        # The shared prefix's own tokens (after its first), counted by the whole-sequence scores only.
        prefix_total = prefix_logprobs[:-1].gather(-1, torch.tensor(prefix[1:], device=first.device)[:, None]).sum().item() if whole else 0.0
        last_image_row = inputs["image_attention_mask"][0, -1]
        # The candidates' tokens see only the context's last image: give the cross-attention just that
        # one (the others would be masked out anyway), not every image once per candidate row.
        seen = last_image_row.nonzero().flatten()
        seen = seen if len(seen) else torch.zeros(1, dtype=torch.long, device=last_image_row.device)
        candidate_images, candidate_mask = images[seen], last_image_row[seen]
        results: list[float] = [0.0] * len(requests)
        pending = []
        for index, (ids, count) in enumerate(requests):
            if len(ids) - shared == 1:  # a single-token remainder: read it off the prefix's last position
                results[index] = prefix_total + first[ids[shared]].item()
            else:
                pending.append(index)
        pending.sort(key=lambda i: len(requests[i][0]))
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start : start + self.batch_size]
            remainders = [requests[i][0][shared:] for i in batch]
            width = max(len(r) for r in remainders)
            pad = self.loaded.processor.tokenizer.pad_token_id
            input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in remainders], device=self.loaded.device)
            output = model(
                input_ids=input_ids,
                attention_mask=torch.ones((len(batch), shared + width), dtype=torch.long, device=self.loaded.device),
                position_ids=torch.arange(shared, shared + width, device=self.loaded.device).expand(len(batch), -1),
                **{image_key: candidate_images.repeat(len(batch), 1, 1)},  # (rows x images, latents, dim)
                image_attention_mask=candidate_mask.expand(len(batch), width, -1),
                cache=_expanded(prefix_out.cache, len(batch)),
                use_cache=True,
            )
            logprobs = torch.log_softmax(output.logits.float(), dim=-1)
            for row, index in enumerate(batch):
                remainder, count = remainders[row], requests[index][1]
                # Only the candidate's own (last `count`) tokens are scored; a remainder can start with
                # context tokens when another candidate merged into the context earlier.
                total = prefix_total
                for position in range(0 if whole else len(remainder) - count, len(remainder)):
                    row_logprobs = first if position == 0 else logprobs[row, position - 1]
                    total += row_logprobs[remainder[position]].item()
                results[index] = total
        return [_normalized(total, ids, count, normalize) for total, (ids, count) in zip(results, requests)]

    def perceiver_embeddings(self, context: Prompt) -> torch.Tensor:
        """The context's images through the vision tower and perceiver resampler, once per run (the
        image cache): (images, latents, dim)."""
        return encode_images(self.loaded, context.images, self.image_cache)

    @torch.no_grad()
    def loglikelihoods_full(self, context: Prompt, continuations: Sequence[Prompt], normalize: str) -> list[float]:
        """The plain definition: one full forward pass over context + candidate for each candidate."""
        requests = self._requests(context, continuations)
        pixels = self.pixel_values(context)
        results: list[float] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            inputs = self.encode([ids for ids, _ in batch], pixels)
            logits = self.loaded.model(**inputs).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = inputs["input_ids"][:, 1:]
            token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for row, (ids, count) in enumerate(batch):
                scored = len(ids) - 1 if normalize in WHOLE_SEQUENCE else count  # left-padded: the last ones are real
                results.append(_normalized(token_logprobs[row, -scored:].sum().item(), ids, count, normalize))
        return results


WHOLE_SEQUENCE = ("sequence_sum", "sequence_mean")


def _normalized(total: float, ids: list[int], count: int, normalize: str) -> float:
    """A summed log-likelihood as `normalize` asks: the mean divides by the tokens summed."""
    if normalize == "mean":
        return total / count
    return total / (len(ids) - 1) if normalize == "sequence_mean" else total


def _expanded(cache, batch: int):
    """The prefix's key/value cache seen by `batch` rows, without copying it (updates concatenate)."""
    expanded = copy.copy(cache)
    expanded.layers = []
    for layer in cache.layers:
        clone = copy.copy(layer)
        clone.keys = layer.keys.expand(batch, *layer.keys.shape[1:])
        clone.values = layer.values.expand(batch, *layer.values.shape[1:])
        expanded.layers.append(clone)
    return expanded
