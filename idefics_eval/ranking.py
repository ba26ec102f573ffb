"""Model requests, ranked: the log-likelihood of each candidate continuation after a shared context.

Two paths give the same numbers (tested to 1e-4 in float32):

* `loglikelihoods_full`, the plain definition: one forward pass over context + candidate for every
  candidate. The images of a query are preprocessed once and shared by all its candidates; the
  inputs are built as the family's processor builds them (`ModelAdapter.full_inputs`, tested).
* `loglikelihoods` (the default where the family's adapter allows it): the images are encoded
  once per run (shared with generation through `image_cache`); the shared token prefix (shots +
  query) runs once with the key/value cache; then the candidates' own tokens run on top of that
  cache as a trie packed into a few block-masked sequences (`loglikelihoods`), their beginnings
  shared and their last tokens read at their parents. When every candidate is a single token, the
  next-token distribution after the prefix is read directly and nothing more runs. ImageNet's
  1,000 class names cost one prefix pass plus about ten packed passes instead of 1,000 full passes.
* `loglikelihoods_batched`, the previous cached path (candidates in padded batches of rows), kept
  as the reference of `benchmarks/rank_demo.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .engine import note_once
from .image_cache import ImageFeatureCache, encode_images, shared_cache
from .models import LoadedModel
from .prompts import Prompt
from .trie_attention import TrieAttention, TrieBlocks


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
        self.adapter = loaded.adapter
        if not self.adapter.prefix_ranking:
            note_once(self.adapter.fallback_note("ranking"))
        self.batch_size = batch_size
        self.add_start_token = add_start_token  # every context starts with <s> (the task's add_start_token)
        # Shared with the run's generator: a shot shown to many queries is encoded once.
        # ImageFeatureCache(max_bytes=0) turns caching off.
        self.image_cache = shared_cache(loaded) if image_cache is None else image_cache
        self._last_plan: tuple | None = None  # (key, _Plan) of the previous query: _plan
        self._last_tails: tuple | None = None  # (key, tail ids and counts) of the previous query: requests

    def _texts(self, context: Prompt, continuations: Sequence[Prompt]) -> tuple[str, list[str]]:
        text = self.adapter.prompt_text
        return text(context, self.add_start_token), [text(full, self.add_start_token) for full in continuations]

    def _requests(self, context: Prompt, continuations: Sequence[Prompt]) -> list[tuple[list[int], int]]:
        """Each continuation's token ids and how many of the last are scored; a context cut from the
        left cuts the same leading tokens from every continuation (they start with the context)."""
        return self._cut(context, continuations_ids(self.loaded.processor.tokenizer, *self._texts(context, continuations)))

    def requests(self, context: Prompt, continuations: Sequence[Prompt]) -> list[tuple[list[int], int]]:
        """`_requests`, with the candidates' tokens reused from the previous query where they can be."""
        return self._cut(context, self._ids_reused(context, continuations))

    def _cut(self, context: Prompt, requests: list[tuple[list[int], int]]) -> list[tuple[list[int], int]]:
        return [(self.adapter.cut_ids(ids, context, self.add_start_token), count) for ids, count in requests]

    def _ids_reused(self, context: Prompt, continuations: Sequence[Prompt]) -> list[tuple[list[int], int]]:
        """The uncut ids of `requests`.

        The tokenizer splits its text at special tokens, so what follows the context's last image
        marker (the adapter's `image_end_token`) tokenises alone: the ids are the head's (context up
        to that marker) followed by the
        tails' (the rest of each text), and the tails repeat from query to query when the candidates
        are a task's fixed class list. The split is checked against the plain tokenisation the first
        time a set of tails is met and used only if it gives the same ids."""
        tokenizer = self.loaded.processor.tokenizer
        context_text, fulls = self._texts(context, continuations)
        marker = self.adapter.image_end_token
        if marker is None:
            return continuations_ids(tokenizer, context_text, fulls)
        cut = context_text.rfind(marker) + len(marker)
        head = context_text[:cut]
        if cut < len(marker) or not all(full.startswith(head) for full in fulls):
            return continuations_ids(tokenizer, context_text, fulls)
        key = (context_text[cut:], tuple(full[cut:] for full in fulls))
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        if self._last_tails is not None and self._last_tails[0] == key:
            return [(head_ids + ids, count) for ids, count in self._last_tails[1]]
        plain = continuations_ids(tokenizer, context_text, fulls)
        tails = [(ids[1:], count) for ids, count in continuations_ids(tokenizer, marker + key[0], [marker + t for t in key[1]])]
        if all(head_ids + ids == full_ids and count == full_count for (ids, count), (full_ids, full_count) in zip(tails, plain)):
            self._last_tails = (key, tails)
        return plain

    def _prefix(self, context: Prompt, requests: list[tuple[list[int], int]], whole: bool) -> "_Prefix":
        """One pass over the tokens every request shares (a candidate can merge with the context's
        last token), with the key/value cache kept for the candidates' own tokens."""
        shared = min(len(ids) - count for ids, count in requests)
        prefix = requests[0][0][:shared]
        assert all(ids[:shared] == prefix for ids, _ in requests)
        features = self.image_features(context)
        inputs = self.adapter.sequence_inputs([prefix], context)
        # Only the whole-sequence scores read the prefix's own tokens; the others need its last logits.
        output = self.adapter.forward(inputs, features, logits_to_keep=0 if whole else 1)
        logprobs = torch.log_softmax(output.logits[0].float(), dim=-1)
        # The shared prefix's own tokens (after its first), counted by the whole-sequence scores only.
        total = _target_logprobs(logprobs[:-1], torch.tensor(prefix[1:], device=logprobs.device)).sum().item() if whole else 0.0
        return _Prefix(shared, logprobs[-1], total, output.cache, inputs, features)

    def _continuation(self, state: "_Prefix", input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor) -> torch.Tensor:
        """Rows of candidate tokens (`input_ids`, rows x width) run on the prefix's cache: logits, float32."""
        rows, width = input_ids.shape
        extra, features = self.adapter.continuation_inputs(state.inputs, state.features, rows, width)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, **extra}
        output = self.adapter.forward(inputs, features, self.adapter.share_cache(state.cache, rows), logits_to_keep=0)
        return output.logits.float()

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
        own ancestors only (a block mask, positions by depth; the self-attention computed over those
        keys alone: `TrieAttention`), so one pass scores hundreds of candidates. A candidate's last token never runs: its probability is read at its parent.
        """
        if not self.adapter.prefix_ranking:
            return self.loglikelihoods_full(context, continuations, normalize)
        requests = self.requests(context, continuations)
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
        model's width (at least 512): a node's attention no longer grows with its pass
        (`TrieAttention`), but on CPU passes of 1,024 nodes or more were no faster (docs/performance.md)."""
        width = getattr(self.loaded.model.config, "hidden_size", PACKED_TOKENS)
        return max(longest, min(self.batch_size * (shared + longest), max(PACKED_TOKENS, width)))

    def _packed_pass(self, state: "_Prefix", packed: "_Pass") -> torch.Tensor:
        """One pass's trie nodes as one sequence after the prefix: logits (nodes, vocabulary), float32."""
        device, dtype = self.loaded.device, self.loaded.model.dtype
        count = len(packed.tokens)
        mask = torch.zeros((count, state.shared + count), dtype=dtype, device=device)
        mask[:, state.shared :].masked_fill_(~packed.visible.to(device), torch.finfo(dtype).min)
        mask = mask[None, None]
        trie = TrieAttention(mask, packed.blocks)
        with trie.running(self.loaded.model):
            return self._continuation(state, packed.tokens[None].to(device), mask,
                                      (state.shared + packed.depths[None]).to(device))[0]

    @torch.no_grad()
    def loglikelihoods_batched(self, context: Prompt, continuations: Sequence[Prompt], normalize: str) -> list[float]:
        """The previous prefix-cached path, kept as the reference of `benchmarks/rank_demo.py`: the
        candidates' remainders in padded batches of `batch_size` rows, each row on a broadcast view of
        the prefix's cache."""
        requests = self._requests(context, continuations)
        whole = normalize in WHOLE_SEQUENCE
        state = self._prefix(context, requests, whole)
        shared, first = state.shared, state.first
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
            device = self.loaded.device
            logits = self._continuation(
                state, torch.tensor([r + [pad] * (width - len(r)) for r in remainders], device=device),
                torch.ones((len(batch), shared + width), dtype=torch.long, device=device),
                torch.arange(shared, shared + width, device=device).expand(len(batch), -1))
            logprobs = torch.log_softmax(logits, dim=-1)
            for row, index in enumerate(batch):
                remainder, count = remainders[row], requests[index][1]
                total = state.total
                for position in range(0 if whole else len(remainder) - count, len(remainder)):
                    row_logprobs = first if position == 0 else logprobs[row, position - 1]
                    total += row_logprobs[remainder[position]].item()
                results[index] = total
        return [_normalized(total, ids, count, normalize) for total, (ids, count) in zip(results, requests)]

    def image_features(self, context: Prompt):
        """The context's image features, each image encoded once per run (the image cache)."""
        return self.adapter.image_features([context], lambda refs: encode_images(self.loaded, refs, self.image_cache))

    @torch.no_grad()
    def loglikelihoods_full(self, context: Prompt, continuations: Sequence[Prompt], normalize: str) -> list[float]:
        """The plain definition: one full forward pass over context + candidate for each candidate."""
        requests = self._requests(context, continuations)
        images = self.adapter.image_inputs(context)  # once per query, shared by every candidate
        results: list[float] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            inputs = self.adapter.full_inputs([ids for ids, _ in batch], context, images)
            logits = self.loaded.model(**inputs).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            token_logprobs = _target_logprobs(logprobs, inputs["input_ids"][:, 1:])
            for row, (ids, count) in enumerate(batch):
                scored = len(ids) - 1 if normalize in WHOLE_SEQUENCE else count  # left-padded: the last ones are real
                results.append(_normalized(token_logprobs[row, -scored:].sum().item(), ids, count, normalize))
        return results


WHOLE_SEQUENCE = ("sequence_sum", "sequence_mean")
PACKED_TOKENS = 512  # the fewest trie nodes a packed pass may hold (Ranker.packed_tokens)


def _target_logprobs(logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each target token's log-probability; 0 for a token past the output vocabulary (an image
    token that only ever enters, like Llama 3.2 Vision's `<|image|>`: no logit predicts it)."""
    vocab = logprobs.shape[-1]
    gathered = logprobs.gather(-1, targets.clamp(max=vocab - 1).unsqueeze(-1)).squeeze(-1)
    return gathered.masked_fill(targets >= vocab, 0.0)


def _normalized(total: float, ids: list[int], count: int, normalize: str) -> float:
    """A summed log-likelihood as `normalize` asks: the mean divides by the tokens summed."""
    if normalize == "mean":
        return total / count
    return total / (len(ids) - 1) if normalize == "sequence_mean" else total


@dataclass
class _Prefix:
    """The shared prefix's pass: its length, the log-probabilities after it (of each remainder's first
    token), the sum over its own tokens (whole-sequence scores, else 0), its key/value cache, and its
    inputs and image features (what the candidates' tokens see follows from them:
    `ModelAdapter.continuation_inputs`)."""

    shared: int
    first: torch.Tensor
    total: float
    cache: object
    inputs: dict
    features: object


@dataclass
class _Pass:
    """One packed pass: the trie nodes' tokens and depths, which earlier nodes each sees (itself and
    its ancestors: `visible`, nodes x nodes; the same in blocks for `TrieAttention`: `blocks`), and
    the log-probabilities it yields: `targets[j]` read at node `rows[j]`, added to candidate `owners[j]`."""

    tokens: torch.Tensor
    depths: torch.Tensor
    visible: torch.Tensor
    blocks: TrieBlocks
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
        long = [torch.tensor(values, dtype=torch.long) for values in (tokens, depths, rows, targets, owners)]
        self.passes.append(_Pass(long[0], long[1], visible, TrieBlocks.of(visible), *long[2:]))

