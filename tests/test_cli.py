"""The command line end to end on the demo: outputs, reproducibility, resume, re-scoring, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from idefics_eval.cli import main

from conftest import invoke

DEMO_DATA = Path(__file__).resolve().parents[1] / "idefics_eval" / "demo" / "data" / "vqav2"


def demo_run(capsys, out: Path, cache: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(capsys, "run", "--task", "vqav2", "--demo", "--demo-seed", "0", "--shots", "0,4", "--limit", "6", "--num-beams", "1",
                  "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress", *extra)


def predictions(out: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((out / "predictions").glob("*.jsonl"))}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run1")
    cache = tmp_path_factory.mktemp("cache")
    capture = pytest.CaptureFixture  # not used: module fixtures cannot take capsys
    main(["run", "--task", "vqav2", "--demo", "--demo-seed", "0", "--shots", "0,4", "--limit", "6", "--num-beams", "1",
          "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress"])
    return out, cache


def test_run_writes_rows_and_prediction_files(first_run):
    out, _ = first_run
    rows = json.loads((out / "results.json").read_text())
    assert [(r["task"], r["shots"], r["num_examples"]) for r in rows] == [("vqav2", 0, 6), ("vqav2", 4, 6)]
    for row in rows:
        assert set(row["metrics"]) >= {"vqa_accuracy"}
        assert row["config"]["model"]["fingerprint"] and row["config"]["shots"]["selection"] == "rices"
        assert bool(row["config"]["shots"].get("index_fingerprint")) == (row["shots"] > 0)
        assert row["config"]["task"]["version"] == 1 and row["config"]["prompt"]["name"] == "vqa"
        assert row["config"]["versions"]["transformers"]
    files = predictions(out)
    assert sorted(files) == ["vqav2_0shot.jsonl", "vqav2_4shot.jsonl"]
    assert all(len(lines) == 6 for lines in files.values())
    assert all(len(line["shots"]) == 4 for line in files["vqav2_4shot.jsonl"])
    assert all(line["shots"] == [] for line in files["vqav2_0shot.jsonl"])


def test_rerun_in_a_new_folder_gives_identical_predictions(first_run, tmp_path, capsys):
    out, cache = first_run
    code, stdout, _ = demo_run(capsys, tmp_path / "again", cache)
    assert code == 0 and "vqa_accuracy" in stdout
    assert predictions(tmp_path / "again") == predictions(out)
    for name in ("vqav2_0shot.jsonl", "vqav2_4shot.jsonl"):  # byte for byte, not only equal JSON
        assert (tmp_path / "again" / "predictions" / name).read_bytes() == (out / "predictions" / name).read_bytes()


def test_rerun_in_the_same_folder_reuses_and_extends(first_run, tmp_path, capsys):
    out, cache = first_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    code, _, _ = invoke(capsys, "run", "--task", "vqav2", "--demo", "--demo-seed", "0", "--shots", "0,4", "--limit", "8", "--num-beams", "1",
                        "--output-dir", str(copy), "--cache-dir", str(cache), "--no-progress")
    assert code == 0
    extended = predictions(copy)
    assert all(len(lines) == 8 for lines in extended.values())
    assert {name: lines[:6] for name, lines in extended.items()} == predictions(out)


def test_resume_after_a_kill_drops_the_half_line(first_run, tmp_path, capsys):
    """A partial file cut mid-line (as a kill leaves it) is repaired and the run completes identically."""
    out, cache = first_run
    copy = tmp_path / "killed"
    shutil.copytree(out, copy)
    final = copy / "predictions" / "vqav2_4shot.jsonl"
    lines = final.read_text().splitlines(keepends=True)
    final.unlink()
    (copy / "predictions" / "vqav2_4shot.jsonl.partial.0").write_text("".join(lines[:3]) + lines[3][:17])
    code, _, _ = demo_run(capsys, copy, cache)
    assert code == 0
    assert predictions(copy) == predictions(out)
    assert not (copy / "predictions" / "vqav2_4shot.jsonl.partial.0").exists()


def test_a_different_configuration_in_the_same_folder_is_refused(first_run, tmp_path, capsys):
    out, cache = first_run
    copy = tmp_path / "other"
    shutil.copytree(out, copy)
    code, _, err = demo_run(capsys, copy, cache, "--demo-seed", "1")
    assert code == 2 and "different model" in err and "--overwrite" in err
    code, _, _ = demo_run(capsys, copy, cache, "--demo-seed", "1", "--overwrite")
    assert code == 0


def test_score_recomputes_the_run(first_run, capsys):
    out, _ = first_run
    rows = json.loads((out / "results.json").read_text())
    code, stdout, _ = invoke(capsys, "score", "--task", "vqav2", "--demo", "--limit", "6",
                             "--predictions", str(out / "predictions" / "vqav2_4shot.jsonl"))
    assert code == 0
    assert f"vqa_accuracy: {rows[1]['metrics']['vqa_accuracy']:.2f}" in stdout


def test_score_gives_credit_for_right_answers(first_run, tmp_path, capsys):
    """Feed the most common ground-truth answers as predictions: the score must be high, not 0."""
    from idefics_eval import formats
    from idefics_eval.prompts import most_common_answer
    from idefics_eval.tasks import load_task

    queries = formats.load_split(load_task("vqav2"), "validation", str(DEMO_DATA)).examples
    path = tmp_path / "oracle.jsonl"
    path.write_text("".join(json.dumps({"id": q.id, "prediction": most_common_answer(q)}) + "\n" for q in queries))
    code, stdout, _ = invoke(capsys, "score", "--task", "vqav2", "--demo", "--predictions", str(path))
    assert code == 0
    value = float(stdout.split("vqa_accuracy:")[1].split()[0])
    assert 90.0 <= value <= 100.0


def test_demo_model_folder_loads_with_model_and_gives_the_same_answers(first_run, tmp_path, capsys):
    out, cache = first_run
    checkpoint = tmp_path / "tiny"
    code, _, err = invoke(capsys, "demo-model", str(checkpoint))
    assert err == ""  # no "Writing model shards" bar
    assert code == 0 and (checkpoint / "config.json").is_file() and (checkpoint / "tokenizer.json").is_file()
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--model", str(checkpoint), "--data", str(DEMO_DATA),
                          "--shots", "0,4", "--limit", "6", "--num-beams", "1", "--output-dir", str(tmp_path / "from-dir"),
                          "--cache-dir", str(cache), "--no-progress")
    assert code == 0, err
    assert predictions(tmp_path / "from-dir") == predictions(out)
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--model", str(checkpoint), "--demo-data",  # the same data, by name
                          "--shots", "0,4", "--limit", "6", "--num-beams", "1", "--output-dir", str(tmp_path / "demo-data"),
                          "--cache-dir", str(cache), "--no-progress")
    assert code == 0, err
    assert predictions(tmp_path / "demo-data") == predictions(out)


def _broken_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DEMO_DATA, data)
    victim = sorted((data / "val2014").iterdir())[0]
    victim.unlink()
    return data


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "nosuch"], "unknown task 'nosuch'"),
        (["--shots", "4,x"], "'x' is not a whole number"),
        (["--shots", "-1"], "negative"),
        (["--shots", ""], "empty"),
        (["--shots", "200"], "fewer than the 200 shots"),
        (["--limit", "0"], "--limit 0"),
        (["--seeds", "1,2"], "--seeds applies to --selection random"),
        (["--model", "./no/such/checkpoint"], "model folder not found"),
        (["--dtype", "float8"], "--dtype 'float8'"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(tmp_path, capsys, args, message):
    base = {"--task": "vqav2", "--shots": "0,4"}
    flags = dict(base)
    extra = []
    for key, value in zip(args[::2], args[1::2]):
        flags[key] = value
    command = ["run", "--output-dir", str(tmp_path / "out"), "--no-progress", "--limit", "2"]
    if "--limit" in flags:
        command = command[:-2]
    for key, value in flags.items():
        command += [key, value]
    if "--model" not in flags:
        command.append("--demo")
    code, _, err = invoke(capsys, *command, *extra)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_image_is_named(tmp_path, capsys):
    data = _broken_data(tmp_path)
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--data", str(data), "--shots", "0",
                          "--output-dir", str(tmp_path / "out"), "--no-progress")
    assert code == 2 and "COCO_val2014_" in err and ".jpg" in err
    assert len(err.strip().splitlines()) == 1


def test_task_file_with_unknown_key_is_named(tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    text = (Path(__file__).resolve().parents[1] / "tasks" / "vqav2.yaml").read_text()
    (tasks / "vqav2.yaml").write_text(text.replace("metric: vqa_accuracy", "metric: vqa_accuracy\nmetrik: oops"))
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--tasks-dir", str(tasks), "--shots", "0",
                          "--output-dir", str(tmp_path / "out"), "--no-progress")
    assert code == 2 and "vqav2.yaml" in err and "unknown key 'metrik'" in err


def test_output_folder_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "0", "--output-dir", str(blocker / "out"),
                          "--no-progress")
    assert code == 2 and "cannot write to the output folder" in err


def test_tasks_lists_vqav2(capsys):
    code, stdout, _ = invoke(capsys, "tasks")
    assert code == 0 and "vqav2" in stdout and "vqa_accuracy" in stdout and "generate" in stdout


def test_internal_error_is_one_line_with_debug_hint(monkeypatch, tmp_path, capsys):
    import idefics_eval.runner as runner

    monkeypatch.setattr(runner, "prepare", lambda config, **kwargs: (_ for _ in ()).throw(RuntimeError("boom")))
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--output-dir", str(tmp_path))
    assert code == 1 and "boom" in err and "--debug" in err


def test_no_progress_hides_every_bar(tmp_path, capsys):
    """Shot retrieval (embedding the support and query images, the search) shows its bars only
    when progress is on; --no-progress leaves stderr empty on a successful run."""
    args = ["run", "--task", "vqav2", "--demo", "--shots", "0,2", "--limit", "2", "--num-beams", "1"]
    code, _, err = invoke(capsys, *args, "--output-dir", str(tmp_path / "quiet"), "--cache-dir", str(tmp_path / "c1"),
                          "--no-progress")
    assert code == 0 and err == ""
    code, _, err = invoke(capsys, *args, "--output-dir", str(tmp_path / "loud"), "--cache-dir", str(tmp_path / "c2"))
    assert code == 0 and "embed support" in err and "retrieve" in err


def test_a_run_of_several_tasks_prints_one_table_per_task(tmp_path, capsys):
    """Each task's table has that task's metrics as columns and no others, so no cell is NaN
    (FairFace's group columns used to fill VQAv2's row with NaN in one shared table)."""
    code, stdout, err = invoke(capsys, "run", "--task", "vqav2,fairface", "--demo", "--shots", "0", "--limit", "2",
                               "--num-beams", "1", "--max-new-tokens", "3", "--output-dir", str(tmp_path / "out"),
                               "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert code == 0, err
    assert "NaN" not in stdout
    metrics = {row["task"]: row["metrics"] for row in json.loads((tmp_path / "out" / "results.json").read_text())}
    tables = stdout.split("\nresults: ")[0].split("\n\n")
    titles = [table.splitlines()[0] for table in tables]
    assert titles[0] == "vqav2" and sorted(titles) == sorted(metrics) and len(titles) == 4
    for table, title in zip(tables, titles):
        header = table.splitlines()[1].split()
        assert header == ["shots", "selection", "n", "truncated", "skipped", *" ".join(metrics[title]).split()]
        assert len(table.splitlines()) == 3  # the title, the header, the one zero-shot row
