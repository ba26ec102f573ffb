"""Metrics: pure functions, one module per family, and the table that task files name them from.

A task's `metric` key picks a `Metric`: `score` gives one query's own value (stored on its
prediction line; None where the metric only exists over a corpus, as CIDEr), and `aggregate`
turns the predictions of a run into the reported numbers (x100). `check`, where a metric is
undefined on some sets of queries (ROC AUC over one class), says why before anything is computed:
`refuse_undefined` calls it on the queries when the run is planned and again on the queries
actually scored. Third-party metrics register
through the `idefics_eval.metrics` entry-point group (an object of type `Metric`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

from ..errors import UserError
from ..examples import Example
from ..predictions import Prediction
from .vqa import vqa_accuracy

Scorer = Callable[[Prediction, Example], "float | None"]
Aggregator = Callable[[Sequence[Prediction], Sequence[Example]], dict[str, float]]
Check = Callable[[Sequence[Example]], "str | None"]


@dataclass(frozen=True)
class Metric:
    name: str
    score: Scorer
    aggregate: Aggregator
    check: Check | None = None  # why the metric is undefined on these examples, or None


def refuse_undefined(metric: Metric, examples: Sequence[Example], where: str) -> None:
    """A one-line UserError when `metric` is undefined on `examples` (`where` names the task and split)."""
    problem = metric.check(examples) if metric.check is not None else None
    if problem:
        raise UserError(f"{where}: {problem}; raise --limit (or drop it) so that the queries hold every class")


def mean_by(name: str, breakdown: str | None = None) -> Aggregator:
    """100 x the mean per-query score, and per group of the metadata key `breakdown`."""

    def aggregate(predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, float]:
        scores = [p.score for p in predictions]
        result = {name: 100.0 * sum(scores) / len(scores) if scores else float("nan")}
        if breakdown:
            groups: dict[str, list[float]] = defaultdict(list)
            for score, example in zip(scores, examples):
                if breakdown in example.metadata:
                    groups[str(example.metadata[breakdown])].append(score)
            for group in sorted(groups):
                result[f"{name}/{group}"] = 100.0 * sum(groups[group]) / len(groups[group])
        return result

    return aggregate


def _vqa(name: str, normalize: str) -> Metric:
    return Metric(name, lambda p, e: vqa_accuracy(p.prediction, e.answers, normalize), mean_by(name, "answer_type"))


def _captioning(predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, float]:
    from .captioning import caption_metrics, grouped_cider

    candidates = {p.id: p.prediction for p in predictions}
    references = {e.id: list(e.answers) for e in examples}
    result, _ = caption_metrics(candidates, references)
    domains = {e.id: str(e.metadata["domain"]) for e in examples if "domain" in e.metadata}
    if domains and len(domains) == len(examples):
        for group, value in grouped_cider(candidates, references, domains).items():
            result.setdefault(f"cider/{group}", value)
    return result


def _accuracy(predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, float]:
    from .classification import accuracy, top_k_accuracy

    labels = [e.label for e in examples]
    result = {"accuracy": accuracy([p.ranking[0] for p in predictions], labels)}
    if all(len(p.ranking) >= 5 for p in predictions):
        result["top5_accuracy"] = top_k_accuracy([p.ranking for p in predictions], labels, 5)
    return result


def _probability_of_second(prediction: Prediction, example: Example) -> float:
    from .classification import two_class_probability

    return two_class_probability(prediction.scores[0], prediction.scores[1])


def _roc_auc(predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, float]:
    from .classification import accuracy, roc_auc

    labels = [e.label for e in examples]
    # The AUC of P(yes) equals that of the log-odds (a monotone map) and the log-odds never round to 1.0.
    return {
        "roc_auc": roc_auc([p.scores[1] - p.scores[0] for p in predictions], labels),
        "accuracy": accuracy([p.ranking[0] for p in predictions], labels),
    }


def _both_labels(examples: Sequence[Example]) -> str | None:
    labels = {e.label for e in examples}
    if len(labels) >= 2:
        return None
    held = f"only label {labels.pop()}" if labels else "no label"
    queries = "the 1 query holds" if len(examples) == 1 else f"the {len(examples)} queries hold"
    return f"ROC AUC needs both classes, but {queries} {held}"


def _ndcg(prediction: Prediction, example: Example) -> float | None:
    from .visdial import visdial_ndcg

    relevance = example.metadata.get("relevance")
    return None if relevance is None else visdial_ndcg(prediction.scores, relevance)


def _visdial(predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, float]:
    from .visdial import visdial_rank, visdial_retrieval

    ndcgs = [p.score for p in predictions if p.score is not None]
    result = {"ndcg": 100.0 * sum(ndcgs) / len(ndcgs)} if ndcgs else {}
    ranks = [visdial_rank(p.scores, e.label) for p, e in zip(predictions, examples) if e.label is not None]
    if ranks:
        result |= visdial_retrieval(ranks)
    return result


def _winoground_group(prediction: Prediction, example: Example) -> float:
    from .winoground import winoground_correct

    return float(winoground_correct(_matrix(prediction))[2])


def _matrix(prediction: Prediction) -> list[list[float]]:
    c0i0, c0i1, c1i0, c1i1 = prediction.scores
    return [[c0i0, c0i1], [c1i0, c1i1]]


def _winoground(predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, float]:
    from .winoground import winoground_scores

    return winoground_scores([_matrix(p) for p in predictions])


def _fairface(predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, float]:
    from .fairness import FAIRFACE_ATTRIBUTES, fairness_report, group_value

    correct = [p.ranking[0] == e.label for p, e in zip(predictions, examples)]
    groups = {a: [group_value(e.metadata, e.fields, a) for e in examples] for a in FAIRFACE_ATTRIBUTES}
    return fairness_report(correct, {a: values for a, values in groups.items() if any(v is not None for v in values)})


METRICS = {
    "vqa_accuracy": _vqa("vqa_accuracy", "vqa"),
    "textvqa_accuracy": _vqa("textvqa_accuracy", "always"),
    "vizwiz_accuracy": _vqa("vizwiz_accuracy", "prediction"),
    "cider": Metric("cider", lambda p, e: None, _captioning),
    "accuracy": Metric("accuracy", lambda p, e: float(p.ranking[0] == e.label), _accuracy),
    "roc_auc": Metric("roc_auc", _probability_of_second, _roc_auc, _both_labels),
    "visdial_ndcg": Metric("visdial_ndcg", _ndcg, _visdial),
    "winoground": Metric("winoground", _winoground_group, _winoground),
    "fairface_accuracy": Metric("fairface_accuracy", lambda p, e: float(p.ranking[0] == e.label), _fairface),
}


def metrics_table() -> dict[str, Metric]:
    found = dict(METRICS)
    for entry in metadata.entry_points(group="idefics_eval.metrics"):
        loaded = entry.load()
        if not isinstance(loaded, Metric):
            raise UserError(f"entry point {entry.name} ({entry.value}) is not an idefics_eval.metrics.Metric")
        found[loaded.name] = loaded
    return found


def get_metric(name: str) -> Metric:
    table = metrics_table()
    if name not in table:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(table))}")
    return table[name]
