"""VisDial metrics: NDCG over the dense relevance annotations, and the retrieval metrics of the
ground-truth answer (MRR, R@1/5/10, mean rank).

Definition followed: batra-mlp-lab/visdial-challenge-starter-pytorch, `visdialch/metrics.py`
(`scores_to_ranks`, `SparseGTMetrics`, `NDCG`; commit 9acafd2bbcc6ccf77c4ef4f02abfbd211a0fcbcd).
Checked by `tests/metrics/test_visdial.py`: hand-derived cases and a comparison with a separate
torch transliteration of the official classes on random, tie-free scores.

The official definitions, for one round with N answer options (N = 100 in VisDial v1.0):

* Ranking: options are sorted by score, highest first; the option in position j (from 1) has rank j.
* NDCG: k = the number of options whose relevance is non-zero. DCG@k sums, over the k best-ranked
  options, relevance / log2(rank + 1) (linear gain, no 2^rel - 1). The ideal DCG@k does the same with
  the options sorted by relevance. NDCG = DCG@k / ideal DCG@k, in [0, 1]; the reported value is the
  mean over rounds (one densely annotated round per dialog). Because the cutoff is k, a relevant
  option ranked just below the k-th place earns nothing.
* Retrieval: the rank of the ground-truth option in each round; R@n = fraction of rounds with rank <= n,
  MRR = mean of 1/rank, mean rank = mean of the ranks.

Ties: the official code orders options with `torch.sort(descending=True)` without `stable=True`, so
the order of equal scores is whatever the sorting kernel produces (on CPU with 100 elements it is not
index order). Here ties are broken deterministically by option index, lower index first, which is
what a stable descending sort gives. A ground-truth option tied with earlier options thus ranks after
them, and one tied with later options ranks before them.

Scale: `visdial_ndcg` returns the per-round value in [0, 1] (like `vqa_accuracy`, aggregated as 100 x
mean). `visdial_retrieval` reports MRR and R@n x100 (the official code returns fractions, the
challenge leaderboard and papers print them as percentages); mean rank stays a rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ranking", "visdial_ndcg", "visdial_rank", "visdial_retrieval"]


def _check_scores(scores: Sequence[float]) -> list[float]:
    values = [float(s) for s in scores]
    if not values:
        raise ValueError("scores must not be empty")
    if any(math.isnan(s) for s in values):
        raise ValueError("scores must not contain NaN")
    return values


def ranking(scores: Sequence[float]) -> list[int]:
    """Option indices from best to worst: score descending, ties by lower index first."""
    values = _check_scores(scores)
    # Python's sort is stable; sorting on -score keeps equal scores in index order.
    return sorted(range(len(values)), key=lambda index: -values[index])


def visdial_rank(scores: Sequence[float], gt_index: int) -> int:
    """1-based rank of option `gt_index` when the options are ranked by `scores` (see `ranking`)."""
    values = _check_scores(scores)
    if not 0 <= gt_index < len(values):
        raise ValueError(f"gt_index {gt_index} is out of range for {len(values)} options")
    target = values[gt_index]
    better = sum(1 for s in values if s > target)
    tied_before = sum(1 for s in values[:gt_index] if s == target)
    return 1 + better + tied_before


def _dcg(relevances: Sequence[float]) -> float:
    # relevances in ranked order; position p (from 0) is rank p + 1, discounted by log2(rank + 1).
    return sum(rel / math.log2(position + 2) for position, rel in enumerate(relevances))


def visdial_ndcg(scores: Sequence[float], relevance: Sequence[float]) -> float:
    """NDCG@k in [0, 1] of one round, k = number of options with non-zero relevance.

    `scores[i]` is the model's score of option i (higher is better), `relevance[i]` its dense
    annotation (VisDial: the fraction of annotators who marked it correct). Raises ValueError when the
    lengths differ or no option is relevant (the official code would return 0/0 = NaN there).
    """
    if len(scores) != len(relevance):
        raise ValueError(f"{len(scores)} scores but {len(relevance)} relevance values")
    rel = [float(r) for r in relevance]
    k = sum(1 for r in rel if r != 0)
    if k == 0:
        raise ValueError("NDCG is undefined for a round with no relevant option (all relevance zero)")
    predicted = [rel[i] for i in ranking(scores)[:k]]
    ideal = sorted(rel, reverse=True)[:k]
    return _dcg(predicted) / _dcg(ideal)


def visdial_retrieval(ranks: Sequence[int]) -> dict[str, float]:
    """Retrieval metrics of the ground-truth options' ranks (from `visdial_rank`), one per round.

    Returns "mrr", "r@1", "r@5", "r@10" (all x100) and "mean_rank" (not scaled).
    """
    values = [int(r) for r in ranks]
    if not values:
        raise ValueError("no ranks to aggregate")
    if any(r < 1 for r in values):
        raise ValueError("ranks start at 1")
    n = len(values)
    return {
        "mrr": 100.0 * sum(1.0 / r for r in values) / n,
        "r@1": 100.0 * sum(r <= 1 for r in values) / n,
        "r@5": 100.0 * sum(r <= 5 for r in values) / n,
        "r@10": 100.0 * sum(r <= 10 for r in values) / n,
        "mean_rank": sum(values) / n,
    }
