"""Tests for `idefics_eval.metrics.classification`: accuracy, top-k accuracy, the two-class softmax and
ROC AUC (scikit-learn's `roc_auc_score`, of probabilities, never of hard labels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from idefics_eval.metrics.classification import accuracy, roc_auc, top_k_accuracy, two_class_probability

# ----------------------------------------------------------------------------------------------
# Accuracy and top-k
# ----------------------------------------------------------------------------------------------


def test_accuracy() -> None:
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(75.0)
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_top_k_accuracy() -> None:
    rankings = [[3, 1, 2, 0], [0, 2, 1, 3], [2, 0, 3, 1], [1, 0, 2, 3]]
    labels = [3, 2, 1, 1]  # at positions 1, 2, 4, 1 of their rankings
    assert top_k_accuracy(rankings, labels, 1) == pytest.approx(50.0)
    assert top_k_accuracy(rankings, labels, 2) == pytest.approx(75.0)
    assert top_k_accuracy(rankings, labels, 3) == pytest.approx(75.0)
    assert top_k_accuracy(rankings, labels, 4) == pytest.approx(100.0)
    # top-1 is the accuracy of the first candidate
    assert top_k_accuracy(rankings, labels, 1) == accuracy([r[0] for r in rankings], labels)
    with pytest.raises(ValueError, match="at least 1"):
        top_k_accuracy(rankings, labels, 0)


# ----------------------------------------------------------------------------------------------
# P(positive) from two log-likelihoods
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ln", "lp"), [(-2.0, -1.0), (-1.0, -2.0), (-0.3, -0.3), (-5.5, -0.1), (0.0, -40.0)])
def test_two_class_probability_is_the_softmax(ln: float, lp: float) -> None:
    assert two_class_probability(ln, lp) == pytest.approx(math.exp(lp) / (math.exp(ln) + math.exp(lp)), rel=1e-12)


def test_two_class_probability_is_numerically_stable() -> None:
    # The plain formula overflows / underflows here; only the difference matters.
    assert two_class_probability(-1000.0, -1001.0) == pytest.approx(1 / (1 + math.e), rel=1e-12)
    assert two_class_probability(-1001.0, -1000.0) == pytest.approx(math.e / (1 + math.e), rel=1e-12)
    assert two_class_probability(0.0, -1000.0) == pytest.approx(math.exp(-1000.0)) and two_class_probability(0.0, -1000.0) >= 0
    assert two_class_probability(-1000.0, 0.0) == 1.0
    assert two_class_probability(-math.inf, -3.0) == 1.0
    assert two_class_probability(-3.0, -math.inf) == 0.0
    with pytest.raises(ValueError):
        two_class_probability(-math.inf, -math.inf)
    with pytest.raises(ValueError):
        two_class_probability(float("nan"), 0.0)


# ----------------------------------------------------------------------------------------------
# ROC AUC
# ----------------------------------------------------------------------------------------------

# (loglik "no", loglik "yes", label): label 1 = hateful.
PAIRS = [(-0.2, -1.9, 0), (-0.9, -0.6, 1), (-1.2, -1.0, 0), (-0.4, -1.1, 1), (-2.3, -0.1, 1),
         (-0.7, -0.8, 0), (-0.1, -2.5, 0), (-1.6, -0.3, 1), (-0.5, -0.9, 1), (-1.0, -0.95, 0)]


def test_roc_auc_equals_sklearn_on_p_yes_from_log_likelihoods() -> None:
    labels = [y for _, _, y in PAIRS]
    p_yes = [two_class_probability(no, yes) for no, yes, _ in PAIRS]
    # Independent P(yes): numpy softmax over the two log-likelihoods.
    logits = np.array([[no, yes] for no, yes, _ in PAIRS])
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    assert p_yes == pytest.approx(list(softmax[:, 1]), rel=1e-12)
    expected = 100 * roc_auc_score(labels, softmax[:, 1])
    assert roc_auc(p_yes, labels) == pytest.approx(expected, abs=1e-12)
    # By hand: 25 (positive, negative) pairs; the positive has the higher P(yes) in 19 of them.
    assert expected == pytest.approx(100 * 19 / 25)


def test_hard_label_auc_is_a_different_number() -> None:
    labels = [y for _, _, y in PAIRS]
    p_yes = [two_class_probability(no, yes) for no, yes, _ in PAIRS]
    hard = [1.0 if p > 0.5 else 0.0 for p in p_yes]
    # Sorted by P(yes), negatives sit at .08 .15 .48 .51 .55 and positives at .33 .40 .57 .79 .90.
    # Hard labels at 0.5: TPR = 3/5, TNR = 3/5; their AUC is the balanced accuracy, 60, not 76.
    assert roc_auc(hard, labels) == pytest.approx(60.0)
    assert roc_auc(p_yes, labels) == pytest.approx(76.0)


def test_roc_auc_ties_count_half() -> None:
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(50.0)
    assert roc_auc([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(100 * 3.5 / 4)


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        ([0.1, 0.9], [1, 1], "both classes"),  # scikit-learn would only warn and return NaN
        ([0.1, 0.9], [0, 0], "both classes"),
        ([], [], "both classes"),
        ([0.1, 0.9], [0, 2], "0 or 1"),
        ([0.1], [0, 1], "labels"),
        ([0.1, float("nan")], [0, 1], "NaN"),
    ],
)
def test_roc_auc_rejects_bad_input(probabilities, labels, message) -> None:
    with pytest.raises(ValueError, match=message):
        roc_auc(probabilities, labels)


def test_a_metric_undefined_on_the_queries_is_refused_in_one_line() -> None:
    from idefics_eval.errors import UserError
    from idefics_eval.examples import Example
    from idefics_eval.metrics import get_metric, refuse_undefined

    def query(i: int, label: int) -> Example:
        return Example(id=str(i), image_id=str(i), image=None, fields={}, answers=("yes",), label=label)

    metric = get_metric("roc_auc")
    refuse_undefined(metric, [query(0, 0), query(1, 1)], "memes/test")  # both classes: defined
    with pytest.raises(UserError, match=r"^memes/test: ROC AUC needs both classes, but the 2 queries hold only label 1;"):
        refuse_undefined(metric, [query(0, 1), query(1, 1)], "memes/test")
    refuse_undefined(get_metric("accuracy"), [query(0, 1)], "memes/test")  # accuracy is defined on one class
