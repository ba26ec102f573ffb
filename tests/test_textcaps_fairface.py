"""TextCaps and the FairFace tasks join the all-tasks coverage (the pattern of tests/test_all_tasks.py):
each runs on its bundled demo data at 0 and 4 shots, writes its metric, and `score` re-scores its
predictions to the same numbers. Their rows reach the leaderboard export: TextCaps in the model card's
"TextCaps (CIDEr)" column, FairFace's per-group numbers in the long layout."""

from __future__ import annotations

import csv
import io

import pytest

from idefics_eval.export import CARD_HEADER, NUMERIC_HEADER, export
from idefics_eval.runner import RunConfig, run
from idefics_eval.scoring import score_file
from idefics_eval.tasks import load_task, task_files

TASKS = ("textcaps", "fairface_gender", "fairface_race", "fairface_age")
HEADLINE = {"cider": "cider", "fairface_accuracy": "accuracy"}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The demo model is tiny: one thread is as fast alone and 10-30x faster on a busy machine, where
    torch's intra-op threads fight other processes for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_tasks_are_listed():
    assert set(TASKS) <= set(task_files())


def demo_run(task, folder, tasks_dirs=()):
    return run(RunConfig(task=task, shots=(0, 4), output_dir=folder / "out", demo=True, limit=6, num_beams=1,
                         max_new_tokens=8, cache_dir=folder / "cache", progress=False, tasks_dirs=tasks_dirs))


@pytest.mark.parametrize("task", TASKS)
def test_demo_run_and_rescore(task, tmp_path):
    spec = load_task(task)
    rows = demo_run(task, tmp_path)
    assert [r.shots for r in rows] == [0, 4]
    for row in rows:
        assert HEADLINE[spec.metric] in row.metrics and row.num_examples == 6
        scored_task, rescored, count, _ = score_file(tmp_path / "out" / row.predictions)  # from the run's record
        assert scored_task == task
        assert count == 6
        assert rescored == pytest.approx(row.metrics, abs=1e-9)
        if task.startswith("fairface"):
            groups = {key.split("=")[0] for key in row.metrics if "=" in key}
            assert groups == {"accuracy/gender", "accuracy/race", "accuracy/age"}
            assert {"spread/gender", "spread/race", "spread/age"} <= set(row.metrics)
    if task == "textcaps":
        card = list(csv.DictReader(io.StringIO(export([tmp_path / "out"], "csv", allow_partial=True))))  # --limit 6
        assert list(card[0]) == list(NUMERIC_HEADER) and [r["Shots"] for r in card] == ["0", "4"]
        assert all(float(r["TextCaps (CIDEr)"]) >= 0 and r["Coco (CIDEr)"] == "" for r in card)
        assert CARD_HEADER.index("TextCaps (CIDEr)") == CARD_HEADER.index("VizWiz (OE VQA acc)") + 1
    if task == "fairface_race":
        long = list(csv.DictReader(io.StringIO(export([tmp_path / "out"], "csv", layout="long", resamples=50))))
        metrics = {r["metric"] for r in long if r["shots"] == "4"}
        assert metrics == set(rows[1].metrics) and "accuracy/race=White" in metrics and "spread/race" in metrics
        accuracy = next(r for r in long if r["shots"] == "4" and r["metric"] == "accuracy")
        assert float(accuracy["ci_low"]) <= float(accuracy["value"]) <= float(accuracy["ci_high"])


def test_the_ocr_prompt_reads_the_ocr_field_on_the_demo(tmp_path):
    """prompts/captioning_ocr.yaml through a --tasks-dir copy of the task, as the task file suggests."""
    text = load_task("textcaps").path.read_text().replace("prompt: captioning\n", "prompt: captioning_ocr\n")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "textcaps.yaml").write_text(text)
    rows = demo_run("textcaps", tmp_path, (tmp_path / "tasks",))
    assert [r.num_examples for r in rows] == [6, 6] and "cider" in rows[0].metrics
