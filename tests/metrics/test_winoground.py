"""Tests for `idefics_eval.metrics.winoground` on hand-made 2x2 cases (scores[caption][image]).

Definition: Thrush et al. 2022. text: s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1);
image: s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0); group: both; strict comparisons.
"""

from __future__ import annotations

import pytest

from idefics_eval.metrics.winoground import winoground_correct, winoground_scores

# Layout reminder: [[s(c0,i0), s(c0,i1)], [s(c1,i0), s(c1,i1)]]
ALL_CORRECT = [[5.0, 1.0], [2.0, 6.0]]
# For image 0 caption 0 wins (5 > 1), for image 1 caption 1 wins (7 > 6): text correct.
# Caption 0 prefers image 1 (6 > 5): image wrong.
TEXT_ONLY = [[5.0, 6.0], [1.0, 7.0]]
# Caption 0 prefers image 0 (5 > 1), caption 1 prefers image 1 (7 > 6): image correct.
# For image 0 caption 1 wins (6 > 5): text wrong.
IMAGE_ONLY = [[5.0, 1.0], [6.0, 7.0]]
ALL_WRONG = [[1.0, 5.0], [6.0, 2.0]]


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        (ALL_CORRECT, (True, True, True)),
        (TEXT_ONLY, (True, False, False)),
        (IMAGE_ONLY, (False, True, False)),
        (ALL_WRONG, (False, False, False)),
    ],
)
def test_text_image_group_per_example(example, expected) -> None:
    assert winoground_correct(example) == expected


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ([[5.0, 1.0], [5.0, 6.0]], (False, True, False)),  # s(c0,i0) == s(c1,i0): text wrong
        ([[5.0, 5.0], [2.0, 6.0]], (True, False, False)),  # s(c0,i0) == s(c0,i1): image wrong
        ([[5.0, 6.0], [2.0, 6.0]], (False, False, False)),  # s(c1,i1) == s(c0,i1): both wrong
        ([[3.0, 3.0], [3.0, 3.0]], (False, False, False)),  # a constant model scores nothing
    ],
)
def test_ties_are_wrong(example, expected) -> None:
    assert winoground_correct(example) == expected


def test_corpus_scores() -> None:
    scores = [ALL_CORRECT, TEXT_ONLY, TEXT_ONLY, IMAGE_ONLY, ALL_WRONG]
    assert winoground_scores(scores) == {
        "text": pytest.approx(60.0),  # ALL_CORRECT + 2 x TEXT_ONLY
        "image": pytest.approx(40.0),  # ALL_CORRECT + IMAGE_ONLY
        "group": pytest.approx(20.0),
    }


def test_rejects_bad_shapes_and_nan() -> None:
    with pytest.raises(ValueError, match="2x2"):
        winoground_correct([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="2x2"):
        winoground_correct([[1.0, 2.0]])
    with pytest.raises(ValueError, match="NaN"):
        winoground_correct([[float("nan"), 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError):
        winoground_scores([])
