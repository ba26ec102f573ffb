"""Re-scoring: a saved predictions file scored against its task's query split, without a model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import formats
from .errors import UserError
from .metrics import get_metric, refuse_undefined
from .predictions import read_predictions
from .runner import demo_data
from .tasks import load_task


def score_file(
    task: str, path: Path, data: str | None, demo: bool, tasks_dirs: tuple[Path, ...] = (), limit: int | None = None
) -> tuple[dict[str, float], int]:
    """The task's metrics over the predictions in `path`: one per query of the task's query split
    (its first `limit` queries, for a run made with --limit); skipped queries are not scored."""
    spec = load_task(task, tasks_dirs)
    metric = get_metric(spec.metric)
    predictions = read_predictions(path)
    if not predictions:
        raise UserError(f"{path} holds no predictions")
    source = data if data is not None else (demo_data(spec) if demo else None)
    examples = formats.load_split(spec, spec.query_split, source).examples
    queries = {example.id: example for example in examples}
    unknown = [p.id for p in predictions if p.id not in queries]
    if unknown:
        raise UserError(f"{path}: query id {unknown[0]} is not in {spec.name}/{spec.query_split} ({len(unknown)} unknown ids); wrong --task or --data?")
    answered = {p.id for p in predictions}
    expected = examples[:limit] if limit is not None else examples
    missing = [e.id for e in expected if e.id not in answered]
    if missing:
        raise UserError(
            f"{path}: no prediction for query {missing[0]} ({len(missing)} of {len(expected)} missing); "
            "pass --limit N if the run used --limit N"
        )
    predictions = [p for p in predictions if p.error is None]
    if spec.request != "generate":
        bare = next((p for p in predictions if not p.scores and not p.ranking), None)
        if bare is not None:
            raise UserError(f"{path}: prediction {bare.id} has no candidate scores or ranking; {task} is a {spec.request} task")
    examples = [queries[p.id] for p in predictions]
    rescored = [replace(p, score=metric.score(p, example)) for p, example in zip(predictions, examples)]
    refuse_undefined(metric, examples, f"{path}")
    return metric.aggregate(rescored, examples), len(predictions)
