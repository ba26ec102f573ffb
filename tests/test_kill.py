"""A run killed with SIGKILL mid-way, rerun with the same command, ends identical to an uninterrupted run:
predictions and sample logs alike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def command(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-c", "from idefics_eval.cli import main; main()", "run", "--task", "vqav2", "--demo",
            "--shots", "4", "--limit", "16", "--num-beams", "1", "--batch-size", "1", "--output-dir", str(out),
            "--cache-dir", str(cache), "--no-progress"]


def test_sigkill_then_rerun_resumes_to_identical_predictions(tmp_path):
    cache = tmp_path / "cache"
    subprocess.run(command(tmp_path / "whole", cache), check=True, capture_output=True, timeout=300)
    partial = tmp_path / "killed" / "predictions" / "vqav2_4shot.jsonl.partial.0"
    process = subprocess.Popen(command(tmp_path / "killed", cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = partial.read_text().count("\n")
    assert 3 <= written < 16
    subprocess.run(command(tmp_path / "killed", cache), check=True, capture_output=True, timeout=300)
    whole = (tmp_path / "whole" / "predictions" / "vqav2_4shot.jsonl").read_text()
    resumed = (tmp_path / "killed" / "predictions" / "vqav2_4shot.jsonl").read_text()
    assert resumed == whole
    ids = [json.loads(line)["id"] for line in resumed.splitlines()]
    assert len(ids) == len(set(ids)) == 16
    # the sample log was appended beside the predictions when the kill came: no duplicate or half line
    samples = [(folder / "samples" / "vqav2_4shot.jsonl").read_text() for folder in (tmp_path / "whole", tmp_path / "killed")]
    assert samples[1] == samples[0]
    assert [json.loads(line)["id"] for line in samples[1].splitlines()] == ids
