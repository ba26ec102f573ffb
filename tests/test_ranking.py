"""Ranked scoring: each candidate's log-likelihood equals a full forward pass over context + candidate."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.prompts import load_template, most_common_answer
from idefics_eval.ranking import Ranker, _normalized, continuation_ids

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


@pytest.fixture(scope="module")
def canary():
    from idefics_eval.models import CANARY_DIR, load_model

    return load_model(str(CANARY_DIR))


def imagenet_requests(loaded, folder) -> dict[int, list[tuple]]:
    """Per shot count (0 and 4 random shots), two bundled ImageNet queries' contexts and their 1,000
    class-name continuations, as the runner builds them."""
    from idefics_eval.model_requests import continuation_prompts, ranked_context
    from idefics_eval.plan import RunConfig, prepare
    from idefics_eval.shots import ShotSettings, build_selector

    p = prepare(RunConfig(task="imagenet", shots=(4,), output_dir=folder, demo=True, limit=2, selection="random",
                          progress=False), preloaded=True)
    selector = build_selector(ShotSettings("random"), p.support, p.queries, 4, None, None)
    requests = {}
    for shots in (0, 4):
        requests[shots] = []
        for query in p.queries.examples:
            chosen = selector.select(query, shots)[:shots]
            context, dropped, _, _ = ranked_context(p, loaded, query, chosen)
            requests[shots].append((context, continuation_prompts(p, query, chosen[dropped:])))
    assert len(requests[4][0][1]) == 1000 and len(requests[4][0][0].images) == 5
    return requests


@pytest.fixture(scope="module")
def imagenet(canary, tmp_path_factory) -> dict[int, list[tuple]]:
    return imagenet_requests(canary, tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def imagenet_full(demo_loaded, tmp_path_factory) -> dict:
    """The tiny model's ImageNet requests and the full-forward reference of the first query: per shot
    count, the requests and the summed scores of its candidates' own tokens and of every token."""
    requests = imagenet_requests(demo_loaded, tmp_path_factory.mktemp("imagenet_full"))
    reference = Ranker(demo_loaded, batch_size=64)
    return {shots: (requests[shots][0], {whole: reference.loglikelihoods_full(*requests[shots][0], whole)
                                         for whole in ("sum", "sequence_sum")}) for shots in (0, 4)}


def best(scores: list[float]) -> int:
    return min(range(len(scores)), key=lambda i: (-scores[i], i))


@pytest.mark.parametrize("normalize", ["sum", "mean", "sequence_sum", "sequence_mean"])
@pytest.mark.parametrize("shots", [0, 4])
def test_packed_candidates_equal_full_forward_passes_on_imagenet(demo_loaded, imagenet_full, shots, normalize, trie_calls):
    """The default path (candidates packed as a trie on the prefix's cache) scores ImageNet's 1,000
    class names as one full forward pass per candidate does, and ranks the same class first. The
    means divide the reference's sums by the tokens summed, as `loglikelihoods_full` does (one
    reference pass per kind of sum keeps the test short)."""
    (context, continuations), sums = imagenet_full[shots]
    fast = Ranker(demo_loaded, batch_size=8).loglikelihoods(context, continuations, normalize)
    summed = sums["sequence_sum" if normalize.startswith("sequence") else "sum"]
    requests = Ranker(demo_loaded, batch_size=8)._requests(context, continuations)
    full = [_normalized(total, ids, count, normalize) for total, (ids, count) in zip(summed, requests)]
    assert fast == pytest.approx(full, abs=1e-4)
    assert best(fast) == best(full)
    assert trie_calls  # the passes' self-attention took the blocked path


def test_packed_passes_share_the_candidates_beginnings_and_any_cut_gives_the_same_scores(canary, imagenet):
    context, continuations = imagenet[4][0]
    ranker = Ranker(canary, batch_size=1)  # passes of one full sequence's tokens: many passes
    many = ranker.loglikelihoods(context, continuations, "sum")
    (remainders, _, _, budget), plan = ranker._last_plan
    assert len(plan.passes) > 10 and max(len(p.tokens) for p in plan.passes) <= budget
    assert sum(len(p.tokens) for p in plan.passes) < sum(len(r) - 1 for r in remainders)  # shared beginnings run once
    few = Ranker(canary, batch_size=8).loglikelihoods(context, continuations, "sum")
    # float32 rounding grows with the score: the long names (-137) of the two cuts sit up to 7e-5 on
    # either side of one full forward each (the small passes' masked attention, the large ones' blocks)
    assert many == pytest.approx(few, abs=1e-4, rel=1e-6)
    assert few == pytest.approx(Ranker(canary, batch_size=8).loglikelihoods_batched(context, continuations, "sum"), abs=1e-4)


def test_the_next_query_reuses_the_candidates_tokens_and_plan(canary, imagenet):
    """ImageNet's class names tokenise the same after every context: the second query takes them
    (and the packing) from the first, and scores what a fresh ranker scores."""
    (first_context, first), (second_context, second) = imagenet[4]
    ranker = Ranker(canary, batch_size=8)
    ranker.loglikelihoods(first_context, first, "sum")
    tails, plan = ranker._last_tails, ranker._last_plan
    assert tails is not None
    assert ranker.requests(second_context, second) == ranker._requests(second_context, second)
    reused = ranker.loglikelihoods(second_context, second, "sum")
    assert ranker._last_tails is tails and ranker._last_plan is plan
    assert reused == Ranker(canary, batch_size=8).loglikelihoods(second_context, second, "sum")


def test_reused_tokens_equal_the_plain_tokenisation_where_candidates_merge_with_the_context(demo_loaded, prompts):
    context, continuations = prompts
    ranker = Ranker(demo_loaded, batch_size=3)
    assert ranker.requests(context, continuations) == ranker._requests(context, continuations)
    assert ranker._last_tails is not None
    assert ranker.requests(context, continuations) == ranker._requests(context, continuations)
