"""Re-scoring without a model: a run folder's predictions files, or one predictions file, scored
against the query split they answer.

A run folder's results.json rows record how each predictions file was made: the task and its
version, the data's source and fingerprint, --limit and --tasks-dir. So `score RUN_DIR` needs no
options and gives the run's own numbers, and `score --predictions FILE` of a file in a run folder
uses the same record. What the user passes (--data, --demo, --limit, --tasks-dir) takes the place of
what was recorded. Queries other than the run's are refused when the data came from the record (the
data changed under the run) and warned about when the user chose the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import formats
from .comparability import bundled_data
from .errors import UserError
from .examples import ExampleSet
from .formats import BUNDLED, demo_data
from .metrics import get_metric, refuse_undefined
from .predictions import prediction_file_of, read_predictions
from .results import Result, mean_over_seeds, read_results
from .splits import SELECTION, load_selection_split, recorded_subsets
from .tasks import TaskSpec, load_task


@dataclass(frozen=True)
class Given:
    """What the user passed to `score`; what is not given comes from the run's record."""

    data: str | None = None
    demo: bool = False
    limit: int | None = None
    tasks_dirs: tuple[Path, ...] = ()
    cache_dir: Path | None = None  # where a hub dataset's files were kept (run's --cache-dir): found there, not downloaded again

    @property
    def chose_data(self) -> bool:
        return self.data is not None or self.demo

    def data_for(self, spec: TaskSpec) -> str | None:
        return self.data if self.data is not None else (demo_data(spec) if self.demo else None)


@dataclass
class Rescored:
    rows: list[Result]  # the run's rows with the metrics computed again
    notes: list[str] = field(default_factory=list)  # what differs from the run: other data, other metrics


def recorded_data(source: str, spec: TaskSpec, where: str) -> str:
    """The --data value that loads a recorded source again. The bundled sample data is this
    installation's copy (a run made from another checkout records that one's path); a hub source
    was recorded as "id:config" where the task names a config."""
    if bundled_data(source):  # by the folder's own name: a task from --tasks-dir may read another task's sample data
        bundled = BUNDLED / Path(source).name
        if not bundled.is_dir():
            raise UserError(f"{where}: the run used the bundled sample data {Path(source).name}, which this installation "
                            "lacks; pass --data")
        return str(bundled)
    if Path(source).exists():
        return source
    if Path(source).is_absolute():
        raise UserError(f"{where}: the {spec.name} data the run used, {source}, is not there; restore it, or pass --data with its folder")
    config = spec.huggingface.config if spec.huggingface else None
    return source.removesuffix(f":{config}") if config else source


def query_split(spec: TaskSpec, row: Result | None, given: Given, where: str, notes: list[str]) -> ExampleSet:
    """The query split to score against: the data given, else the data `row` records, checked
    against the fingerprint the row records."""
    split = load_queries(spec, row, given, where)
    check_queries(split, row, given, where, notes)
    return split


def load_queries(spec: TaskSpec, row: Result | None, given: Given, where: str) -> ExampleSet:
    """The queries `row` scored: its task's query split, or the selection split it records, drawn
    again from the train and reporting splits as the run drew it (splits.py)."""
    recorded = (row.config.get("data") or {}) if row is not None else {}
    if given.chose_data or not recorded.get("source"):
        data = given.data_for(spec)
    else:
        data = recorded_data(recorded["source"], spec, where)
    split = (row.config.get("split") or {}) if row is not None else {}
    if split.get("name") == SELECTION:
        selection, support = recorded_subsets(split)
        return load_selection_split(spec, data, given.cache_dir, selection, support)[0].examples
    return formats.load_split(spec, spec.query_split, data, given.cache_dir)


def check_queries(split: ExampleSet, row: Result | None, given: Given, where: str, notes: list[str],
                  remedy: str = "restore the data, or pass --data to score against other data") -> None:
    """Other queries than the run's are refused when the data came from the record (the data changed
    under the run), and noted when the user gave the data (corrected annotations, say)."""
    recorded = (row.config.get("data") or {}) if row is not None else {}
    expected = recorded.get("query_fingerprint")
    if not expected or split.is_recorded_as(expected, recorded.get("source")):
        return
    differs = (f"{where}: the {split.name} queries at {split.source} are not those the run scored "
               f"(fingerprint {split.fingerprint}, results.json records {expected})")
    if not given.chose_data:
        raise UserError(f"{differs}; {remedy}")
    notes.append(f"{differs}; scored against the data given")


def check_task_version(spec: TaskSpec, row: Result, where: str) -> None:
    """Predictions are scored by the task file they were made with: another version may read other
    fields or use another metric, so its numbers would not be the run's."""
    recorded = (row.config.get("task") or {}).get("version")
    if recorded is not None and recorded != spec.version:
        raise UserError(f"{where}: task {spec.name} is version {spec.version} in {spec.path}, the run used version "
                        f"{recorded}; pass --tasks-dir with the task file of version {recorded}, or rerun the evaluation")


def score_predictions(spec: TaskSpec, path: Path, split: ExampleSet, limit: int | None) -> tuple[dict[str, float], int]:
    """The task's metrics over the predictions in `path`: one per query of `split` (its first `limit`
    queries, for a run made with --limit), in split order as the runner scores them; skipped queries
    are not scored."""
    metric = get_metric(spec.metric)
    predictions = {p.id: p for p in read_predictions(path)}
    if not predictions:
        raise UserError(f"{path} holds no predictions")
    queries = {example.id for example in split.examples}
    unknown = [id_ for id_ in predictions if id_ not in queries]
    if unknown:
        raise UserError(f"{path}: query id {unknown[0]} is not in {spec.name}/{spec.query_split} ({len(unknown)} unknown ids); "
                        "wrong --task or --data?")
    expected = split.examples[:limit] if limit is not None else split.examples
    missing = [e.id for e in expected if e.id not in predictions]
    if missing:
        raise UserError(
            f"{path}: no prediction for query {missing[0]} ({len(missing)} of {len(expected)} missing); "
            "pass --limit N if the run used --limit N"
        )
    # only the first `limit` queries, as the run scored them: a file a longer run wrote holds more
    scored = [(predictions[e.id], e) for e in expected if predictions[e.id].error is None]
    if spec.request != "generate":
        bare = next((p for p, _ in scored if not p.scores and not p.ranking), None)
        if bare is not None:
            raise UserError(f"{path}: prediction {bare.id} has no candidate scores or ranking; {spec.name} is a {spec.request} task")
    examples = [e for _, e in scored]
    if not formats.has_references(spec, split):
        return {}, len(scored)  # a test split: its evaluation server scores it, as the run said
    rescored = [replace(p, score=metric.score(p, e)) for p, e in scored]
    refuse_undefined(metric, examples, f"{path}")
    return metric.aggregate(rescored, examples), len(rescored)


def run_rows(folder: Path) -> list[Result]:
    """The rows of a run folder's results.json, or one line saying why `folder` is not a run."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give the --output-dir of a run")
    if not (folder / "results.json").is_file():
        raise UserError(f"{folder} is not a run folder (no results.json); give the --output-dir of a finished run")
    return read_results(folder / "results.json")


def score_run(folder: Path, given: Given = Given(), tasks: Sequence[str] | None = None) -> Rescored:
    """Every predictions file a run folder's results.json names, scored again as the run scored it;
    means over seeds are taken again from the rescored seeds."""
    rows = [row for row in run_rows(folder) if tasks is None or row.task in tasks]
    if not rows:
        raise UserError(f"{folder}/results.json holds no rows of {', '.join(tasks or ())}; check --task")
    if given.data is not None and len({row.task for row in rows}) > 1:
        raise UserError(f"--data names one task's data, and {folder} holds several tasks; add --task")
    notes: list[str] = []
    splits: dict[str, tuple[TaskSpec, ExampleSet]] = {}
    rescored = [_rescore(folder, row, given, splits, notes) for row in rows if row.predictions is not None]
    for row in rows:
        if row.predictions is None:  # a mean over seeds
            seeds = [r for r in rescored if (r.task, r.shots, r.selection) == (row.task, row.shots, row.selection)]
            rescored.append(replace(mean_over_seeds(seeds), config=row.config))
    order = {row.key: i for i, row in enumerate(rows)}
    rescored.sort(key=lambda r: order[r.key])
    notes += [note for old, new in zip(rows, rescored) for note in _differences(old, new)]
    return Rescored(rescored, notes)


def _rescore(folder: Path, row: Result, given: Given, splits: dict, notes: list[str]) -> Result:
    where = f"{folder}/results.json ({row.task}, {row.shots} shots)"
    if row.task not in splits:
        spec = load_task(row.task, given.tasks_dirs or recorded_tasks_dirs(row))
        check_task_version(spec, row, where)
        splits[row.task] = spec, query_split(spec, row, given, where, notes)
    spec, split = splits[row.task]
    path = folder / row.predictions
    if not path.is_file():
        raise UserError(f"{where} names {row.predictions}, which is not there; restore it or rerun the evaluation")
    metrics, count = score_predictions(spec, path, split, given.limit if given.limit is not None else row.config.get("limit"))
    return replace(row, metrics=metrics, num_examples=count)


def recorded_tasks_dirs(row: Result) -> tuple[Path, ...]:
    return tuple(Path(d) for d in row.config.get("tasks_dirs") or ())


def _differences(old: Result, new: Result) -> list[str]:
    return [f"{new.task} {new.shots} shots{'' if new.seed is None else f' seed {new.seed}'}: {name} {new.metrics.get(name)} "
            f"rescored, {value} in results.json"
            for name, value in old.metrics.items() if not _same(value, new.metrics.get(name))]


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


def recorded_row(path: Path) -> tuple[Path, Result] | None:
    """The run folder and results row that name predictions file `path` (or the predictions file that
    sample log `path` extends), if it lies in a run folder."""
    path = prediction_file_of(path)
    folder = path.parent.parent
    if path.parent.name != "predictions" or not (folder / "results.json").is_file():
        return None
    found = [row for row in read_results(folder / "results.json")
             if row.predictions is not None and (folder / row.predictions).resolve() == path.resolve()]
    return (folder, found[0]) if found else None


def score_file(path: Path, task: str | None = None, given: Given = Given()) -> tuple[str, dict[str, float], int, list[str]]:
    """One predictions file: (task, metrics, predictions scored, notes). A file of a run folder is
    scored with what the run recorded, where not given."""
    recorded = recorded_row(path)
    notes: list[str] = []
    if recorded is None:
        if task is None:
            raise UserError(f"{path} is not named by a run's results.json, so its task is not known; pass --task")
        spec = load_task(task, given.tasks_dirs)
        return spec.name, *score_predictions(spec, path, query_split(spec, None, given, str(path), notes), given.limit), notes
    folder, row = recorded
    if task is not None and task != row.task:
        raise UserError(f"{path} holds {row.task} predictions ({folder}/results.json); drop --task or pass --task {row.task}")
    where = f"{folder}/results.json ({row.task}, {row.shots} shots)"
    spec = load_task(row.task, given.tasks_dirs or recorded_tasks_dirs(row))
    check_task_version(spec, row, where)
    split = query_split(spec, row, given, where, notes)
    limit = given.limit if given.limit is not None else row.config.get("limit")
    return spec.name, *score_predictions(spec, path, split, limit), notes
