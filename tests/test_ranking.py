"""Ranked scoring: each candidate's log-likelihood equals a full forward pass over context + candidate."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.prompts import load_template, most_common_answer
from idefics_eval.ranking import Ranker, continuation_ids

from conftest import make_example

CANDIDATES = ["red", "blue", "a dark green square", "no"]


@pytest.fixture
def prompts():
    template = load_template("vqa")
    shots = [make_example("s1", "s1", "What color is the circle?", ["red"] * 10, rgb=(250, 0, 0)),
             make_example("s2", "s2", "Is it round?", ["yes"] * 10, rgb=(0, 0, 250))]
    query = make_example("q", "q", "What color is the square?", ["green"] * 10, rgb=(0, 200, 0))
    context = template.render(shots, query, most_common_answer)
    return context, [template.render(shots, query, most_common_answer, candidate=c) for c in CANDIDATES]


def reference(loaded, context, full, whole: bool = False) -> float:
    """The plain definition: the processor's inputs for context + candidate, one forward pass; `whole`:
    every token after the first, not only the candidate's."""
    tokenizer = loaded.processor.tokenizer
    inputs = loaded.processor(text=[[i if isinstance(i, str) else i.load() for i in full.items]], return_tensors="pt")
    ids, count = continuation_ids(tokenizer, context.processor_text(tokenizer.bos_token), full.processor_text(tokenizer.bos_token))
    assert inputs["input_ids"][0].tolist() == ids
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    positions = range(1 if whole else len(ids) - count, len(ids))
    return sum(logprobs[p - 1, ids[p]].item() for p in positions)


@pytest.mark.parametrize("path", ["loglikelihoods", "loglikelihoods_full"])
def test_loglikelihoods_equal_full_forward_passes(demo_loaded, prompts, path):
    """Both the prefix-cached path and the plain batched path score what a full forward pass scores."""
    context, continuations = prompts
    scores = getattr(Ranker(demo_loaded, batch_size=3), path)(context, continuations, "sum")
    expected = [reference(demo_loaded, context, full) for full in continuations]
    assert scores == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("path", ["loglikelihoods", "loglikelihoods_full"])
def test_whole_sequence_scores_count_every_token_after_the_first(demo_loaded, prompts, path):
    """sequence_sum / sequence_mean (the IDEFICS authors' Winoground score) add the context's tokens."""
    context, continuations = prompts
    ranker = Ranker(demo_loaded, batch_size=3)
    summed = getattr(ranker, path)(context, continuations, "sequence_sum")
    expected = [reference(demo_loaded, context, full, whole=True) for full in continuations]
    assert summed == pytest.approx(expected, abs=1e-3)
    assert summed != pytest.approx(getattr(ranker, path)(context, continuations, "sum"), abs=1e-3)
    tokenizer = demo_loaded.processor.tokenizer
    lengths = [len(continuation_ids(tokenizer, context.processor_text("<s>"), f.processor_text("<s>"))[0]) - 1 for f in continuations]
    averaged = getattr(ranker, path)(context, continuations, "sequence_mean")
    assert averaged == pytest.approx([s / n for s, n in zip(summed, lengths)], abs=1e-5)


def test_single_token_candidates_are_read_off_the_prefix(demo_loaded, prompts):
    """Candidates of one token each take the fast path (no batch pass) and still match."""
    context, _ = prompts
    template = load_template("vqa")
    tokenizer = demo_loaded.processor.tokenizer
    singles = [w for w in ["red", "blue", "no", "yes", "2"] if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(singles) >= 2
    query = make_example("q", "q", "What color is the square?", ["green"] * 10, rgb=(0, 200, 0))
    shots = [make_example("s1", "s1", "What color is the circle?", ["red"] * 10, rgb=(250, 0, 0)),
             make_example("s2", "s2", "Is it round?", ["yes"] * 10, rgb=(0, 0, 250))]
    continuations = [template.render(shots, query, most_common_answer, candidate=c) for c in singles]
    ranker = Ranker(demo_loaded, batch_size=4)
    for normalize in ("sum", "sequence_sum"):
        assert ranker.loglikelihoods(context, continuations, normalize) == pytest.approx(
            ranker.loglikelihoods_full(context, continuations, normalize), abs=1e-3)


def test_mean_normalisation_divides_by_the_candidate_tokens(demo_loaded, prompts):
    context, continuations = prompts
    ranker = Ranker(demo_loaded, batch_size=8)
    summed = ranker.loglikelihoods(context, continuations, "sum")
    averaged = ranker.loglikelihoods(context, continuations, "mean")
    tokenizer = demo_loaded.processor.tokenizer
    counts = [continuation_ids(tokenizer, context.processor_text("<s>"), f.processor_text("<s>"))[1] for f in continuations]
    assert counts[2] > counts[0]
    assert averaged == pytest.approx([s / n for s, n in zip(summed, counts)], abs=1e-5)


def test_batch_size_does_not_change_scores(demo_loaded, prompts):
    context, continuations = prompts
    for path in ("loglikelihoods", "loglikelihoods_full"):
        one = getattr(Ranker(demo_loaded, batch_size=1), path)(context, continuations, "sum")
        many = getattr(Ranker(demo_loaded, batch_size=8), path)(context, continuations, "sum")
        assert many == pytest.approx(one, abs=1e-4)


def test_continuation_is_what_follows_the_common_prefix(demo_loaded):
    tokenizer = demo_loaded.processor.tokenizer
    ids, count = continuation_ids(tokenizer, "<s>Answer:", "<s>Answer: no")
    assert tokenizer.decode(ids[-count:]) == " no"
