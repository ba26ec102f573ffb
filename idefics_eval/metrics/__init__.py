"""Metrics: pure functions, one module per family, and the table that task files name them from.

A task's `metric` key picks a `Metric`: how one prediction is scored against its example, and
which example metadata the report breaks the mean down by.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import UserError
from ..examples import Example
from .vqa import vqa_accuracy


@dataclass(frozen=True)
class Metric:
    name: str
    score: Callable[[str, Example], float]  # one query's score in [0, 1]
    breakdown: str | None = None  # metadata key to report per-group means for

    def aggregate(self, scores: Sequence[float], examples: Sequence[Example]) -> dict[str, float]:
        """100 x mean score, and 100 x mean per group of `breakdown` (e.g. VQA answer types)."""
        result = {self.name: 100.0 * sum(scores) / len(scores) if scores else float("nan")}
        if self.breakdown:
            groups: dict[str, list[float]] = defaultdict(list)
            for score, example in zip(scores, examples):
                if self.breakdown in example.metadata:
                    groups[str(example.metadata[self.breakdown])].append(score)
            for group in sorted(groups):
                result[f"{self.name}/{group}"] = 100.0 * sum(groups[group]) / len(groups[group])
        return result


METRICS = {
    "vqa_accuracy": Metric("vqa_accuracy", lambda prediction, example: vqa_accuracy(prediction, example.answers), "answer_type"),
}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}")
    return METRICS[name]
