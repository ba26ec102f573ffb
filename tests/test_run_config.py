"""Provenance and reruns: rows say when, where and under which name they ran; --config reruns a run."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from idefics_eval.cli import main
from idefics_eval.export import load_entries

from conftest import invoke

FAST = ("--task", "vqav2", "--demo", "--shots", "0,2", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress")


def run(capsys, out: Path, cache: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(capsys, "run", *FAST, "--output-dir", str(out), "--cache-dir", str(cache), *extra)


def rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


def prediction_bytes(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "predictions").glob("*.jsonl"))}


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("named"), tmp_path_factory.mktemp("cache")
    main(["run", *FAST, "--output-dir", str(out), "--cache-dir", str(cache), "--name", "baseline"])
    return out, cache


def test_rows_record_times_device_versions_and_name(named_run):
    out, _ = named_run
    found = rows(out)
    assert [r["shots"] for r in found] == [0, 2]
    for row in found:
        started, finished = (datetime.fromisoformat(row[key]) for key in ("started", "finished"))
        assert started.utcoffset().total_seconds() == 0 and started <= finished
        assert 0 < row["duration_s"] <= (finished - started).total_seconds() + 1
        assert row["run_name"] == "baseline"
        assert row["environment"]["device"].startswith("cpu: ") and len(row["environment"]["device"]) > len("cpu: ")
        assert "cuda" in row["environment"]
        assert isinstance(row["environment"]["threads"], int) and row["environment"]["threads"] >= 1
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", row["environment"]["commit"])  # the tests run from a checkout
        assert row["config"]["versions"]["torch"] and row["config"]["versions"]["idefics-eval"]
        assert not {"run_name", "started", "environment"} & set(row["config"])  # nothing of this is configuration
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vqav2/rices"]["run_name"] == "baseline"
    assert "run_name" not in manifest["vqav2/rices"]["identity"]


def test_saved_config_holds_every_option_as_resolved(named_run):
    out, cache = named_run
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["name"] == "baseline" and saved["shots"] == "0,2" and saved["max_new_tokens"] == 3
    assert saved["output_dir"] == str(out) and saved["cache_dir"] == str(cache)
    assert saved["selection"] == "rices" and saved["batch_size"] == 8 and saved["tasks_dir"] == []
    assert "config" not in saved


def test_config_file_in_another_folder_gives_the_same_predictions(named_run, tmp_path, capsys):
    out, _ = named_run
    code, _, err = invoke(capsys, "run", "--config", str(out / "config.yaml"), "--output-dir", str(tmp_path / "again"))
    assert code == 0, err
    assert prediction_bytes(tmp_path / "again") == prediction_bytes(out)
    assert [r["run_name"] for r in rows(tmp_path / "again")] == ["baseline", "baseline"]
    assert yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())["output_dir"] == str(tmp_path / "again")


def test_rerun_under_another_name_resumes(named_run, tmp_path, capsys):
    """Name, times and device are not identity: the same folder resumes, reading every prediction back."""
    _, cache = named_run
    folder = tmp_path / "copy"
    assert run(capsys, folder, cache, "--name", "first")[0] == 0
    before = rows(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    code, _, err = run(capsys, folder, cache, "--name", "second")
    assert code == 0, err
    after = rows(folder)
    assert json.loads((folder / "manifest.json").read_text())["vqav2/rices"]["identity"] == manifest["vqav2/rices"]["identity"]
    assert [r["run_name"] for r in after] == ["second", "second"]
    # the predictions were all read back: the rows keep when and where they were made
    assert [(r["started"], r["duration_s"], r["environment"]) for r in after] == \
        [(r["started"], r["duration_s"], r["environment"]) for r in before]


def test_command_line_overrides_the_config_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"task": "vqav2", "demo": True, "shots": [0], "limit": 1, "num-beams": 1,
                                      "max_new_tokens": 3, "no_progress": True, "name": "from-file",
                                      "cache-dir": str(tmp_path / "cache")}))
    code, _, err = invoke(capsys, "run", "--config", str(config), "--limit", "2", "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    found = rows(tmp_path / "out")
    assert [(r["shots"], r["num_examples"], r["run_name"]) for r in found] == [(0, 2, "from-file")]
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert (saved["limit"], saved["shots"], saved["num_beams"]) == (2, "0", 1)


def test_reports_label_a_named_run(named_run, tmp_path, capsys):
    out, _ = named_run
    assert {entry.model for entry in load_entries([out])} == {"baseline (idefics-eval/canary)"}
    code, stdout, err = invoke(capsys, "compare", str(out), str(out), "--resamples", "10")
    assert code == 0, err
    assert f"A = {out} (baseline), B = {out} (baseline)" in stdout


def test_old_rows_without_provenance_still_read(named_run, tmp_path):
    out, _ = named_run
    old = tmp_path / "old"
    (old / "predictions").mkdir(parents=True)
    for name, data in prediction_bytes(out).items():
        (old / "predictions" / name).write_bytes(data)
    stripped = [{k: v for k, v in r.items() if k not in ("run_name", "started", "finished", "duration_s", "environment")}
                for r in rows(out)]
    (old / "results.json").write_text(json.dumps(stripped))
    entries = load_entries([old])
    assert [(e.model, e.row.started, e.row.environment) for e in entries] == [("idefics-eval/canary", None, {})] * 2


def test_sweep_name_reaches_every_checkpoints_run(tmp_path):
    from idefics_eval.sweep import Checkpoint, SweepConfig, _run_config

    config = SweepConfig(checkpoints="ckpts/*", tasks=("vqav2",), shots=(0,), output_dir=tmp_path, run_name="nightly")
    assert _run_config(config, Checkpoint(tmp_path / "step-1", "step-1", 1), "vqav2").run_name == "nightly"
