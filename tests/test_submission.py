"""Test-server splits and their submission files: a run on a split without references writes
predictions and no metric (and says so), and `idefics-eval submission` writes each server's JSON
exactly, checked against the split; what it refuses is one line and exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from idefics_eval import formats
from idefics_eval.plan import DEMO_DATA
from idefics_eval.predictions import read_predictions
from idefics_eval.results import read_results
from idefics_eval.submission import SERVERS
from idefics_eval.tasks import load_task
from tests.conftest import invoke

QUICK = ("--demo", "--shots", "0", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress")
# task -> (id field, its JSON type, text field): each server's format (idefics_eval/submission.py cites them)
FORMATS = {
    "vqav2_testdev": ("question_id", int, "answer"),
    "vizwiz_test": ("image", str, "answer"),
    "textcaps_test": ("image_id", str, "caption"),
    "nocaps_test": ("image_id", int, "caption"),
}


def run(capsys, task: str, out: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(capsys, "run", "--task", task, "--output-dir", str(out), *QUICK, *extra)


def split_of(task: str):
    spec = load_task(task)
    return formats.load_split(spec, spec.query_split, str(DEMO_DATA / task))


def assert_refused(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("task", sorted(FORMATS))
def test_demo_run_on_a_test_split_writes_predictions_and_no_metric(task, tmp_path, capsys):
    code, out, err = run(capsys, task, tmp_path, "--limit", "2")
    assert code == 0, err
    [row] = read_results(tmp_path / "results.json")
    assert row.metrics == {} and row.num_examples == 2
    assert "no reference answers" in row.config["metric_skipped"]
    predictions = read_predictions(tmp_path / row.predictions)
    assert len(predictions) == 2 and all(p.prediction is not None and p.score is None for p in predictions)
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {row.config['metric_skipped']}"] and "metric skipped" in notes[0]


def test_rescoring_a_test_split_run_computes_no_metric(tmp_path, capsys):
    from idefics_eval.scoring import score_run

    code, _, err = run(capsys, "textcaps_test", tmp_path, "--limit", "2")
    assert code == 0, err
    [row] = score_run(tmp_path).rows
    assert row.metrics == {} and row.num_examples == 2


@pytest.mark.parametrize("task", sorted(FORMATS))
def test_submission_writes_the_servers_format_for_every_question(task, tmp_path, capsys):
    code, _, err = run(capsys, task, tmp_path)
    assert code == 0, err
    file = tmp_path / "submission.json"
    code, out, err = invoke(capsys, "submission", str(tmp_path), "--task", task, "-o", str(file))
    assert code == 0, err
    entries = json.loads(file.read_text())
    id_field, id_type, text_field = FORMATS[task]
    examples = split_of(task).examples
    predictions = {p.id: p.prediction for p in read_predictions(tmp_path / "predictions" / f"{task}_0shot.jsonl")}
    assert isinstance(entries, list) and len(entries) == len(examples) == len(predictions)
    for entry, example in zip(entries, examples):
        assert set(entry) == {id_field, text_field}
        assert type(entry[id_field]) is id_type and type(entry[text_field]) is str
        assert entry[text_field] == predictions[example.id]
    ids = [entry[id_field] for entry in entries]
    assert len(set(ids)) == len(ids)
    assert ids == [SERVERS[load_task(task).submission].id_of(example) for example in examples]
    assert f"{len(examples)} entries" in out


def test_server_ids_are_what_each_server_matches_on():
    """The ids come from the right field of each split: VQA questions, VizWiz and caption images."""
    assert [e["question_id"] for e in _entries("vqav2_testdev")] == [int(e.id) for e in split_of("vqav2_testdev").examples]
    assert all(image.startswith("VizWiz_test_") for image in (e["image"] for e in _entries("vizwiz_test")))
    assert [e["image_id"] for e in _entries("nocaps_test")] == [0, 1, 2]


def _entries(task: str) -> list[dict]:
    server = SERVERS[load_task(task).submission]
    return [{server.id_field: server.id_of(example)} for example in split_of(task).examples]


def test_a_run_on_the_validation_split_is_refused(tmp_path, capsys):
    code, _, err = run(capsys, "vqav2", tmp_path, "--limit", "2")
    assert code == 0, err
    file = tmp_path / "submission.json"
    assert_refused(*invoke(capsys, "submission", str(tmp_path), "--task", "vqav2", "-o", str(file))[::2],
                   "task vqav2 is scored here, not by an evaluation server")
    assert_refused(*invoke(capsys, "submission", str(tmp_path), "--task", "vqav2_testdev", "-o", str(file))[::2],
                   "holds no vqav2_testdev rows (its tasks: vqav2)")
    assert not file.exists()


def test_a_limited_run_is_refused(tmp_path, capsys):
    """A server scores a missing question as wrong: a --limit run would upload a silently lower score."""
    code, _, err = run(capsys, "nocaps_test", tmp_path, "--limit", "2")
    assert code == 0, err
    assert_refused(*invoke(capsys, "submission", str(tmp_path), "--task", "nocaps_test", "-o", str(tmp_path / "s.json"))[::2],
                   "answered only the first 2 of 3 questions (--limit 2)")


def test_predictions_missing_a_question_are_refused(tmp_path, capsys):
    code, _, err = run(capsys, "vizwiz_test", tmp_path)
    assert code == 0, err
    path = tmp_path / "predictions" / "vizwiz_test_0shot.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    last = json.loads(lines[-1])["id"]
    assert_refused(*invoke(capsys, "submission", str(tmp_path), "--task", "vizwiz_test", "-o", str(tmp_path / "s.json"))[::2],
                   f"has no answer to question {last} (2 answers, 3 questions)")


def test_a_changed_split_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(DEMO_DATA / "vqav2_testdev", data)
    code, _, err = invoke(capsys, "run", "--task", "vqav2_testdev", "--data", str(data), "--output-dir", str(tmp_path / "run"), *QUICK)
    assert code == 0, err
    questions = data / "v2_OpenEnded_mscoco_test-dev2015_questions.json"
    content = json.loads(questions.read_text())
    content["questions"].pop()
    questions.write_text(json.dumps(content))
    assert_refused(*invoke(capsys, "submission", str(tmp_path / "run"), "--task", "vqav2_testdev", "-o",
                           str(tmp_path / "s.json"))[::2], "is not the split the run answered")


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "vqa3"], "unknown task 'vqa3'"),
    (["--task", "nocaps_test", "--shots", "4"], "none matches of the nocaps_test rows (--shots 0)"),
])
def test_bad_submission_arguments(args, message, tmp_path, capsys):
    code, _, err = run(capsys, "nocaps_test", tmp_path)
    assert code == 0, err
    assert_refused(*invoke(capsys, "submission", str(tmp_path), *args, "-o", str(tmp_path / "s.json"))[::2], message)


def test_a_folder_without_results_is_refused(tmp_path, capsys):
    assert_refused(*invoke(capsys, "submission", str(tmp_path), "--task", "nocaps_test", "-o", str(tmp_path / "s.json"))[::2],
                   "no results.json in")


@pytest.mark.parametrize("task", sorted(FORMATS))
def test_a_test_task_is_made_as_the_task_it_stands_beside(task):
    """A test-server row must be comparable with its validation row: same prompt, generation and shots."""
    spec = load_task(task)
    parent = load_task({"nocaps_test": "nocaps"}.get(task, spec.support_task))
    assert (spec.prompt, spec.generation, spec.shot_answer, spec.metric, spec.request) == (
        parent.prompt, parent.generation, parent.shot_answer, parent.metric, parent.request)
    assert spec.support_task == (parent.support_task or parent.name) and spec.support_split == parent.support_split


def test_the_bundled_test_splits_are_what_the_generator_writes(tmp_path):
    from idefics_eval.demo import make_test_splits

    make_test_splits.write(tmp_path)
    for task in make_test_splits.SPLITS:
        written = sorted(p.relative_to(tmp_path / task) for p in (tmp_path / task).rglob("*") if p.is_file())
        shipped = sorted(p.relative_to(DEMO_DATA / task) for p in (DEMO_DATA / task).rglob("*") if p.is_file())
        assert written == shipped
        assert all((tmp_path / task / p).read_bytes() == (DEMO_DATA / task / p).read_bytes() for p in written)
        assert all(not e.answers for e in split_of(task).examples)


@pytest.mark.parametrize("command", [["export", "--layout", "long"], ["compare"], ["plot", "-o", "plots"]])
def test_reports_leave_out_test_split_rows(command, tmp_path, capsys):
    """A test split's rows have no metric: export, compare and plot report the scored rows beside
    them, and a folder of test rows alone is one line pointing to `submission`."""
    tests, mixed = tmp_path / "tests", tmp_path / "mixed"
    for out, task in ((tests, "nocaps_test"), (mixed, "nocaps_test"), (mixed, "vqav2")):
        code, _, err = run(capsys, task, out, "--limit", "2")
        assert code == 0, err
    args = [*command[:1], *([str(tests)] * (2 if command == ["compare"] else 1)), *command[1:]]
    args = [str(tmp_path / a) if a == "plots" else a for a in args]
    assert_refused(*invoke(capsys, *args, "--resamples", "20")[::2], "holds only rows of test splits (nocaps_test)")
    args = [str(mixed) if a == str(tests) else a for a in args]
    code, out, err = invoke(capsys, *args, "--resamples", "20")
    assert code == 0, err
    assert "nocaps_test" not in out and ("vqav2" in out or command[0] == "plot")



def test_a_sweep_refuses_a_test_split(tmp_path, capsys):
    """Checkpoint selection needs a metric; a test split has none here: refused before any checkpoint loads."""
    code, _, err = invoke(capsys, "demo-model", str(tmp_path / "ckpt-1"))
    assert code == 0, err
    code, _, err = invoke(capsys, "sweep", "--checkpoints", str(tmp_path / "ckpt-*"), "--task", "vqav2_testdev",
                          "--output-dir", str(tmp_path / "out"), "--demo-data", "--limit", "2", "--shots", "0", "--no-progress")
    assert_refused(code, err, "task vqav2_testdev: a test split, scored only by its evaluation server")
    assert not (tmp_path / "out" / "ckpt-1" / "results.json").exists()
