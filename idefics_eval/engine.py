"""Model requests: open-ended generation over batches of interleaved prompts.

This is the plain path: `model.generate` on pixel inputs, which every faster path must match.
Requests are sorted by (number of images, prompt length) before batching, so padding stays small
and the largest batch runs first (an out-of-memory error shows up at once, not after an hour);
answers come back in request order. Batches are padded on the left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from PIL import Image

from .examples import ImageRef
from .models import LoadedModel
from .prompts import Prompt

# The IDEFICS authors cut generations at the first of these (PROTOCOL.md, generation settings).
STOP_WORDS = ("Question", "Answer", "Image", "Caption", "User", "<end_of_utterance>", "\n")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 15
    num_beams: int = 3
    stop_words: tuple[str, ...] = STOP_WORDS
    first_line: bool = True
    strip_quotes: bool = False


@lru_cache(maxsize=1024)
def load_image(ref: ImageRef) -> Image.Image:
    """Decoded images, shared between the queries that show the same shot."""
    return ref.load()


def banned_token_ids(tokenizer) -> list[list[int]]:
    """Newlines and the image tokens may never be generated (IDEFICS authors' banned words).

    Every vocabulary entry whose text contains a newline is banned, whatever the tokenizer's
    merges: LLaMA's `<0x0A>` as much as a byte-level BPE's merged tokens.
    """
    banned = {tokenizer.convert_tokens_to_ids(token) for token in ("<image>", "<fake_token_around_image>")}
    for token_id in range(len(tokenizer)):
        if "\n" in tokenizer.decode([token_id]):
            banned.add(token_id)
    return [[token_id] for token_id in sorted(banned)]


def cut_at_stop_words(text: str, stop_words: Sequence[str]) -> str:
    cut = min((text.find(word) for word in stop_words if word in text), default=len(text))
    return text[:cut].strip()


def postprocess(text: str, settings: GenerationSettings) -> str:
    """A generation as the metric sees it: first line, cut at the first stop word, quotes removed."""
    if settings.first_line:
        text = text.strip().split("\n", 1)[0]
    text = cut_at_stop_words(text, settings.stop_words)
    if settings.strip_quotes and len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def count_tokens(loaded: LoadedModel, prompt: Prompt) -> int:
    tokenizer = loaded.processor.tokenizer
    return len(tokenizer(prompt.processor_text(tokenizer.bos_token), add_special_tokens=False)["input_ids"])


class Generator:
    def __init__(self, loaded: LoadedModel, settings: GenerationSettings):
        self.loaded = loaded
        self.settings = settings
        self.bad_words_ids = banned_token_ids(loaded.processor.tokenizer)

    def encode(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        batch = [[item if isinstance(item, str) else load_image(item) for item in p.items] for p in prompts]
        inputs = self.loaded.processor(text=batch, return_tensors="pt", padding="longest")
        inputs = {key: value.to(self.loaded.device) for key, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.loaded.dtype)
        return inputs

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        inputs = self.encode(prompts)
        tokenizer = self.loaded.processor.tokenizer
        output = self.loaded.model.generate(
            **inputs,
            max_new_tokens=self.settings.max_new_tokens,
            num_beams=self.settings.num_beams,
            do_sample=False,
            no_repeat_ngram_size=0,
            bad_words_ids=self.bad_words_ids,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [postprocess(text, self.settings) for text in texts]


def batches_by_length(lengths: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Request indices grouped into batches, longest (most images, then most tokens) first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i][0], -lengths[i][1], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate_all(
    generator: Generator,
    prompts: Sequence[Prompt],
    lengths: Sequence[int],
    batch_size: int,
    on_batch: Callable[[list[int], list[str]], None],
) -> None:
    """Generate for every prompt in length-sorted batches; `on_batch(indices, answers)` after each."""
    sizes = [(len(p.images), n) for p, n in zip(prompts, lengths)]
    for indices in batches_by_length(sizes, batch_size):
        on_batch(indices, generator.generate([prompts[i] for i in indices]))
