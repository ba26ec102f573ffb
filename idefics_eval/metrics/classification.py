"""Classification metrics: accuracy and top-k accuracy (ImageNet-1k, ScienceQA, RenderedSST2) and the
ROC AUC of a two-class probability (HatefulMemes).

Definitions followed: accuracy as usual (fraction of exact matches); ImageNet top-k as in its
evaluation (the label among the k best-ranked classes); HatefulMemes' official metric is the area
under the ROC curve of the predicted probability of "hateful" (the Hateful Memes challenge), computed
here with scikit-learn's `sklearn.metrics.roc_auc_score` (binary case: `y_score` is the score of the
class with the greater label, 1). Checked by `tests/metrics/test_classification.py`.

All reported values are x100.

HatefulMemes with a generative model: the model scores the two class names ("no", "yes") by
log-likelihood; P(yes) is the softmax of those two numbers (`two_class_probability`), and the AUC is
taken over those probabilities, never over hard yes/no decisions: hard labels collapse the ranking to
two values, and their AUC is the balanced accuracy at the 0.5 threshold, a different number. ROC AUC depends only on the order of the scores,
so the log-odds loglik_yes - loglik_no gives the same AUC; it only differs once float64 rounds
P(yes) to exactly 1.0 (log-odds above about 37), where the probability loses its order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["accuracy", "roc_auc", "top_k_accuracy", "two_class_probability"]


def accuracy(predicted: Sequence[int], labels: Sequence[int]) -> float:
    """100 x fraction of positions where `predicted[i] == labels[i]`."""
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("no labels to score")
    return 100.0 * sum(p == y for p, y in zip(predicted, labels)) / len(labels)


def top_k_accuracy(rankings: Sequence[Sequence[int]], labels: Sequence[int], k: int) -> float:
    """100 x fraction of queries whose label is among the first `k` entries of its ranking.

    `rankings[i]` lists candidate indices best first (e.g. the 1,000 ImageNet classes by descending
    log-likelihood); `k=1` is plain accuracy of the top candidate.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(rankings) != len(labels):
        raise ValueError(f"{len(rankings)} rankings but {len(labels)} labels")
    if not labels:
        raise ValueError("no labels to score")
    return 100.0 * sum(label in list(ranking)[:k] for ranking, label in zip(rankings, labels)) / len(labels)


def two_class_probability(loglik_negative: float, loglik_positive: float) -> float:
    """P(positive) = exp(lp) / (exp(ln) + exp(lp)), the softmax over the two class log-likelihoods.

    Computed as the logistic function of lp - ln, with the exponent kept non-positive so that it never
    overflows (e.g. log-likelihoods of -1000 and -1001 are fine). Raises ValueError for NaN inputs or
    when both log-likelihoods are -inf (no probability mass at all).
    """
    ln, lp = float(loglik_negative), float(loglik_positive)
    if math.isnan(ln) or math.isnan(lp):
        raise ValueError("log-likelihoods must not be NaN")
    if ln == lp == -math.inf:
        raise ValueError("both log-likelihoods are -inf: P(positive) is undefined")
    if ln == lp:  # also covers +inf == +inf
        return 0.5
    diff = lp - ln
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


def roc_auc(probabilities: Sequence[float], labels: Sequence[int]) -> float:
    """100 x ROC AUC of `probabilities` (P(label == 1)) against binary `labels` (0 or 1).

    Uses `sklearn.metrics.roc_auc_score` (ties between scores count as half, as the trapezoidal ROC
    curve gives). Pass probabilities or any score increasing with them, not hard 0/1 decisions.
    Raises ValueError when the lengths differ, a label is not 0/1, a score is NaN, or only one class is
    present (scikit-learn itself only warns and returns NaN there).
    """
    from sklearn.metrics import roc_auc_score

    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities but {len(labels)} labels")
    ys = [int(y) for y in labels]
    if any(y not in (0, 1) or y != label for y, label in zip(ys, labels)):
        raise ValueError("labels must be 0 or 1")
    scores = [float(p) for p in probabilities]
    if any(math.isnan(p) for p in scores):
        raise ValueError("probabilities must not contain NaN")
    if len(set(ys)) < 2:
        present = "no examples" if not ys else f"only label {ys[0]}"
        raise ValueError(f"ROC AUC needs both classes among the labels, got {present}")
    return 100.0 * float(roc_auc_score(ys, scores))
