"""Sweeps: three demo checkpoints x VQAv2 x two shot counts end to end, resume per cell, selection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from idefics_eval.cli import main
from idefics_eval.demo.model import save_demo_model
from idefics_eval.errors import UserError
from idefics_eval.sweep import find_checkpoints, selection_scores, training_step

SWEEP = ["--task", "vqav2", "--shots", "0,4", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "1",
         "--demo-data", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpts")
    for seed, step in enumerate((300, 100, 200), start=1):
        save_demo_model(root / f"step-{step}", seed)
    return root


@pytest.fixture(scope="module")
def swept(checkpoints, tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("sweep")
    cache = tmp_path_factory.mktemp("cache")
    args = ["sweep", "--checkpoints", str(checkpoints / "step-*"), "--output-dir", str(out), "--cache-dir", str(cache), *SWEEP]
    main(args)
    return out, args


def test_every_cell_is_evaluated_into_one_table_in_step_order(swept):
    out, _ = swept
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert list(rows[0]) == ["checkpoint", "step", "task", "shots", "metric", "value", "n", "results", "error"]
    assert all(r["error"] == "" for r in rows)
    main_metric = [(r["checkpoint"], r["step"], r["shots"], r["n"]) for r in rows if r["metric"] == "vqa_accuracy"]
    assert main_metric == [(f"step-{s}", str(s), k, "2") for s in (100, 200, 300) for k in ("0", "4")]
    for step in (100, 200, 300):
        results = json.loads((out / f"step-{step}" / "results.json").read_text())
        assert [(r["task"], r["shots"]) for r in results] == [("vqav2", 0), ("vqav2", 4)]
        assert results[0]["config"]["model"]["name"].endswith(f"step-{step}")


def test_the_best_checkpoint_is_named_and_the_plot_written(swept, capsys):
    out, _ = swept
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["select_by"] == "mean-normalised"
    assert [c["checkpoint"] for c in summary["checkpoints"]] == ["step-100", "step-200", "step-300"]
    best = max(summary["checkpoints"], key=lambda c: c["score"])
    assert summary["best"]["checkpoint"] == best["checkpoint"] and summary["best"]["step"] == best["step"]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_recomputes_only_the_deleted_cell(swept, capsys):
    out, args = swept
    deleted = out / "step-200" / "predictions" / "vqav2_4shot.jsonl"
    before = deleted.read_text()
    deleted.unlink()
    others = {p: p.stat().st_mtime_ns for p in out.glob("step-*/predictions/*.jsonl")}
    table = (out / "sweep.csv").read_text()
    capsys.readouterr()
    main(args)
    assert deleted.read_text() == before
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert (out / "sweep.csv").read_text() == table
    assert "best checkpoint by mean-normalised: step-" in capsys.readouterr().out


def test_training_steps_are_read_from_checkpoint_names(tmp_path):
    names = ("step-65000", "checkpoint-37500", "global_step1200", "65000", "ckpt_10", "final", "run2-step-5", "step-100-v2")
    assert [training_step(n) for n in names] == [65000, 37500, 1200, 65000, 10, None, 5, 100]
    for name in ("step-20", "step-3", "final", "checkpoint-100"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "step-1").mkdir()  # not a checkpoint: no config.json
    assert [c.name for c in find_checkpoints(str(tmp_path / "*"))] == ["step-3", "step-20", "checkpoint-100", "final"]
    with pytest.raises(UserError, match="matches no checkpoint"):
        find_checkpoints(str(tmp_path / "nothing-*"))


def test_selection_by_a_metric_and_by_the_mean_of_normalised_metrics():
    def cell(checkpoint, task, shots, metric, value):
        return {"checkpoint": checkpoint, "task": task, "shots": shots, "metric": metric, "value": value}

    table = [cell("a", "vqav2", 0, "vqa_accuracy", 50.0), cell("b", "vqav2", 0, "vqa_accuracy", 40.0),
             cell("a", "coco", 0, "cider", 50.0), cell("b", "coco", 0, "cider", 100.0)]
    # normalised by each cell's best: a = mean(1.0, 0.5) = 0.75, b = mean(0.8, 1.0) = 0.9
    assert selection_scores(table) == pytest.approx({"a": 0.75, "b": 0.9})
    assert selection_scores(table, "vqav2:vqa_accuracy") == {"a": 50.0, "b": 40.0}
    assert selection_scores(table, "cider") == {"a": 50.0, "b": 100.0}
    with pytest.raises(UserError, match="no such metric"):
        selection_scores(table, "bleu4")


def test_bad_sweep_input_is_one_line(tmp_path, capsys, checkpoints):
    for extra, message in ((["--checkpoints", str(tmp_path / "none-*")], "matches no checkpoint"),
                           (["--checkpoints", str(checkpoints / "step-*"), "--select-by", "coco:cider"], "not among --task")):
        with pytest.raises(SystemExit) as exit_:
            main(["sweep", *extra, "--output-dir", str(tmp_path / "out"), *SWEEP])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def corrupt_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # a truncated copy, as an interrupted upload leaves it


def other_architecture(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 4096, "n_layer": 48}))


def test_failed_checkpoints_are_recorded_the_rest_evaluated_and_a_rerun_retries_them(checkpoints, tmp_path, capsys):
    import shutil

    root = tmp_path / "ckpts"
    root.mkdir()
    for step, damage in ((100, None), (200, corrupt_weights), (300, other_architecture)):
        shutil.copytree(checkpoints / f"step-{step}", root / f"step-{step}")
        if damage:
            damage(root / f"step-{step}")
    out = tmp_path / "sweep"
    args = ["sweep", "--checkpoints", str(root / "step-*"), "--output-dir", str(out), *SWEEP, "--shots", "0"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    printed = capsys.readouterr()
    assert exit_.value.code == 3
    assert printed.err.strip().splitlines() == [printed.err.strip()] and "2 of 3 checkpoints failed (step-200, step-300)" in printed.err
    table_lines = [line.strip() for line in printed.out.splitlines()]
    assert "step-200/model.safetensors is corrupt or truncated" in next(line for line in table_lines if line.startswith("step-200"))
    assert "config.model_type 'gpt2' is not a supported family; supported: idefics" in next(
        line for line in table_lines if line.startswith("step-300"))
    assert "best checkpoint by mean-normalised: step-100" in printed.out

    summary = json.loads((out / "sweep.json").read_text())
    assert summary["best"]["checkpoint"] == "step-100"
    assert [(c["checkpoint"], "error" in c, c["score"] is None) for c in summary["checkpoints"]] == [
        ("step-100", False, False), ("step-200", True, True), ("step-300", True, True)]
    assert [c["checkpoint"] for c in summary["failed"]] == ["step-200", "step-300"]
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert [(r["checkpoint"], r["metric"] == "", r["error"] != "") for r in rows if r["checkpoint"] != "step-100"] == [
        ("step-200", True, True), ("step-300", True, True)]
    assert all(r["error"] == "" for r in rows if r["checkpoint"] == "step-100")

    good = out / "step-100" / "predictions" / "vqav2_0shot.jsonl"
    made = good.stat().st_mtime_ns
    for step in (200, 300):  # repaired: the rerun evaluates them and resumes the one that finished
        shutil.rmtree(root / f"step-{step}")
        shutil.copytree(checkpoints / f"step-{step}", root / f"step-{step}")
    main(args)
    printed = capsys.readouterr()
    assert printed.err == "" and " failed " not in printed.out and "error" not in printed.out.splitlines()[0]
    assert good.stat().st_mtime_ns == made
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["failed"] == [] and all(c["score"] is not None for c in summary["checkpoints"])


def test_a_sweep_in_which_every_checkpoint_fails_writes_its_table_and_no_plot(checkpoints, tmp_path, capsys):
    import shutil

    root = tmp_path / "ckpts"
    shutil.copytree(checkpoints / "step-100", root / "step-100")
    other_architecture(root / "step-100")
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--checkpoints", str(root / "step-*"), "--output-dir", str(out), *SWEEP, "--shots", "0"])
    printed = capsys.readouterr()
    assert exit_.value.code == 3 and "1 of 1 checkpoints failed" in printed.err
    assert "no checkpoint finished" in printed.out
    assert json.loads((out / "sweep.json").read_text())["best"] is None
    assert (out / "sweep.csv").is_file() and not (out / "sweep.png").exists()
