"""Several tasks in one run (comma-separated or a group such as fairface), with the model loaded once;
and a checkpoint placed by accelerate's device_map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import idefics_eval.runner as runner
from idefics_eval.cli import main
from idefics_eval.errors import UserError
from idefics_eval.tasks import expand_task_names


def test_group_and_list_expansion(tmp_path):
    assert expand_task_names("fairface") == ["fairface_gender", "fairface_race", "fairface_age"]
    assert expand_task_names("vqav2, fairface_race,fairface") == ["vqav2", "fairface_race", "fairface_gender", "fairface_age"]
    (tmp_path / "groups.yaml").write_text("vqa: [vqav2, okvqa]\n")
    assert expand_task_names("vqa", (tmp_path,)) == ["vqav2", "okvqa"]
    with pytest.raises(UserError, match="unknown task 'nosuch'.*fairface \\(group\\)"):
        expand_task_names("vqav2,nosuch")


def test_fairface_group_runs_every_attribute_with_one_model_load(tmp_path, monkeypatch):
    loads = []
    real = runner.load_model
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    main(["run", "--task", "fairface", "--demo", "--shots", "0", "--limit", "4", "--output-dir", str(tmp_path),
          "--no-progress"])
    rows = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["task"] for r in rows) == ["fairface_age", "fairface_gender", "fairface_race"]
    assert all("spread/race" in r["metrics"] for r in rows)
    assert len(loads) == 1


def test_device_map_auto_loads_a_checkpoint_on_the_cpu(tmp_path):
    from idefics_eval.demo.model import save_demo_model
    from idefics_eval.models import load_model

    save_demo_model(tmp_path / "tiny", seed=0)
    placed = load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32", device_map="auto")
    plain = load_model(str(tmp_path / "tiny"), device="cpu", dtype="float32")
    assert placed.device.type == "cpu" and placed.fingerprint == plain.fingerprint
