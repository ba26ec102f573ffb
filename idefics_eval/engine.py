"""Model requests: open-ended generation over batches of interleaved prompts.

Two paths give the same token ids (tested: greedy and 3-beam search, batch sizes 1 and 8, 0 to 8
images a prompt):

* the plain path (`Generator.generate_plain`): `model.generate` on the family processor's inputs
  (`ModelAdapter.build_inputs`), the reference. For IDEFICS in transformers 5.x it runs the
  perceiver resampler over every image at every decoding step, and `generate` cannot take
  precomputed image features at all.
* the fast path (`Generator.generate_fast`, the default where the family's adapter allows it):
  every image encoded once per run (`image_cache`), what the adapter prepares once per batch (for
  IDEFICS the gated cross-attention's image keys and values, `models.gated_cross_attention`), the
  prompt run once with the key/value cache, then our own greedy or beam-search loop over the
  adapter's forward pass, mirroring GenerationMixin's `_sample` and `_beam_search` tensor for
  tensor. Beam search keeps each prompt's cache once, its beams side by side in one row, so no
  cache is copied per beam or gathered into a new beam order (`beam_decode`).
The loops know no model family: the adapter (`models.base.ModelAdapter`) builds the inputs and runs
the forward pass.
Requests are sorted by (number of images, prompt length) before batching, so padding stays small
and the largest batch runs first (an out-of-memory error shows up at once, not after an hour);
answers come back in request order. Batches are padded on the left. `--batch-size auto` runs the
longest requests at batch sizes 1, 2, 4, ... until one runs out of GPU memory and keeps the last that
fit (`find_batch_size`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from PIL import Image

from .errors import UserError
from .examples import ImageRef
from .image_cache import ImageFeatureCache, encode_images, shared_cache
from .models import LoadedModel
from .models.base import ModelAdapter
from .prompts import Prompt
from .tasks import STOP_WORDS


@dataclass(frozen=True)
class GenerationSettings:
    """How a task's answers are generated (and, for `add_start_token`, how every request starts).

    `length_penalty` and `early_stopping` mean what they mean to transformers' beam search: a
    finished hypothesis scores sum(log p) / new_tokens ** length_penalty; early_stopping True stops
    a prompt once it has num_beams finished hypotheses, False stops when the best running beam
    (at today's length) cannot beat the worst finished one, "never" assumes it may grow to the
    maximum length first. These are the task's values, not the model's generation config.
    `banned_words`: None bans every token whose text holds a newline, and the image tokens
    (`banned_token_ids`); a tuple bans each word as tokenised for `bad_words_ids`
    (`banned_word_ids`), nothing else.
    """

    max_new_tokens: int = 15
    num_beams: int = 3
    stop_words: tuple[str, ...] = STOP_WORDS
    first_line: bool = True
    strip_quotes: bool = False
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never"
    banned_words: tuple[str, ...] | None = None
    add_start_token: bool = True  # prompts start with the tokenizer's <s>, as the family's processor adds it


def load_image(ref: ImageRef) -> Image.Image:
    """Decoded images, shared between the queries that show the same shot. Keyed by the image's
    bytes (`ref.digest()`) beside the ref: an image edited in place (between two `evaluate` calls
    of a training loop), or another dataset's image under the same key, is decoded afresh. A ref
    without `digest` could only be hashed by decoding it, so it is decoded each time."""
    if getattr(ref, "digest", None) is None:
        return ref.load()
    return _decoded(ref.digest(), ref)


@lru_cache(maxsize=1024)
def _decoded(digest: str, ref: ImageRef) -> Image.Image:
    return ref.load()


def banned_token_ids(tokenizer, image_tokens: Sequence[str] = ("<image>", "<fake_token_around_image>")) -> list[list[int]]:
    """Newlines and the image tokens (the adapter's `image_tokens`) may never be generated (IDEFICS
    authors' banned words).

    Every vocabulary entry whose text contains a newline is banned, whatever the tokenizer's
    merges: LLaMA's `<0x0A>` as much as a byte-level BPE's merged tokens.
    """
    banned = {tokenizer.convert_tokens_to_ids(token) for token in image_tokens}
    for token_id in range(len(tokenizer)):
        if "\n" in tokenizer.decode([token_id]):
            banned.add(token_id)
    return [[token_id] for token_id in sorted(banned)]


def banned_word_ids(tokenizer, words: Sequence[str]) -> list[list[int]]:
    """`bad_words_ids` for `words`, tokenised as transformers documents it (and as the IDEFICS
    authors did): `tokenizer(word, add_special_tokens=False).input_ids`, so a LLaMA tokenizer bans
    "\\n" as the pair `▁`, `<0x0A>` (a newline right after a space piece), not every newline."""
    ids = tokenizer(list(words), add_special_tokens=False)["input_ids"] if words else []
    for word, word_ids in zip(words, ids):
        if not word_ids:
            raise UserError(f"banned word {word!r} is no token at all for this tokenizer; remove it from generation.banned_words")
    return [list(word_ids) for word_ids in ids]


def start_token(tokenizer, settings: GenerationSettings) -> str:
    """The text a request starts with: the tokenizer's <s>, or nothing."""
    return tokenizer.bos_token if settings.add_start_token else ""


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


def token_ids(loaded: LoadedModel, prompt: Prompt, add_start_token: bool = True) -> list[int]:
    """The prompt's token ids as the family's processor encodes them (tested equal), with or
    without the leading <s> (the task's add_start_token), less any tokens cut from its left."""
    return loaded.adapter.token_ids(prompt, add_start_token)


def count_tokens(loaded: LoadedModel, prompt: Prompt, add_start_token: bool = True) -> int:
    return len(token_ids(loaded, prompt, add_start_token))


class Generator:
    """Open-ended generation for batches of prompts.

    `generate` takes the fast path (`generate_fast`) whenever the model's generation config holds
    nothing the fast loop does not implement, else the plain path (`generate_plain`, `model.generate`
    on pixels, the reference). Both give the same token ids (tests: greedy and beam search, batch
    sizes 1 and 8, prompts with 0 to 8 images).
    """

    def __init__(self, loaded: LoadedModel, settings: GenerationSettings, image_cache: ImageFeatureCache | None = None,
                 fast: bool = True):
        self.loaded = loaded
        self.adapter: ModelAdapter = loaded.adapter
        self.settings = settings
        tokenizer = loaded.processor.tokenizer
        words = settings.banned_words
        self.bad_words_ids = banned_token_ids(tokenizer, self.adapter.image_tokens) if words is None else banned_word_ids(tokenizer, words)
        self.image_cache = shared_cache(loaded) if image_cache is None else image_cache
        self.fast = fast and fast_path_supported(loaded.model.generation_config) and self.adapter.fast_generation
        if fast and not self.adapter.fast_generation:
            note_once(self.adapter.fallback_note("generation"))

    def encode(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        """`model.generate`'s inputs: the family's processor on the decoded images."""
        return self.adapter.build_inputs(prompts, self.settings.add_start_token)

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        return [postprocess(text, self.settings) for text in self.generate_raw(prompts)]

    def generate_raw(self, prompts: Sequence[Prompt]) -> list[str]:
        """The decoded generations before `postprocess` (the sample log keeps both)."""
        ids = self.generate_ids_fast(prompts) if self.fast else self.generate_ids_plain(prompts)
        return self.loaded.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def generate_plain(self, prompts: Sequence[Prompt]) -> list[str]:
        return self.decode(self.generate_ids_plain(prompts))

    def generate_fast(self, prompts: Sequence[Prompt]) -> list[str]:
        return self.decode(self.generate_ids_fast(prompts))

    def decode(self, new_tokens: torch.Tensor) -> list[str]:
        texts = self.loaded.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [postprocess(text, self.settings) for text in texts]

    @torch.no_grad()
    def generate_ids_plain(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """The new tokens of `model.generate` on the processor's pixel inputs (the reference)."""
        inputs = self.encode(prompts)
        tokenizer = self.loaded.processor.tokenizer
        output = self.loaded.model.generate(
            **inputs,
            max_new_tokens=self.settings.max_new_tokens,
            num_beams=self.settings.num_beams,
            do_sample=False,
            no_repeat_ngram_size=0,
            length_penalty=self.settings.length_penalty,
            early_stopping=self.settings.early_stopping,
            bad_words_ids=self.bad_words_ids or None,  # generate refuses an empty list
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        return output[:, inputs["input_ids"].shape[1] :]

    # -- the fast path ------------------------------------------------------------------------

    def text_inputs(self, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
        """The ids and masks `encode` gives (left-padded; tested equal), without touching any pixels."""
        return self.adapter.text_inputs(prompts, self.settings.add_start_token)

    def image_features(self, prompts: Sequence[Prompt]):
        """The batch's image features, each image encoded once per run (the image cache)."""
        return self.adapter.image_features(prompts, lambda refs: encode_images(self.loaded, refs, self.image_cache))

    @torch.no_grad()
    def generate_ids_fast(self, prompts: Sequence[Prompt], *, features=None) -> torch.Tensor:
        """The same new tokens as `generate_ids_plain`, from cached image features and our own loop."""
        inputs = self.text_inputs(prompts)
        if features is None:
            features = self.image_features(prompts)
        decode = greedy_decode if self.settings.num_beams == 1 else beam_decode
        with self.adapter.decoding(inputs, features):
            return decode(self, inputs, features)

    def forward(self, inputs: dict[str, torch.Tensor], features, cache=None, positions: int = 1):
        """One forward pass on cached image features; logits of the last `positions` positions.
        A 4-d boolean `attention_mask` (batch, 1, queries, keys) says which keys each query sees
        (with `position_ids`); it is handed to the attention as the model's implementation takes it."""
        attention_mask = inputs["attention_mask"]
        if attention_mask.dim() == 4 and self.loaded.model.config._attn_implementation == "eager":
            attention_mask = torch.zeros(attention_mask.shape, dtype=self.loaded.dtype, device=attention_mask.device
                                         ).masked_fill(~attention_mask, torch.finfo(self.loaded.dtype).min)
            inputs = dict(inputs, attention_mask=attention_mask)
        return self.adapter.forward(inputs, features, cache, logits_to_keep=positions)

    def token_bias(self, vocab_size: int) -> torch.Tensor:
        """What the single-token `bad_words_ids` add to every score (NoBadWordsLogitsProcessor:
        -inf at the banned tokens, eos never banned)."""
        eos = self.loaded.processor.tokenizer.eos_token_id
        bias = torch.zeros(vocab_size, dtype=torch.float, device=self.loaded.device)
        banned = [ids[0] for ids in self.bad_words_ids if len(ids) == 1 and ids != [eos]]
        bias[banned] = float("-inf")
        return bias

    @property
    def long_words(self) -> list[list[int]]:
        """The banned words of more than one token (banned only after their other tokens)."""
        return [ids for ids in self.bad_words_ids if len(ids) > 1]

    def sequence_bias(self, tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """What the longer `bad_words_ids` add: -inf at a word's last token in every row whose
        tokens so far (prompt, padding and answer: rows x length) end with the word's other
        tokens, as NoBadWordsLogitsProcessor matches them."""
        bias = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.float, device=tokens.device)
        for ids in self.long_words:
            if len(ids) - 1 <= tokens.shape[1]:
                prefix = torch.tensor(ids[:-1], device=tokens.device)
                matching = (tokens[:, -len(prefix):] == prefix).all(dim=-1)
                bias[matching, ids[-1]] = float("-inf")
        return bias


# Generation settings the fast loop implements: anything else falls back to `model.generate`.
_SUPPORTED_DEFAULTS = {
    "repetition_penalty": (None, 1.0),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "num_beam_groups": (None, 1),
    "diversity_penalty": (None, 0.0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None, []),
    "begin_suppress_tokens": (None, []),
    "exponential_decay_length_penalty": (None,),
    "sequence_bias": (None,),
    "renormalize_logits": (None, False),
    "encoder_repetition_penalty": (None, 1.0),
    "max_time": (None,),
    "stop_strings": (None,),
    "prefill_chunk_size": (None,),
    "num_return_sequences": (None, 1),
    "constraints": (None,),
    "force_words_ids": (None,),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "watermarking_config": (None,),
    "cache_implementation": (None, "dynamic"),
}


def fast_path_supported(generation_config) -> bool:
    """Whether the model's own generation config adds nothing our loop leaves out."""
    for name, allowed in _SUPPORTED_DEFAULTS.items():
        if getattr(generation_config, name, None) not in allowed:
            return False
    return True


_NOTED: set[str] = set()


def note_once(note: str | None) -> None:
    """A fallback to the plain path, said once per process on stderr."""
    if note and note not in _NOTED:
        _NOTED.add(note)
        print(note, file=sys.stderr)


def greedy_decode(generator: Generator, inputs: dict, features: torch.Tensor) -> torch.Tensor:
    """GenerationMixin._sample without sampling: argmax of the biased logits; a finished row gets
    the pad token; stop at eos in every row or after max_new_tokens."""
    tokenizer = generator.loaded.processor.tokenizer
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    attention_mask = inputs["attention_mask"]
    out = generator.forward(inputs, features)
    cache = out.cache
    step_inputs = generator.adapter.step_inputs(inputs)
    bias = None
    unfinished = torch.ones(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
    tokens = []
    for step in range(generator.settings.max_new_tokens):
        logits = out.logits[:, -1].to(dtype=torch.float32, copy=True)
        del out
        if bias is None:
            bias = generator.token_bias(logits.shape[-1])
        if generator.long_words:
            logits = logits + generator.sequence_bias(torch.cat([inputs["input_ids"], *(t[:, None] for t in tokens)], dim=1), logits.shape[-1])
        next_tokens = torch.argmax(logits + bias, dim=-1)
        next_tokens = next_tokens * unfinished + pad * (1 - unfinished)
        tokens.append(next_tokens)
        unfinished = unfinished & ~(next_tokens == eos)
        if step + 1 == generator.settings.max_new_tokens or unfinished.max() == 0:
            break
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=-1)
        out = generator.forward({"input_ids": next_tokens[:, None], "attention_mask": attention_mask, **step_inputs}, features,
                                cache=cache)
    return torch.stack(tokens, dim=1)


def beam_decode(generator: Generator, inputs: dict, features: torch.Tensor) -> torch.Tensor:
    """GenerationMixin._beam_search, step for step and tensor for tensor (same scores, length
    penalty, early-stopping heuristic and top-k tie-breaking), with the prompt's key/value cache
    held once per prompt and never gathered.

    `generate` gives every beam a row of its own (a copy of the prompt's cache each) and gathers the
    whole cache into the new beam order at every step. Here a prompt's beams are the positions of
    one row instead (`BeamSteps`): each step feeds the prompt's `num_beams` latest tokens side by
    side, appending them to its row of the cache, and an attention mask lets each beam see the
    prompt and the cache slots of its own ancestors' tokens (`ancestry`: which generated slots each
    beam descends through). Choosing new beams reorders that small mask, not the cache; the prompt
    is attended to, and the images' cross-attention computed, once per prompt rather than per beam.
    """
    tokenizer = generator.loaded.processor.tokenizer
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    length_penalty = generator.settings.length_penalty
    early_stopping = generator.settings.early_stopping
    num_beams = generator.settings.num_beams
    max_new = generator.settings.max_new_tokens
    batch, prompt_len = inputs["input_ids"].shape
    max_length = prompt_len + max_new
    device = inputs["input_ids"].device
    beams_to_keep = 2 * num_beams  # max(2, 1 + one eos token) * num_beams
    top_num_beam_mask = torch.cat([torch.ones(num_beams, dtype=torch.bool), torch.zeros(beams_to_keep - num_beams, dtype=torch.bool)]).to(device)

    out = generator.forward(inputs, features)
    cache = out.cache
    logits = out.logits[:, -1].to(dtype=torch.float32, copy=True).repeat_interleave(num_beams, dim=0)
    del out
    step_inputs = BeamSteps(inputs, generator.adapter.step_inputs(inputs), num_beams, max_new)

    fill = pad if pad else eos  # `pad_token_id or eos_token_id[0]`, as generate fills unused slots
    running_sequences = torch.full((batch, num_beams, max_new), fill, dtype=torch.int64, device=device)
    sequences = running_sequences.clone()
    running_beam_scores = torch.zeros((batch, num_beams), dtype=torch.float, device=device)
    running_beam_scores[:, 1:] = -1e9
    beam_scores = torch.full((batch, num_beams), -1e9, dtype=torch.float, device=device)
    is_sent_finished = torch.zeros((batch, num_beams), dtype=torch.bool, device=device)
    unsatisfied = torch.ones((batch, 1), dtype=torch.bool, device=device)
    running_beam_indices = torch.full((batch, num_beams, max_new), -1, dtype=torch.int32, device=device)
    beam_indices = running_beam_indices.clone()
    bias = generator.token_bias(logits.shape[-1])
    batch_offset = torch.arange(batch, device=device).view(-1, 1) * num_beams

    prompt_ids = inputs["input_ids"].repeat_interleave(num_beams, dim=0)
    cur_len = prompt_len
    while True:
        step = cur_len - prompt_len
        log_probs = torch.nn.functional.log_softmax(logits, dim=-1) + bias
        if generator.long_words:
            history = torch.cat([prompt_ids, running_sequences[:, :, :step].reshape(batch * num_beams, step)], dim=1)
            log_probs = log_probs + generator.sequence_bias(history, vocab_size=log_probs.shape[-1])
        vocab_size = log_probs.shape[-1]
        log_probs = log_probs.view(batch, num_beams, vocab_size) + running_beam_scores[:, :, None]
        log_probs = log_probs.reshape(batch, -1)

        # top-k continuations over all beams
        topk_log_probs, topk_indices = torch.topk(log_probs, k=beams_to_keep)
        topk_beams = topk_indices // vocab_size
        topk_running_beam_indices = _gather(running_beam_indices, topk_beams)
        topk_running_sequences = _gather(running_sequences, topk_beams)
        topk_ids = topk_indices % vocab_size
        topk_running_sequences[:, :, step] = topk_ids
        topk_running_beam_indices[:, :, step] = (topk_beams + batch_offset).to(torch.int32)

        # which continuations stop: eos, or the length limit
        hits = topk_ids == eos
        if cur_len + 1 >= max_length:
            hits = torch.ones_like(hits)

        # the best num_beams unfinished continuations run on
        topk_running_log_probs = topk_log_probs + hits.to(torch.float32) * -1.0e9
        next_topk = torch.topk(topk_running_log_probs, k=num_beams)[1]
        running_sequences = _gather(topk_running_sequences, next_topk)
        running_beam_scores = _gather(topk_running_log_probs, next_topk)
        running_beam_indices = _gather(topk_running_beam_indices, next_topk)

        # finished continuations among the top num_beams join the finished set if good enough
        just_finished = hits & top_num_beam_mask[None, :]
        finished_scores = topk_log_probs / ((cur_len + 1 - prompt_len) ** length_penalty)
        full = torch.all(is_sent_finished, axis=-1, keepdims=True) & (early_stopping is True)
        finished_scores += full.to(torch.float32) * -1.0e9
        finished_scores += (~unsatisfied).to(torch.float32) * -1.0e9
        finished_scores += (~just_finished) * -1.0e9
        merged_scores = torch.cat((beam_scores, finished_scores), dim=1)
        keep = torch.topk(merged_scores, k=num_beams)[1]
        sequences = _gather(torch.cat((sequences, topk_running_sequences), dim=1), keep)
        beam_scores = _gather(merged_scores, keep)
        beam_indices = _gather(torch.cat((beam_indices, topk_running_beam_indices), dim=1), keep)
        is_sent_finished = _gather(torch.cat((is_sent_finished, just_finished), dim=1), keep)

        cur_len += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_length = max_length - prompt_len
        else:
            best_length = cur_len - prompt_len
        best_running = running_beam_scores[:, :1] / (best_length**length_penalty)
        worst_finished = torch.where(is_sent_finished, torch.min(beam_scores, dim=1, keepdim=True)[0], -1.0e9)
        unsatisfied = unsatisfied & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        go_on = (bool(torch.any(unsatisfied)) and not (bool(torch.all(is_sent_finished)) and early_stopping is True)
                 and not bool(torch.all(hits)))
        if not go_on:
            break
        parents = running_beam_indices[..., step].long() - batch_offset  # each new beam's beam of the last step
        fed = step_inputs.next(running_sequences[:, :, step], parents)
        out = generator.forward(fed, features, cache=cache, positions=num_beams)
        logits = out.logits.reshape(batch * num_beams, -1).to(dtype=torch.float32, copy=True)
        del out

    best = sequences[:, 0]
    best_indices = beam_indices[:, 0]
    generated = int((best_indices + 1).bool().sum(dim=1).max())
    return best[:, :generated]


class BeamSteps:
    """The inputs of beam search's decoding steps when a prompt's beams are positions of one row.

    Step s feeds (batch, num_beams) tokens at cache slots prompt_len + s * num_beams + beam, all at
    the same position id (the beams are equally long). Beam b's query sees the prompt (less its
    padding) and the slots of the tokens its own line was built from, its latest included: its
    parent's slots plus its own.
    """

    def __init__(self, inputs: dict, step_inputs: dict, num_beams: int, max_new: int):
        batch = inputs["input_ids"].shape[0]
        device = inputs["input_ids"].device
        self.num_beams = num_beams
        self.prompt_mask = inputs["attention_mask"].bool()[:, None, :].expand(batch, num_beams, -1)
        self.ancestry = torch.zeros(batch, num_beams, num_beams * max_new, dtype=torch.bool, device=device)
        self.own_slot = torch.eye(num_beams, dtype=torch.bool, device=device).expand(batch, -1, -1)
        self.next_position = inputs["attention_mask"].sum(dim=-1, keepdim=True)  # as the model counts them: non-padding tokens
        # What each generated token carries beside its id (the adapter's `step_inputs`, one token a row), for every beam.
        self.extra = {key: value.expand(-1, num_beams, *value.shape[2:]) for key, value in step_inputs.items()}
        self.steps = 0

    def next(self, tokens: torch.Tensor, parents: torch.Tensor):
        """The inputs (input_ids, a 4-d attention mask, position_ids and the adapter's own) feeding
        `tokens` (batch, num_beams), where new beam b continues beam `parents[:, b]` of the last step."""
        start = self.steps * self.num_beams
        self.ancestry = _gather(self.ancestry, parents)
        self.ancestry[:, :, start : start + self.num_beams] = self.own_slot
        self.steps += 1
        seen = torch.cat([self.prompt_mask, self.ancestry[:, :, : start + self.num_beams]], dim=-1)
        positions = (self.next_position + self.steps - 1).expand(-1, self.num_beams)
        return {"input_ids": tokens, "attention_mask": seen[:, None], "position_ids": positions, **self.extra}


def _gather(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def longest_first(lengths: Sequence[tuple[int, int]]) -> list[int]:
    """Request indices, longest (most images, then most tokens) first."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i][0], -lengths[i][1], i))


def batches_by_length(lengths: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Request indices grouped into batches, longest (most images, then most tokens) first."""
    order = longest_first(lengths)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


AUTO_BATCH_LIMIT = 64  # the largest batch `--batch-size auto` tries
AUTO_BATCH_OFF_GPU = 8  # `--batch-size auto` without a CUDA device: no probing


def find_batch_size(try_batch: Callable[[int], object], limit: int) -> int:
    """The largest of 1, 2, 4, 8, ... (and `limit` itself) up to `limit` for which `try_batch(size)`
    does not run out of GPU memory.

    `try_batch` should run the run's worst case at that size (its longest requests), so the batches
    the run then makes fit too. Sizes grow until one runs out of memory; the cache allocator's
    free blocks are released after that failure, before the run goes on at the last size that fit.
    """
    fits, size = 0, 1
    while True:
        out_of_memory = False
        try:
            try_batch(size)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
        if out_of_memory:  # outside the except block: the failed batch's tensors are released by now
            torch.cuda.empty_cache()
            break
        fits = size
        if size >= limit:
            break
        size = min(2 * size, limit)
    if fits == 0:
        raise UserError(
            "the model does not fit in GPU memory with one example at a time; "
            "load it in a smaller --dtype (bfloat16, float16) or split it over GPUs with --device-map auto"
        )
    return fits


def resolve_batch_size(batch_size: int | str, device: torch.device,
                       worst_case: Callable[[], tuple[Callable[[int], object], int]]) -> int:
    """`batch_size`, or for "auto": AUTO_BATCH_OFF_GPU off a CUDA device, else the largest size that
    fits (`find_batch_size`). `worst_case()` gives the function that runs the run's longest requests
    at a given batch size, and how many rows those requests can fill (the largest size tried, at
    most AUTO_BATCH_LIMIT); it is called only when probing."""
    if batch_size != "auto":
        return int(batch_size)
    if device.type != "cuda":
        return AUTO_BATCH_OFF_GPU
    try_batch, rows = worst_case()
    return find_batch_size(try_batch, max(1, min(AUTO_BATCH_LIMIT, rows)))


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
