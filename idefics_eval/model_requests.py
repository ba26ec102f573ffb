"""Model requests: a query and its shots -> the prompts the model is asked to continue or score.

Generated tasks get one fitted prompt per query; ranked tasks a context and one continuation per
candidate; matched tasks (Winoground) one context per image with each caption as a continuation.
Fitting drops the least similar shots until the prompt fits the context (truncation `drop-shots`),
or cuts its first tokens (`left`, the IDEFICS authors'); the query then counts as truncated. A query
whose prompt does not fit even with no shots is never cut and scored: it raises
`PromptTooLong`, and `bad_example` stops the run naming it or skips it, counted. Lengths are measured
with the tokenizer alone, before any tensor is built, so an absurdly long query costs a tokenizer
pass, not the model's memory.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

from .engine import Generator, count_tokens, longest_first, token_ids
from .errors import UserError
from .examples import Example
from .models import LoadedModel
from .plan import Prepared
from .predictions import FULL_SCORES, Prediction
from .prompts import Prompt, most_common_answer
from .tasks import TaskSpec

def stable_rng(*keys: object):
    """A numpy generator seeded by the keys' text (not Python's salted hash): same keys, same draws."""
    import numpy as np

    digest = hashlib.sha256("\x1f".join(map(str, keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def candidates_of(spec: TaskSpec, example: Example) -> tuple[str, ...]:
    assert spec.candidates is not None
    return example.candidates if spec.candidates.source == "example" else spec.candidates.classes


def shot_answer(spec: TaskSpec) -> Callable[[Example], str]:
    """How a shot shows its answer (the task's `shot_answer`)."""
    if spec.shot_answer == "most_common":
        return most_common_answer
    if spec.shot_answer == "first":
        return lambda example: example.answers[0]
    if spec.shot_answer == "random_reference":  # a seeded choice among the reference captions
        return lambda example: example.answers[stable_rng(spec.seed, example.id).integers(len(example.answers))]
    if spec.candidates is None:
        raise UserError(f"{spec.path}: shot_answer label needs candidates")
    return lambda example: candidates_of(spec, example)[example.label]


class PromptTooLong(UserError):
    """A query whose prompt exceeds the context limit even with no shots; `fix` says what to change."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


def context_limit(p: Prepared, loaded: LoadedModel) -> int:
    """--max-length, else the protocol's `max_length` up to the model's context, else the model's."""
    return p.config.max_length or min(p.protocol_max_length or loaded.max_length, loaded.max_length)


def check_context(p: Prepared, loaded: LoadedModel) -> None:
    """--max-length may shorten the model's context, not lengthen it: positions past the model's
    would run (a rotary model accepts them) and a long prompt would then be allocated in full."""
    if p.config.max_length is not None and p.config.max_length > loaded.max_length:
        raise UserError(f"--max-length {p.config.max_length} is more than the {loaded.max_length} tokens the model "
                        f"{loaded.name} takes; give at most {loaded.max_length}, or leave it out")
    adapter = loaded.adapter
    if p.truncation == "left" and not adapter.left_truncation:
        raise UserError(f"{p.protocol.path if p.protocol else 'the protocol'}: truncation: left is not implemented for "
                        f"{adapter.family} models; "
                        f"use truncation: drop-shots for {loaded.name}")
    if p.template.chat:
        adapter.check_chat_template(f"{p.protocol.path if p.protocol else 'the protocol'}: chat_template", loaded.name)


def too_long(p: Prepared, loaded: LoadedModel, needs: str) -> PromptTooLong:
    """The error for a query whose prompt `needs` (tokens, and what they include) more than the limit."""
    limit = context_limit(p, loaded)
    below_model = p.config.max_length is not None and p.config.max_length < loaded.max_length
    where = "--max-length" if p.config.max_length is not None else "the model's context"
    fix = f"raise --max-length (the model takes {loaded.max_length})" if below_model else "shorten that query's text"
    return PromptTooLong(f"its prompt needs {needs}, more than the {limit} of {where}", fix)


def fit_prompt(p: Prepared, loaded: LoadedModel, shots: Sequence[Example], query: Example, reserve: int) -> tuple[Prompt, int, int]:
    """Render the prompt and fit it to the context with `reserve` tokens left for the answer: drop
    the least similar shots (the first ones) until it fits, or with truncation `left` cut its first
    tokens (`ModelAdapter.cut_from_left`); returns it, the shots dropped and its length in tokens.

    The prompt with every shot is measured first (it usually fits), then the zero-shot one: a query
    too long even alone raises `PromptTooLong` after two tokenizer passes. So a left cut never
    reaches the query's own image or text: it takes the prefix and shots' tokens only."""
    budget = context_limit(p, loaded) - reserve
    answer = shot_answer(p.spec)

    def measured(dropped: int) -> tuple[Prompt, int]:
        prompt = p.template.render(shots[dropped:], query, answer)
        return prompt, count_tokens(loaded, prompt, p.generation.add_start_token)

    prompt, length = measured(0)
    if length <= budget:
        return prompt, 0, length
    bare, bare_length = (prompt, length) if not shots else measured(len(shots))
    if bare_length > budget:
        raise too_long(p, loaded, f"{bare_length + reserve} tokens with no shots ({reserve} of them kept for the answer)")
    if p.truncation == "left":
        cut = loaded.adapter.cut_from_left(prompt, length - budget, p.generation.add_start_token)
        return cut, 0, length - cut.cut_tokens
    for dropped in range(1, len(shots)):
        prompt, length = measured(dropped)
        if length <= budget:
            return prompt, dropped, length
    return bare, len(shots), bare_length


def candidate_reserve(loaded: LoadedModel, candidates: Sequence[str]) -> int:
    """Tokens the longest candidate continuation needs (plus the template's closing punctuation)."""
    return _longest_candidate(loaded.processor.tokenizer, tuple(candidates)) + 4


@functools.lru_cache(maxsize=4)
def _longest_candidate(tokenizer, candidates: tuple[str, ...]) -> int:
    """The most tokens of a candidate after a space; kept per tokenizer object and class list, since
    every query of a task with a fixed list (ImageNet's 1,000 names) asks it again (20 ms a query)."""
    return max(len(ids) for ids in tokenizer([" " + c for c in candidates], add_special_tokens=False)["input_ids"])


# Ranker.loglikelihoods or Ranker.loglikelihoods_full: (context, continuations, normalize) -> scores
Scorer = Callable[[Prompt, Sequence[Prompt], str], list[float]]


def ranked_context(p: Prepared, loaded: LoadedModel, query: Example, shots: Sequence[Example]) -> tuple[Prompt, int, int, int]:
    """The fitted context of a ranked query, how many shots it dropped, its length in tokens, and
    the tokens kept for the longest candidate."""
    reserve = candidate_reserve(loaded, candidates_of(p.spec, query))
    context, dropped, length = fit_prompt(p, loaded, shots, query, reserve)
    return context, dropped, length, reserve


def sample_fields(p: Prepared, loaded: LoadedModel, query: Example, context: Prompt, shown: Sequence[Example],
                  similarities: Sequence[float | None], tokens: int, **more) -> dict | None:
    """What the sample log adds to a query's prediction line (docs/outputs.md): the query as the task
    reads it, its references, the shots shown (prompt order), the prompt's processor text and its
    length, and `more` (the raw generation, every candidate's score); None with --no-log-samples."""
    if not p.config.log_samples:
        return None
    answer = shot_answer(p.spec)
    references: dict = {"answers": list(query.answers)}
    if query.label is not None:
        references["label"] = query.label
    if query.candidates:  # a task-wide class list (ImageNet's 1,000) is in the task file, not on every line
        references["candidates"] = list(query.candidates)
    images = [query.image.key] + [ref.key for ref in query.extra_images]
    return {"inputs": dict(query.fields), **references, "metadata": dict(query.metadata), "images": images,
            "shown_shots": [{"id": shot.id, "similarity": similarity, "answer": answer(shot),
                             "image": shot.image.key if shot.image is not None else None}  # None: shown as text only
                            for shot, similarity in zip(shown, similarities)],
            "prompt": loaded.adapter.prompt_text(context, p.generation.add_start_token), "prompt_tokens": tokens,
            **({"cut_images": context.cut_images} if context.cut_tokens else {}), **more}  # cut_tokens: the prediction's


def continuation_prompts(p: Prepared, query: Example, kept: Sequence[Example]) -> list[Prompt]:
    answer = shot_answer(p.spec)
    return p.template.render_candidates(kept, query, answer, candidates_of(p.spec, query))


def ranked(p: Prepared, score: Scorer, query: Example, shots: Sequence[Example], similarities: Sequence[float | None],
           loaded: LoadedModel) -> Prediction:
    """`similarities`: the shots' retrieval similarities (`ShotSelector.similarities`), for the sample log."""
    candidates = candidates_of(p.spec, query)
    context, dropped, length, _ = ranked_context(p, loaded, query, shots)
    continuations = continuation_prompts(p, query, shots[dropped:])  # the shots the fitted context shows
    scores = score(context, continuations, p.spec.candidates.normalize)
    ranking = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    prediction = Prediction(
        id=query.id,
        prediction=candidates[ranking[0]],
        shots=context.shot_ids,
        score=None,
        dropped_shots=dropped,
        cut_tokens=context.cut_tokens,
        scores=tuple(scores) if len(scores) <= FULL_SCORES else (),
        ranking=tuple(ranking[:FULL_SCORES]),
        sample=sample_fields(p, loaded, query, context, shots[dropped:], similarities[dropped:], length, scores=list(scores)),
    )
    return replace(prediction, score=p.metric.score(prediction, query))


def matched_requests(p: Prepared, loaded: LoadedModel, query: Example) -> list[tuple[Prompt, list[Prompt]]]:
    """Winoground: per image, the zero-shot context and its two captions as continuations; a query
    whose longest context-and-caption exceeds the context limit raises `PromptTooLong`."""
    captions = [query.fields[f"caption_{c}"] for c in (0, 1)]
    requests = []
    for image in (query.image, *query.extra_images):
        shown = replace(query, image=image)
        context = p.template.render([], shown, most_common_answer)
        requests.append((context, [p.template.render([], shown, most_common_answer, candidate=c) for c in captions]))
    longest = max(count_tokens(loaded, full, p.generation.add_start_token) for _, continuations in requests for full in continuations)
    if longest > context_limit(p, loaded):
        raise too_long(p, loaded, f"{longest} tokens with its longer caption")
    return requests


def matched(p: Prepared, score: Scorer, query: Example, loaded: LoadedModel) -> Prediction:
    """Winoground: every caption scored with every image; scores are [c0i0, c0i1, c1i0, c1i1]."""
    normalize = p.spec.candidates.normalize if p.spec.candidates else "mean"
    requests = matched_requests(p, loaded, query)
    by_image = [score(context, continuations, normalize) for context, continuations in requests]
    scores = tuple(by_image[i][c] for c in (0, 1) for i in (0, 1))
    # Both contexts have the same text (an image is one placeholder), so one prompt describes them.
    sample = sample_fields(p, loaded, query, requests[0][0], [], [], count_tokens(loaded, requests[0][0], p.generation.add_start_token)) if p.config.log_samples else None
    prediction = Prediction(id=query.id, prediction="", shots=(), score=None, scores=scores, sample=sample)
    return replace(prediction, score=p.metric.score(prediction, query))


def longest_ranking_requests(p: Prepared, loaded: LoadedModel, selector, shots: int,
                              todo: list[Example]) -> list[tuple[Prompt, list[Prompt]]]:
    """The queries' (context, continuations), the one needing the most memory first: the most
    images, then the most tokens (context and longest candidate). Queries too long for the context
    are left out: the run meets them again, in order, and stops or skips them there."""
    if p.spec.request == "match":  # zero shots, one image and two captions a request: all alike
        return [request for query in todo for request in _fitting_matched(p, loaded, query)]
    contexts = []
    for query in todo:
        kept = selector.select(query, shots)
        try:
            context, dropped, length, reserve = ranked_context(p, loaded, query, kept)
        except PromptTooLong:
            continue
        contexts.append((query, kept[dropped:], context, length + reserve))
    order = longest_first([(len(context.images), length) for _, _, context, length in contexts])
    return [(contexts[i][2], continuation_prompts(p, contexts[i][0], contexts[i][1])) for i in order]


def _fitting_matched(p: Prepared, loaded: LoadedModel, query: Example) -> list[tuple[Prompt, list[Prompt]]]:
    try:
        return matched_requests(p, loaded, query)
    except PromptTooLong:
        return []


def bad_example(p: Prepared, query: Example, error: UserError) -> Prediction:
    """A query whose image (or a shot's) cannot be read, or whose prompt is too long even with no shots
    (`PromptTooLong`): stop the run naming it, or skip it, counted."""
    if p.config.on_bad_example == "stop":
        fix = error.fix if isinstance(error, PromptTooLong) else "fix the data"
        raise UserError(f"query {query.id}: {error}; {fix}, or pass --on-bad-example skip to skip such queries") from None
    return Prediction(id=query.id, prediction="", shots=(), score=None, error=str(error))


class Tolerant:
    """Generation that finds the bad example of a failed batch by retrying its prompts one by one;
    answers are the raw generations (`engine.postprocess` makes them predictions)."""

    def __init__(self, generator: Generator):
        self.generator = generator
        self.errors: dict[int, UserError] = {}

    def generate(self, prompts: list[Prompt]) -> list[str | None]:
        try:
            return self.generator.generate_raw(prompts)
        except UserError:
            answers: list[str | None] = []
            for prompt in prompts:
                try:
                    answers.extend(self.generator.generate_raw([prompt]))
                except UserError as error:
                    self.errors[id(prompt)] = error
                    answers.append(None)
            return answers
