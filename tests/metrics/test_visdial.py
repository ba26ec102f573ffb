"""Tests for `idefics_eval.metrics.visdial` against the official VisDial metrics.

Official definition: batra-mlp-lab/visdial-challenge-starter-pytorch, visdialch/metrics.py (commit
9acafd2bbcc6ccf77c4ef4f02abfbd211a0fcbcd). The hand-derived cases below follow it step by step;
`test_matches_official_transliteration_on_random_rounds` compares the module with a torch version
kept in the official code's shape (scores -> ranks -> rankings, relevance sorted with torch.sort).
"""

from __future__ import annotations

import math
import random

import pytest

from idefics_eval.metrics.visdial import ranking, visdial_ndcg, visdial_rank, visdial_retrieval

LOG2_3 = math.log2(3)

# ----------------------------------------------------------------------------------------------
# NDCG, by hand: k = #non-zero relevance; DCG@k = sum rel / log2(rank + 1) over the top-k predicted.
# ----------------------------------------------------------------------------------------------


def test_perfect_ranking_scores_one() -> None:
    # k = 3 (three non-zero relevances); the scores rank them first, in relevance order.
    assert visdial_ndcg([4, 3, 0, 2, 1], [1, 0.5, 0, 0.25, 0]) == pytest.approx(1.0, abs=1e-12)


def test_cutoff_is_the_number_of_relevant_options() -> None:
    # k = 2, and the two relevant options are ranked 3rd and 4th: nothing in the top 2 is relevant,
    # so NDCG@k = 0. An NDCG over the whole list (no cutoff) would give a positive value instead.
    scores, relevance = [5, 4, 3, 2, 1], [0, 0, 1, 1, 0]
    assert visdial_ndcg(scores, relevance) == 0.0
    no_cutoff = (1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / LOG2_3)
    assert no_cutoff > 0.5


def test_top_ranked_option_with_zero_relevance() -> None:
    # k = 2; ranking 0, 1, 2, ...: top 2 = option 0 (relevance 0) at rank 1, option 1 (relevance 1) at 2.
    # DCG = 0/log2(2) + 1/log2(3); ideal = 1/log2(2) + 0.5/log2(3). Linear gain: relevance as is.
    expected = (1 / LOG2_3) / (1 + 0.5 / LOG2_3)
    assert visdial_ndcg([9, 8, 7, 6, 5], [0, 1, 0.5, 0, 0]) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.4796, abs=1e-4)


def test_ties_in_relevance() -> None:
    # relevance 0.5, 0.5, 1, 0 -> k = 3. Scores rank options 1, 2, 3, 0: top 3 relevances 0.5, 1, 0.
    # DCG = 0.5/1 + 1/log2(3) + 0/2; ideal (1, 0.5, 0.5) = 1 + 0.5/log2(3) + 0.5/log2(4).
    relevance = [0.5, 0.5, 1, 0]
    expected = (0.5 + 1 / LOG2_3) / (1 + 0.5 / LOG2_3 + 0.5 / 2)
    assert visdial_ndcg([1, 4, 3, 2], relevance) == pytest.approx(expected, abs=1e-12)
    # Which of the two equally relevant options is ranked first makes no difference.
    assert visdial_ndcg([4, 1, 3, 2], relevance) == pytest.approx(expected, abs=1e-12)


def test_ties_in_scores_break_by_option_index() -> None:
    # All scores equal: the order is option index (a stable descending sort). The relevant option is
    # the last one, so it ranks last: k = 1 and the top option has relevance 0.
    assert ranking([1.0, 1.0, 1.0, 1.0]) == [0, 1, 2, 3]
    assert visdial_ndcg([1.0, 1.0, 1.0, 1.0], [0, 0, 0, 1]) == 0.0
    assert visdial_ndcg([1.0, 1.0, 1.0, 1.0], [1, 0, 0, 0]) == 1.0


def test_ndcg_rejects_rounds_without_relevant_options_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="no relevant option"):
        visdial_ndcg([1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="relevance values"):
        visdial_ndcg([1, 2, 3], [1, 0])
    with pytest.raises(ValueError, match="NaN"):
        visdial_ndcg([1, float("nan"), 3], [1, 0, 0])


# ----------------------------------------------------------------------------------------------
# Rank of the ground truth, and the retrieval metrics
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gt_index", "expected"), [(1, 1), (3, 2), (2, 3), (0, 4)])
def test_rank_of_ground_truth(gt_index: int, expected: int) -> None:
    # Options 1 and 3 tie at 0.9: option 1 (lower index) comes first.
    assert visdial_rank([0.1, 0.9, 0.5, 0.9], gt_index) == expected


def test_rank_rejects_out_of_range_index() -> None:
    with pytest.raises(ValueError, match="out of range"):
        visdial_rank([0.1, 0.2], 2)


def test_retrieval_metrics_by_hand() -> None:
    metrics = visdial_retrieval([1, 2, 5, 10, 11])
    assert metrics["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 5 + 1 / 10 + 1 / 11) / 5, abs=1e-12)
    assert metrics["r@1"] == pytest.approx(20.0)
    assert metrics["r@5"] == pytest.approx(60.0)  # rank 5 counts: R@n is rank <= n
    assert metrics["r@10"] == pytest.approx(80.0)
    assert metrics["mean_rank"] == pytest.approx(29 / 5)  # a rank, not scaled
    with pytest.raises(ValueError):
        visdial_retrieval([])
    with pytest.raises(ValueError):
        visdial_retrieval([0, 1])


# ----------------------------------------------------------------------------------------------
# Against a transliteration of the official torch code (no ties, where its sort order is defined)
# ----------------------------------------------------------------------------------------------


def _official_ranks(scores):  # scores: (rounds, options) -> 1-based rank of every option
    import torch

    _, ranked_idx = scores.sort(1, descending=True)
    ranks = torch.zeros_like(ranked_idx)
    for row in range(ranked_idx.size(0)):
        for position in range(ranked_idx.size(1)):
            ranks[row][ranked_idx[row][position]] = position
    return ranks + 1


def _official_ndcg(scores, relevance):  # per-round values, as NDCG.observe accumulates them
    import torch

    ranks = _official_ranks(scores)
    k = torch.sum(relevance != 0, dim=-1)
    _, rankings = torch.sort(ranks, dim=-1)
    _, best_rankings = torch.sort(relevance, dim=-1, descending=True)

    def dcg(order, rel):
        gains = rel[order].float()
        return torch.sum(gains / torch.log2(torch.arange(len(order)).float() + 2), dim=-1)

    return [float(dcg(rankings[b][: k[b]], relevance[b]) / dcg(best_rankings[b][: k[b]], relevance[b]))
            for b in range(scores.size(0))]


def test_matches_official_transliteration_on_random_rounds() -> None:
    torch = pytest.importorskip("torch")
    rng = random.Random(0)
    rounds, options = 40, 100
    scores = [rng.sample(range(100_000), options) for _ in range(rounds)]  # distinct: no ties
    relevance = [[rng.choice([0.0] * 6 + [0.25, 0.5, 0.75, 1.0]) for _ in range(options)] for _ in range(rounds)]
    for row in relevance:
        row[rng.randrange(options)] = 1.0  # at least one relevant option per round
    gt = [rng.randrange(options) for _ in range(rounds)]

    official = _official_ndcg(torch.tensor(scores, dtype=torch.float64), torch.tensor(relevance, dtype=torch.float64))
    ours = [visdial_ndcg(s, r) for s, r in zip(scores, relevance)]
    assert ours == pytest.approx(official, abs=1e-6)  # the official _dcg works in float32
    assert len({round(v, 6) for v in ours}) > 10  # varied values, not all 0 or 1

    official_ranks = _official_ranks(torch.tensor(scores, dtype=torch.float64))
    ranks = [visdial_rank(s, g) for s, g in zip(scores, gt)]
    assert ranks == [int(official_ranks[b][gt[b]]) for b in range(rounds)]
    ranks_t = torch.tensor(ranks).float()
    official_retrieval = {
        "r@1": float((ranks_t <= 1).float().mean()), "r@5": float((ranks_t <= 5).float().mean()),
        "r@10": float((ranks_t <= 10).float().mean()), "mrr": float(ranks_t.reciprocal().mean()),
    }
    ours_retrieval = visdial_retrieval(ranks)
    for key, value in official_retrieval.items():
        assert ours_retrieval[key] == pytest.approx(100 * value, abs=1e-4)  # official: fractions, float32
    assert ours_retrieval["mean_rank"] == pytest.approx(float(ranks_t.mean()), rel=1e-6)
