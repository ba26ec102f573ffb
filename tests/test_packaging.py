"""A plain `pip install .` ships the task files, prompt templates, protocols, demo data and the published table."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_tasks_prompts_and_demo_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("idefics_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for task in (ROOT / "tasks").glob("*.yaml"):
        assert f"idefics_eval/builtin_tasks/{task.name}" in names
    for prompt in (ROOT / "prompts").glob("*.yaml"):
        assert f"idefics_eval/builtin_prompts/{prompt.name}" in names
    protocols = list((ROOT / "protocols").glob("*.yaml"))
    assert {p.stem for p in protocols} >= {"default", "idefics", "openflamingo"}
    for protocol in protocols:
        assert f"idefics_eval/builtin_protocols/{protocol.name}" in names
    demo = ROOT / "idefics_eval" / "demo" / "data"
    shipped = {p.relative_to(ROOT).as_posix() for p in demo.rglob("*") if p.is_file()}
    assert shipped and shipped <= names
    assert "idefics_eval/builtin_published/idefics_model_card.csv" in names
    viewer = ROOT / "idefics_eval" / "viewer"
    site_files = {p.relative_to(ROOT).as_posix() for folder in ("templates", "static") for p in (viewer / folder).iterdir()}
    assert site_files and site_files <= names  # `view` renders its pages from these
    assert any(name.endswith("entry_points.txt") for name in names)
