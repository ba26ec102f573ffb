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

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.models.idefics.processing_idefics import (
    image_attention_mask_for_packed_input_ids,
    incremental_to_binary_attention_mask,
)

from .engine import load_image
from .image_cache import ImageFeatureCache, encode_images, shared_cache
from .models import LoadedModel
from .prompts import FAKE_TOKEN, Prompt


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
        self._last_plan: tuple | None = None  # (key, _Plan) of the previous query: _plan
        self._last_tails: tuple | None = None  # (key, tail ids and counts) of the previous query: _requests_reused

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

    def _texts(self, context: Prompt, continuations: Sequence[Prompt]) -> tuple[str, list[str]]:
        bos = self.loaded.processor.tokenizer.bos_token if self.add_start_token else ""
        return context.processor_text(bos), [full.processor_text(bos) for full in continuations]

    def _requests(self, context: Prompt, continuations: Sequence[Prompt]) -> list[tuple[list[int], int]]:
        return continuations_ids(self.loaded.processor.tokenizer, *self._texts(context, continuations))

    def _requests_reused(self, context: Prompt, continuations: Sequence[Prompt]) -> list[tuple[list[int], int]]:
        """`_requests`, with the candidates' tokens reused from the previous query where they can be.

        The tokenizer splits its text at special tokens, so what follows the context's last image
        marker tokenises alone: the ids are the head's (context up to that marker) followed by the
        tails' (the rest of each text), and the tails repeat from query to query when the candidates
        are a task's fixed class list. The split is checked against the plain tokenisation the first
        time a set of tails is met and used only if it gives the same ids."""
        tokenizer = self.loaded.processor.tokenizer
        context_text, fulls = self._texts(context, continuations)
        cut = context_text.rfind(FAKE_TOKEN) + len(FAKE_TOKEN)
        head = context_text[:cut]
        if cut < len(FAKE_TOKEN) or not all(full.startswith(head) for full in fulls):
            return continuations_ids(tokenizer, context_text, fulls)
        key = (context_text[cut:], tuple(full[cut:] for full in fulls))
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        if self._last_tails is not None and self._last_tails[0] == key:
            return [(head_ids + ids, count) for ids, count in self._last_tails[1]]
        plain = continuations_ids(tokenizer, context_text, fulls)
        tails = [(ids[1:], count) for ids, count in continuations_ids(tokenizer, FAKE_TOKEN + key[0], [FAKE_TOKEN + t for t in key[1]])]
        if all(head_ids + ids == full_ids and count == full_count for (ids, count), (full_ids, full_count) in zip(tails, plain)):
            self._last_tails = (key, tails)
        return plain

    def _prefix(self, context: Prompt, requests: list[tuple[list[int], int]], whole: bool) -> "_Prefix":
        """One pass over the tokens every request shares (a candidate can merge with the context's
        last token), with the key/value cache kept for the candidates' own tokens."""
        shared = min(len(ids) - count for ids, count in requests)
        prefix = requests[0][0][:shared]
        assert all(ids[:shared] == prefix for ids, _ in requests)
        images = self.perceiver_embeddings(context)
        inputs = self.encode([prefix], images.new_zeros(images.shape[0], 1))
        output = self.loaded.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                   **{self._image_key: images}, image_attention_mask=inputs["image_attention_mask"],
                                   use_cache=True)
        logprobs = torch.log_softmax(output.logits[0].float(), dim=-1)
        # The shared prefix's own tokens (after its first), counted by the whole-sequence scores only.
        total = logprobs[:-1].gather(-1, torch.tensor(prefix[1:], device=logprobs.device)[:, None]).sum().item() if whole else 0.0
        last_image_row = inputs["image_attention_mask"][0, -1]
        # The candidates' tokens see only the context's last image: give the cross-attention just that
        # one (the others would be masked out anyway), not every image once per candidate row.
        seen = last_image_row.nonzero().flatten()
        seen = seen if len(seen) else torch.zeros(1, dtype=torch.long, device=last_image_row.device)
        return _Prefix(shared, logprobs[-1], total, output.cache, images[seen], last_image_row[seen])

    @property
    def _image_key(self) -> str:
        return "perceiver_embeddings" if self.loaded.model.config.use_resampler else "image_encoder_embeddings"

    @torch.no_grad()
    def loglikelihoods(self, context: Prompt, continuations: Sequence[Prompt], normalize: str) -> list[float]:
        """Log-likelihood of each `continuations[i]` (context + candidate i) past the context,
        from one cached pass over the shared prefix and a few packed passes over the candidates.

        `normalize` "sum" adds the candidate's token log-probabilities; "mean" divides by their count;
        "sequence_sum" and "sequence_mean" do the same over every token of context + candidate after the
        first (the IDEFICS authors' whole-sequence score: the context's part differs between images).

        The candidates' remainders (their tokens after the shared prefix) form a trie: a token sequence
        that begins several candidates ("tiger" in "tiger shark" and "tiger cat") runs once. Its
        nodes run as one sequence on top of the prefix's cache, each attending to the prefix and its
        own ancestors only (a block mask, positions by depth), so one pass scores hundreds of
        candidates. A candidate's last token never runs: its probability is read at its parent.
        """
        requests = self._requests_reused(context, continuations)
        whole = normalize in WHOLE_SEQUENCE
        state = self._prefix(context, requests, whole)
        plan = self._plan([ids[state.shared :] for ids, _ in requests], [count for _, count in requests], whole, state.shared)
        totals = torch.full((len(requests),), state.total, dtype=torch.float64)
        totals.index_add_(0, plan.heads, state.first[plan.head_tokens.to(state.first.device)].double().cpu())
        for packed in plan.passes:
            logits = self._packed_pass(state, packed)
            rows = packed.rows.to(logits.device)
            picked = logits[rows, packed.targets.to(logits.device)] - torch.logsumexp(logits, dim=-1)[rows]
            totals.index_add_(0, packed.owners, picked.double().cpu())
        return [_normalized(total, ids, count, normalize) for total, (ids, count) in zip(totals.tolist(), requests)]

    def _plan(self, remainders: list[list[int]], counts: list[int], whole: bool, shared: int) -> "_Plan":
        """The packed passes for these remainders; the last plan is kept, since every query of a task
        with a fixed class list (ImageNet's 1,000 names) has the same remainders after its own context."""
        key = (tuple(map(tuple, remainders)), tuple(counts), whole, self.packed_tokens(shared, max(map(len, remainders))))
        if self._last_plan is None or self._last_plan[0] != key:
            self._last_plan = (key, _Plan(remainders, counts, whole, key[-1]))
        return self._last_plan[1]

    def packed_tokens(self, shared: int, longest: int) -> int:
        """Candidate tokens per packed pass: as many as a batch of `batch_size` full sequences holds, so
        that `--batch-size` (and its GPU probe) bounds a pass's memory as elsewhere, but at most the
        model's width (at least 512): every token of a pass attends to the whole pass (masked), and
        beyond that the wasted attention costs more than fewer passes save (measured on CPU with
        widths 128 and 512: docs/performance.md)."""
        width = getattr(self.loaded.model.config, "hidden_size", PACKED_TOKENS)
        return max(longest, min(self.batch_size * (shared + longest), max(PACKED_TOKENS, width)))

    def _packed_pass(self, state: "_Prefix", packed: "_Pass") -> torch.Tensor:
        """One pass's trie nodes as one sequence after the prefix: logits (nodes, vocabulary), float32."""
        device, dtype = self.loaded.device, self.loaded.model.dtype
        count = len(packed.tokens)
        mask = torch.zeros((count, state.shared + count), dtype=dtype)
        mask[:, state.shared :].masked_fill_(~packed.visible, torch.finfo(dtype).min)
        output = self.loaded.model(
            input_ids=packed.tokens[None].to(device),
            attention_mask=mask[None, None].to(device),
            position_ids=(state.shared + packed.depths[None]).to(device),
            **{self._image_key: state.images},
            image_attention_mask=state.image_mask.expand(1, count, -1),
            cache=_expanded(state.cache, 1),
            use_cache=True,
        )
        return output.logits[0].float()

    @torch.no_grad()
    def loglikelihoods_batched(self, context: Prompt, continuations: Sequence[Prompt], normalize: str) -> list[float]:
        """The previous prefix-cached path, kept as the reference of `benchmarks/rank_demo.py`: the
        candidates' remainders in padded batches of `batch_size` rows, each row on a broadcast view of
        the prefix's cache."""
        requests = self._requests(context, continuations)
        whole = normalize in WHOLE_SEQUENCE
        state = self._prefix(context, requests, whole)
        shared, first, model = state.shared, state.first, self.loaded.model
        results: list[float] = [0.0] * len(requests)
        pending = []
        for index, (ids, count) in enumerate(requests):
            if len(ids) - shared == 1:  # a single-token remainder: read it off the prefix's last position
                results[index] = state.total + first[ids[shared]].item()
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
                **{self._image_key: state.images.repeat(len(batch), 1, 1)},  # (rows x images, latents, dim)
                image_attention_mask=state.image_mask.expand(len(batch), width, -1),
                cache=_expanded(state.cache, len(batch)),
                use_cache=True,
            )
            logprobs = torch.log_softmax(output.logits.float(), dim=-1)
            for row, index in enumerate(batch):
                remainder, count = remainders[row], requests[index][1]
                total = state.total
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
PACKED_TOKENS = 512  # the fewest trie nodes a packed pass may hold (Ranker.packed_tokens)


def _normalized(total: float, ids: list[int], count: int, normalize: str) -> float:
    """A summed log-likelihood as `normalize` asks: the mean divides by the tokens summed."""
    if normalize == "mean":
        return total / count
    return total / (len(ids) - 1) if normalize == "sequence_mean" else total


@dataclass
class _Prefix:
    """The shared prefix's pass: its length, the log-probabilities after it (of each remainder's first
    token), the sum over its own tokens (whole-sequence scores, else 0), its key/value cache, and the
    image features (with their attention row) the candidates' tokens see."""

    shared: int
    first: torch.Tensor
    total: float
    cache: object
    images: torch.Tensor
    image_mask: torch.Tensor


@dataclass
class _Pass:
    """One packed pass: the trie nodes' tokens and depths, which earlier nodes each sees (itself and
    its ancestors: `visible`, nodes x nodes), and the log-probabilities it yields: `targets[j]` read
    at node `rows[j]`, added to candidate `owners[j]`."""

    tokens: torch.Tensor
    depths: torch.Tensor
    visible: torch.Tensor
    rows: torch.Tensor
    targets: torch.Tensor
    owners: torch.Tensor


class _Plan:
    """The candidates' remainders as a trie, cut into passes of at most `budget` nodes.

    A node is a proper prefix of a remainder (a candidate's last token never runs: it is read at its
    parent). Remainders are taken in sorted order, so the ones that begin alike share a pass; a pass
    holds every ancestor of its nodes (one shared by two passes runs in both). A candidate scores its
    last `count` tokens (`whole`: every token of its remainder); the tokens it scores at its first
    position are read off the prefix's last logits (`heads`, `head_tokens`)."""

    def __init__(self, remainders: list[list[int]], counts: list[int], whole: bool, budget: int):
        firsts = [0 if whole else len(r) - count for r, count in zip(remainders, counts)]
        self.heads = torch.tensor([i for i, f in enumerate(firsts) if f == 0], dtype=torch.long)
        self.head_tokens = torch.tensor([remainders[i][0] for i in self.heads.tolist()], dtype=torch.long)
        self.passes: list[_Pass] = []
        chunk: list[int] = []
        nodes: dict[tuple[int, ...], int] = {}
        for i in sorted(range(len(remainders)), key=lambda i: remainders[i]):
            new = sum(tuple(remainders[i][: d + 1]) not in nodes for d in range(len(remainders[i]) - 1))
            if chunk and len(nodes) + new > budget:
                self._add(chunk, remainders, firsts)
                chunk, nodes = [], {}
            chunk.append(i)
            for d in range(len(remainders[i]) - 1):
                nodes.setdefault(tuple(remainders[i][: d + 1]), len(nodes))
        if chunk:
            self._add(chunk, remainders, firsts)

    def _add(self, chunk: list[int], remainders: list[list[int]], firsts: list[int]) -> None:
        index: dict[tuple[int, ...], int] = {}
        tokens, depths, seen_rows, seen_columns = [], [], [], []
        rows, targets, owners = [], [], []
        for i in chunk:
            remainder, path = remainders[i], []
            for depth in range(len(remainder) - 1):
                key = tuple(remainder[: depth + 1])
                node = index.get(key)
                if node is None:
                    node = index[key] = len(tokens)
                    tokens.append(remainder[depth])
                    depths.append(depth)
                    seen_rows += [node] * (depth + 1)
                    seen_columns += path + [node]
                path.append(node)
            for position in range(max(1, firsts[i]), len(remainder)):
                rows.append(path[position - 1])
                targets.append(remainder[position])
                owners.append(i)
        if not tokens:  # every candidate of the chunk is one token: nothing to run
            return
        visible = torch.zeros((len(tokens), len(tokens)), dtype=torch.bool)
        visible[seen_rows, seen_columns] = True
        as_tensor = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        self.passes.append(_Pass(as_tensor(tokens), as_tensor(depths), visible, as_tensor(rows), as_tensor(targets),
                                 as_tensor(owners)))


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
