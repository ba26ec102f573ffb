"""Submission files: a run's predictions on a test split, as the split's evaluation server reads them.

VQAv2 test-dev, VizWiz test, TextCaps test and NoCaps test keep their answers on evaluation servers
(EvalAI). A test-server task (`submission:` in its task file, e.g. tasks/vqav2_testdev.yaml) runs
such a split for predictions only; `write_submission` turns one results row of it into the server's
JSON list, after checking it against the split itself: the row was made from this task file and
this split's content, on every question (no --limit, nothing skipped), each question exactly once,
with ids of the type and form the server matches on. A server scores a missing question as wrong
(or rejects the file), so an incomplete file is refused here rather than uploaded.

Formats (docs/reporting.md, "Test-server submissions", cites each server's page):

    vqa       [{"question_id": int, "answer": str}]                      visualqa.org/evaluation.html
    vizwiz    [{"image": "VizWiz_test_00000000.jpg", "answer": str}]     vizwiz.org (VQA task)
    nocaps    [{"image_id": int, "caption": str}]                        nocaps.org (EvalAI)
    textcaps  [{"image_id": str, "caption": str}]                        textvqa.org/textcaps (EvalAI)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import formats
from .errors import UserError
from .examples import Example
from .paths import Confinement
from .predictions import Prediction, read_predictions
from .results import Result, read_results, write_json_atomic
from .scoring import recorded_data
from .tasks import TaskSpec, load_task, parse_task, task_files


@dataclass(frozen=True)
class Server:
    """One evaluation server's file: the id field and how an example gives it, and the text field."""

    id_field: str
    id_of: Callable[[Example], int | str]  # raises ValueError when the example's id is not of the server's form
    text_field: str


def _number(value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _vizwiz_image(example: Example) -> str:
    if not re.fullmatch(r"VizWiz_test_\d{8}\.jpg", example.image_id):
        raise ValueError(f"image {example.image_id!r} is not a VizWiz test file name (VizWiz_test_00000000.jpg)")
    return example.image_id


SERVERS = {
    "vqa": Server("question_id", lambda example: _number(example.id), "answer"),
    "vizwiz": Server("image", _vizwiz_image, "answer"),
    "nocaps": Server("image_id", lambda example: _number(example.image_id), "caption"),
    "textcaps": Server("image_id", lambda example: example.image_id, "caption"),
}


def write_submission(run_dir: Path, task: str, output: Path, shots: int | None = None, seed: int | None = None,
                     data: str | None = None, tasks_dirs: tuple[Path, ...] = ()) -> int:
    """Write the server's file for one row of `task` in `run_dir`; returns the number of entries.
    `data` replaces the data folder the run recorded (the split moved since)."""
    spec = load_task(task, tasks_dirs)
    if spec.submission is None:
        raise UserError(f"task {task} is scored here, not by an evaluation server, so it has no submission file; "
                        f"the test-server tasks are {', '.join(test_server_tasks(tasks_dirs))}")
    row = _row(run_dir, spec, shots, seed)
    examples = _split(spec, row, data)
    predictions = _complete(run_dir, row, examples)
    server = SERVERS[spec.submission]
    entries = [{server.id_field: _server_id(server, example, spec), server.text_field: predictions[example.id].prediction}
               for example in examples]
    try:
        write_json_atomic(output, entries)
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror}; choose another -o") from None
    return len(entries)


def test_server_tasks(tasks_dirs: tuple[Path, ...] = ()) -> list[str]:
    return [name for name, path in task_files(tasks_dirs).items() if parse_task(path).submission is not None]


def _row(run_dir: Path, spec: TaskSpec, shots: int | None, seed: int | None) -> Result:
    """The one results row the file is made from: --shots and --seed choose among the task's rows."""
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError(f"no results.json in {run_dir}; run `idefics-eval run --task {spec.name} --output-dir {run_dir}` first")
    rows = read_results(path)
    ours = [row for row in rows if row.task == spec.name and row.predictions is not None]
    if not ours:
        held = ", ".join(sorted({row.task for row in rows})) or "none"
        raise UserError(f"{path} holds no {spec.name} rows (its tasks: {held}); a submission is made from a run of "
                        f"{spec.name} on its {spec.query_split} split: `idefics-eval run --task {spec.name}`")
    chosen = [row for row in ours if (shots is None or row.shots == shots) and (seed is None or row.seed == seed)]
    if len(chosen) != 1:
        have = ", ".join(f"--shots {row.shots}" + (f" --seed {row.seed}" if row.seed is not None else "") for row in ours)
        problem = "none matches" if not chosen else f"{len(chosen)} rows match"
        raise UserError(f"{path}: {problem} of the {spec.name} rows ({have}); choose one with --shots (and --seed)")
    row = chosen[0]
    data = row.config.get("data", {})
    split = f"{spec.name}/{spec.query_split}"
    if data.get("query_split") != split or row.config.get("task", {}).get("digest") != spec.digest:
        raise UserError(f"{path}: the {spec.name} {row.shots}-shot row was made on {data.get('query_split')} with another "
                        f"version of {spec.path}, not on {split} with this one; rerun the task into a new --output-dir")
    return row


def _split(spec: TaskSpec, row: Result, data: str | None) -> list[Example]:
    """The test split as it is now, which must be what the run answered."""
    where = f"the {spec.name} {row.shots}-shot row"
    source = data if data is not None else recorded_data(row.config["data"]["source"], spec, where)
    examples = formats.load_split(spec, spec.query_split, source)
    if not examples.is_recorded_as(row.config["data"]["query_fingerprint"], row.config["data"]["source"]):
        raise UserError(f"{spec.name}/{spec.query_split} in {source} is not the split the run answered (its content "
                        "changed since); rerun the task on it into a new --output-dir")
    limit = row.config.get("limit")
    if limit is not None and limit < len(examples):
        raise UserError(f"the {spec.name} run answered only the first {limit} of {len(examples)} questions (--limit "
                        f"{limit}); the server scores every question, a missing one as wrong: rerun without --limit")
    return list(examples.examples)


def _complete(run_dir: Path, row: Result, examples: list[Example]) -> dict[str, Prediction]:
    """The row's predictions by id: one for every question of the split, none skipped, nothing else."""
    path = Confinement(run_dir, "the run folder").check(row.predictions, f"{run_dir / 'results.json'} row {row.task}",
                                                        "restore results.json", what="file")
    if not path.is_file():
        raise UserError(f"{path} (named by {run_dir / 'results.json'}) not found; rerun the task into {run_dir}")
    predictions = read_predictions(path)
    counts = Counter(prediction.id for prediction in predictions)
    wanted = {example.id for example in examples}
    twice = next((i for i, n in counts.items() if n > 1), None)
    missing = next((example.id for example in examples if example.id not in counts), None)
    extra = next((i for i in counts if i not in wanted), None)
    skipped = [prediction for prediction in predictions if prediction.error is not None]
    if twice is not None:
        raise UserError(f"{path}: question {twice} is answered {counts[twice]} times; rerun the task into a new --output-dir")
    if missing is not None or extra is not None:
        problem = f"has no answer to question {missing}" if missing is not None else f"answers question {extra}, not in the split"
        raise UserError(f"{path} {problem} ({len(counts)} answers, {len(wanted)} questions); rerun the task on the whole split")
    if skipped:
        raise UserError(f"{path}: {len(skipped)} questions were skipped (question {skipped[0].id}: {skipped[0].error}); "
                        "fix them and rerun the task (the answered ones are reused)")
    return {prediction.id: prediction for prediction in predictions}


def _server_id(server: Server, example: Example, spec: TaskSpec) -> int | str:
    try:
        return server.id_of(example)
    except ValueError as error:
        raise UserError(f"{spec.name}/{spec.query_split} example {example.id}: {error}, which the {spec.submission} "
                        f"server does not match on; check the data against {spec.path}") from None
