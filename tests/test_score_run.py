"""`idefics-eval score RUN_DIR` and `score --predictions FILE` of a run's file: re-scored from what
the run recorded (task and version, data source, --limit, --tasks-dir), equal to the run's own
metrics, with no hub access; what differs from the record is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from idefics_eval import formats
from idefics_eval.cli import main

from conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
VQAV2_DATA = ROOT / "idefics_eval" / "demo" / "data" / "vqav2"
TINY = ["--demo", "--num-beams", "1", "--max-new-tokens", "3", "--limit", "3", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A limited demo run of a generated task (vqav2) and a ranked one (hatefulmemes) with RICES,
    and random shots over two seeds (a mean row) in the same folder."""
    out = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    main(["run", "--task", "vqav2,hatefulmemes", "--shots", "0,1", "--output-dir", str(out), "--cache-dir", str(cache), *TINY])
    main(["run", "--task", "hatefulmemes", "--shots", "1", "--selection", "random", "--seeds", "0,1",
          "--output-dir", str(out), "--cache-dir", str(cache), *TINY])
    return out


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Every test here scores from local data: a hub access would fail the test, not wait on the network."""
    def refuse(*args, **kwargs):
        raise AssertionError("score reached for the Hugging Face hub")

    monkeypatch.setattr(formats, "_huggingface", refuse)


def rows_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def metrics_by_key(rows: list[dict]) -> dict[tuple, tuple]:
    return {(r["task"], r["shots"], r["selection"], r["seed"]): (r["metrics"], r["metrics_std"], r["num_examples"]) for r in rows}


def edit_results(folder: Path, change) -> None:
    rows = rows_of(folder / "results.json")
    for row in rows:
        change(row)
    (folder / "results.json").write_text(json.dumps(rows))


def one_line_refusal(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_score_run_dir_equals_the_runs_own_metrics(run_dir, tmp_path, capsys):
    """No --limit, --demo or --task: the limited run's record says it all, ranked and generated alike."""
    code, out, err = invoke(capsys, "score", str(run_dir), "-o", str(tmp_path / "rescored.json"))
    assert code == 0, err
    assert "note:" not in err
    recorded = rows_of(run_dir / "results.json")
    rescored = rows_of(tmp_path / "rescored.json")
    assert metrics_by_key(rescored) == metrics_by_key(recorded)
    assert {r["task"] for r in recorded} == {"vqav2", "hatefulmemes"} and all(r["num_examples"] == 3 for r in rescored)
    assert any(r["selection"] == "random" and r["seed"] is None for r in rescored)  # the mean over seeds, taken again
    assert "vqav2" in out and "roc_auc" in out and "vqa_accuracy" in out


def test_score_run_dir_rescores_the_predictions_not_the_record(run_dir, tmp_path, capsys):
    """Right answers written into the run's file raise its score: the metrics come from the predictions."""
    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    queries = {q.id: q for q in formats.load_split(load_vqav2(), "validation", str(VQAV2_DATA)).examples}
    path = folder / "predictions" / "vqav2_0shot.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(line | {"prediction": queries[line["id"]].answers[0]}) + "\n" for line in lines))
    code, out, err = invoke(capsys, "score", str(folder), "--task", "vqav2", "-o", str(tmp_path / "rescored.json"))
    assert code == 0
    zero_shot = next(r for r in rows_of(tmp_path / "rescored.json") if r["shots"] == 0)
    recorded = next(r for r in rows_of(run_dir / "results.json") if r["task"] == "vqav2" and r["shots"] == 0)
    assert zero_shot["metrics"]["vqa_accuracy"] > recorded["metrics"]["vqa_accuracy"]
    assert "note: vqav2 0 shots: vqa_accuracy" in err  # a difference from results.json is said
    assert "hatefulmemes" not in out  # --task picks the run's tasks


def load_vqav2():
    from idefics_eval.tasks import load_task

    return load_task("vqav2")


def test_score_predictions_of_a_run_uses_its_record(run_dir, capsys):
    row = next(r for r in rows_of(run_dir / "results.json") if r["task"] == "hatefulmemes" and r["shots"] == 1
               and r["selection"] == "rices")
    code, out, err = invoke(capsys, "score", "--predictions", str(run_dir / row["predictions"]))
    assert code == 0, err
    assert out.startswith("hatefulmemes: 3 predictions")
    assert f"roc_auc: {row['metrics']['roc_auc']:.2f}" in out and f"accuracy: {row['metrics']['accuracy']:.2f}" in out
    code, out, err = invoke(capsys, "score", "--predictions", str(run_dir / "predictions" / "vqav2_1shot.jsonl"), "--limit", "2")
    assert code == 0 and out.startswith("vqav2: 2 predictions"), err  # what is given wins over the record


def test_a_run_made_from_another_checkout_finds_the_bundled_data(run_dir, tmp_path, capsys):
    folder = tmp_path / "moved"
    shutil.copytree(run_dir, folder)
    edit_results(folder, lambda row: row["config"]["data"].update(
        source=f"/elsewhere/idefics_eval/demo/data/{row['task']}"))
    code, _, err = invoke(capsys, "score", str(folder), "-o", str(tmp_path / "rescored.json"))
    assert code == 0, err
    assert metrics_by_key(rows_of(tmp_path / "rescored.json")) == metrics_by_key(rows_of(run_dir / "results.json"))


def test_a_task_recorded_from_a_tasks_dir_is_found_again(tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "myvqa.yaml").write_text((ROOT / "tasks" / "vqav2.yaml").read_text().replace("name: vqav2", "name: myvqa"))
    out = tmp_path / "run"
    main(["run", "--task", "myvqa", "--tasks-dir", str(tasks), "--data", str(VQAV2_DATA), "--shots", "0",
          "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY])
    code, _, err = invoke(capsys, "score", str(out), "-o", str(tmp_path / "rescored.json"))
    assert code == 0, err
    assert metrics_by_key(rows_of(tmp_path / "rescored.json")) == metrics_by_key(rows_of(out / "results.json"))


def test_other_data_than_recorded_is_refused_or_noted_when_given(run_dir, tmp_path, capsys):
    folder = tmp_path / "changed"
    shutil.copytree(run_dir, folder)
    edit_results(folder, lambda row: row["config"]["data"].update(query_fingerprint="0123456789abcdef"))
    code, _, err = invoke(capsys, "score", str(folder))
    one_line_refusal(code, err, "are not those the run scored")
    code, _, err = invoke(capsys, "score", str(folder), "--task", "vqav2", "--data", str(VQAV2_DATA))
    assert code == 0 and "note:" in err and "scored against the data given" in err


def test_another_task_version_is_refused(run_dir, tmp_path, capsys):
    folder = tmp_path / "versioned"
    shutil.copytree(run_dir, folder)
    edit_results(folder, lambda row: row["config"]["task"].update(version=7))
    code, _, err = invoke(capsys, "score", str(folder))
    one_line_refusal(code, err, "the run used version 7")
    code, _, err = invoke(capsys, "score", "--predictions", str(folder / "predictions" / "vqav2_0shot.jsonl"))
    one_line_refusal(code, err, "the run used version 7")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "absent", "is not a folder"),
    (lambda tmp: tmp, "is not a run folder (no results.json)"),
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is not a folder"),
])
def test_a_folder_that_is_not_a_run(make, message, tmp_path, capsys):
    code, _, err = invoke(capsys, "score", str(make(tmp_path)))
    one_line_refusal(code, err, message)


@pytest.mark.parametrize("args, message", [
    ([], "give a run folder (RUN_DIR) or --predictions FILE"),
    (["RUN", "--predictions", "RUN/predictions/vqav2_0shot.jsonl"], "one of the two"),
    (["--predictions", "RUN/predictions/vqav2_0shot.jsonl", "--task", "hatefulmemes"], "holds vqav2 predictions"),
    (["RUN", "--data", str(VQAV2_DATA)], "--data names one task's data"),
    (["RUN", "--task", "okvqa"], "holds no rows of okvqa"),
    (["RUN", "--limit", "0"], "--limit 0"),
])
def test_bad_score_options(args, message, run_dir, capsys):
    code, _, err = invoke(capsys, "score", *[arg.replace("RUN", str(run_dir)) for arg in args])
    one_line_refusal(code, err, message)


def test_a_file_outside_a_run_needs_its_task(run_dir, tmp_path, capsys):
    loose = tmp_path / "loose.jsonl"
    shutil.copy(run_dir / "predictions" / "vqav2_0shot.jsonl", loose)
    code, _, err = invoke(capsys, "score", "--predictions", str(loose))
    one_line_refusal(code, err, "pass --task")
    code, out, err = invoke(capsys, "score", "--predictions", str(loose), "--task", "vqav2", "--demo", "--limit", "3")
    assert code == 0 and out.startswith("vqav2: 3 predictions")


def test_a_run_given_relative_data_is_scored_from_another_folder(tmp_path, monkeypatch, capsys):
    """The run records its data folder as an absolute path, so the record does not depend on where it ran."""
    shutil.copytree(VQAV2_DATA, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    main(["run", "--task", "vqav2", "--data", "data", "--shots", "0", "--output-dir", "run", "--cache-dir", "cache", *TINY])
    assert rows_of(tmp_path / "run" / "results.json")[0]["config"]["data"]["source"] == str(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = invoke(capsys, "score", str(tmp_path / "run"), "-o", "rescored.json")
    assert code == 0, err
    assert metrics_by_key(rows_of(Path("rescored.json"))) == metrics_by_key(rows_of(tmp_path / "run" / "results.json"))


def test_a_hub_source_is_loaded_as_the_run_loaded_it(run_dir, tmp_path, monkeypatch, capsys):
    """A row recording a hub dataset is loaded by that id from the --cache-dir, where the run kept its
    files; the loader here stands in for the hub."""
    folder = tmp_path / "hub"
    shutil.copytree(run_dir, folder)
    edit_results(folder, lambda row: row["config"]["data"].update(source="HuggingFaceM4/VQAv2"))
    calls = []

    def from_cache(spec, split, location, name, cache_dir):
        calls.append((location, cache_dir))
        return formats.load_split(spec, split, str(VQAV2_DATA))

    monkeypatch.setattr(formats, "_huggingface", from_cache)
    code, _, err = invoke(capsys, "score", str(folder), "--task", "vqav2", "--cache-dir", str(tmp_path / "cache"),
                          "-o", str(tmp_path / "rescored.json"))
    assert code == 0, err
    assert set(calls) == {("HuggingFaceM4/VQAv2", tmp_path / "cache")}
    recorded = [r for r in rows_of(run_dir / "results.json") if r["task"] == "vqav2"]
    assert metrics_by_key(rows_of(tmp_path / "rescored.json")) == metrics_by_key(recorded)


def test_a_hub_source_with_a_config_is_loaded_by_its_id():
    """The loader records a hub source as "id:config" where the task names a config; --data takes the id."""
    from idefics_eval.scoring import recorded_data
    from idefics_eval.tasks import load_task

    assert recorded_data("HuggingFaceM4/COCO:2014_captions", load_task("coco"), "here") == "HuggingFaceM4/COCO"
    assert recorded_data("HuggingFaceM4/VQAv2", load_task("vqav2"), "here") == "HuggingFaceM4/VQAv2"
