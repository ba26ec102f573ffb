"""Winoground text, image and group scores.

Definition followed: Thrush et al., "Winoground: Probing Vision and Language Models for
Visio-Linguistic Compositionality" (CVPR 2022, arXiv 2204.03162), its text/image/group score
definitions; public evaluation code for facebook/winoground uses the same comparisons (helpers named
`text_correct` / `image_correct`). Checked by
`tests/metrics/test_winoground.py` on hand-made 2x2 cases.

Each example has captions C0, C1 and images I0, I1, where C0 belongs with I0 and C1 with I1, and a
model score s(C, I) (here: the length-normalised log-likelihood of the caption given the image):

* text score (pick the caption for each image): s(C0, I0) > s(C1, I0) and s(C1, I1) > s(C0, I1);
* image score (pick the image for each caption): s(C0, I0) > s(C0, I1) and s(C1, I1) > s(C1, I0);
* group score: both.

Comparisons are strict: a tie counts as wrong (a model giving every pair the same score gets 0, not
100). Reported x100, as the percentage of examples that are correct.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["winoground_correct", "winoground_scores"]


def winoground_correct(example_scores: Sequence[Sequence[float]]) -> tuple[bool, bool, bool]:
    """(text correct, image correct, group correct) for one example.

    `example_scores[c][i]` is the score of caption c with image i (c, i in {0, 1}). Raises ValueError
    if it is not 2x2 or holds a NaN.
    """
    if len(example_scores) != 2 or any(len(row) != 2 for row in example_scores):
        raise ValueError("each Winoground example needs a 2x2 score table: scores[caption][image]")
    (c0_i0, c0_i1), (c1_i0, c1_i1) = ((float(v) for v in row) for row in example_scores)
    if any(math.isnan(v) for v in (c0_i0, c0_i1, c1_i0, c1_i1)):
        raise ValueError("Winoground scores must not be NaN")
    text = c0_i0 > c1_i0 and c1_i1 > c0_i1
    image = c0_i0 > c0_i1 and c1_i1 > c1_i0
    return text, image, text and image


def winoground_scores(scores: Sequence[Sequence[Sequence[float]]]) -> dict[str, float]:
    """{"text", "image", "group"}: 100 x fraction of examples correct; `scores[n][c][i]` as above."""
    if not scores:
        raise ValueError("no Winoground examples to score")
    results = [winoground_correct(example) for example in scores]
    n = len(results)
    return {
        "text": 100.0 * sum(r[0] for r in results) / n,
        "image": 100.0 * sum(r[1] for r in results) / n,
        "group": 100.0 * sum(r[2] for r in results) / n,
    }
