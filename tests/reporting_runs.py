"""Results folders built by code for the reporting tests (export, compare, plots, bootstrap).

`table_run` writes results.json rows with chosen metric values and no predictions (enough for the
card layout and plots); `scored_run` writes real predictions files for a task's bundled demo queries,
scored by the task's metric, with rows exactly as the runner records them (data source, query
fingerprint, limit, split size, generation settings, selection, model), so that intervals, paired
comparisons and the comparability checks can be computed from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from idefics_eval import formats
from idefics_eval.examples import Example
from idefics_eval.metrics import get_metric
from idefics_eval.predictions import Prediction, prediction_file
from idefics_eval.results import Result, merge_results
from idefics_eval.runner import demo_data
from idefics_eval.tasks import load_task


def _config(model: str, fingerprint: str, task: str, weights_checksum: str | None = None, **extra) -> dict:
    """A row's config; `weights_checksum` None: a row written before rows recorded it."""
    checksum = {"weights_checksum": weights_checksum} if weights_checksum else {}
    return {"task": {"name": task, "version": 1}, "model": {"name": model, "fingerprint": fingerprint, "dtype": "float32"} | checksum,
            "command": ["idefics-eval", "run", "--task", task]} | extra


def table_run(folder: Path, model: str, cells: Mapping[tuple[str, int], Mapping[str, float]], fingerprint: str = "f" * 16,
              num_examples: int = 100, weights_checksum: str | None = None, **settings) -> Path:
    """A results folder whose rows carry `cells[(task, shots)]` as their metrics, and `settings` in
    their config (generation={...}, limit=8, ...)."""
    rows = [Result(task=task, shots=shots, selection="rices", seed=None, metrics=dict(metrics), num_examples=num_examples,
                   num_truncated=0, predictions=None, config=_config(model, fingerprint, task, weights_checksum, **settings))
            for (task, shots), metrics in cells.items()]
    merge_results(folder / "results.json", rows)
    return folder


def demo_queries(task: str) -> list[Example]:
    spec = load_task(task)
    return list(formats.load_split(spec, spec.query_split, demo_data(spec)).examples)


def scored_run(folder: Path, model: str, task: str, answers: Mapping[int, Callable[[int, Example], Prediction]],
               limit: int | None = None, fingerprint: str = "f" * 16, selection: str = "rices", seed: int | None = None,
               num_beams: int | None = None) -> Path:
    """Predictions for the first `limit` demo queries of `task` at each shot count of `answers`
    (`answers[shots](i, example)` makes query i's prediction), scored, with their results rows;
    `selection` and `seed` name the shots' selection, `num_beams` is a --num-beams given."""
    spec = load_task(task)
    split = formats.load_split(spec, spec.query_split, demo_data(spec))
    examples = list(split.examples[:limit] if limit else split.examples)
    metric = get_metric(spec.metric)
    rows = []
    for shots, answer in answers.items():
        predictions = [answer(i, example) for i, example in enumerate(examples)]
        predictions = [replace(p, score=metric.score(p, e)) for p, e in zip(predictions, examples)]
        row_seed = seed if shots > 0 else None  # zero-shot is evaluated once for every seed, as the runner does
        path = prediction_file(folder, task, shots, row_seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(p.to_json() + "\n" for p in predictions))
        data = {"source": split.source, "query_split": split.name, "query_fingerprint": split.fingerprint}
        generation = {"max_new_tokens": spec.generation.max_new_tokens, "num_beams": num_beams or spec.generation.num_beams}
        config = _config(model, fingerprint, task, data=data, limit=limit, generation=generation, num_queries=len(split.examples),
                         demo_data=True, request=spec.request, shots={"selection": selection, "seed": row_seed},
                         generation_options={"num_beams": num_beams} if num_beams else {})
        rows.append(Result(task=task, shots=shots, selection=selection, seed=row_seed, metrics=metric.aggregate(predictions, examples),
                           num_examples=len(examples), num_truncated=0, predictions=str(prediction_file(Path("."), task, shots, row_seed)),
                           config=config))
    merge_results(folder / "results.json", rows)
    return folder


def vqa_answers(correct: Callable[[int], bool]) -> Callable[[int, Example], Prediction]:
    """Query i answered with its most common ground-truth answer when `correct(i)`, else wrongly."""
    from idefics_eval.prompts import most_common_answer

    def make(i: int, example: Example) -> Prediction:
        text = most_common_answer(example) if correct(i) else "zzz"
        return Prediction(id=example.id, prediction=text, shots=(), score=None)

    return make
