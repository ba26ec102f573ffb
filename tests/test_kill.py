"""A run killed with SIGKILL, or interrupted with Ctrl-C (SIGINT), mid-way, rerun with the same command,
ends identical to an uninterrupted run: predictions and sample logs alike."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def command(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-c", "from idefics_eval.cli import main; main()", "run", "--task", "vqav2", "--demo",
            "--shots", "4", "--limit", "16", "--num-beams", "1", "--batch-size", "1", "--output-dir", str(out),
            "--cache-dir", str(cache), "--no-progress"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run (its folder) and the RICES cache it filled, which the interrupted runs reuse."""
    root = tmp_path_factory.mktemp("whole")
    subprocess.run(command(root / "run", root / "cache"), check=True, capture_output=True, timeout=300)
    return root / "run", root / "cache"


def test_sigkill_then_rerun_resumes_to_identical_predictions(whole, tmp_path):
    reference, cache = whole
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
    expected = (reference / "predictions" / "vqav2_4shot.jsonl").read_text()
    resumed = (tmp_path / "killed" / "predictions" / "vqav2_4shot.jsonl").read_text()
    assert resumed == expected
    ids = [json.loads(line)["id"] for line in resumed.splitlines()]
    assert len(ids) == len(set(ids)) == 16
    # the sample log was appended beside the predictions when the kill came: no duplicate or half line
    samples = [(folder / "samples" / "vqav2_4shot.jsonl").read_text() for folder in (reference, tmp_path / "killed")]
    assert samples[1] == samples[0]
    assert [json.loads(line)["id"] for line in samples[1].splitlines()] == ids


def test_ctrl_c_mid_run_is_one_line_and_the_rerun_resumes(whole, tmp_path):
    """SIGINT (Ctrl-C) while predictions are being written: no traceback, status 130, a line that says
    the same command continues, and the rerun ends with the predictions of an uninterrupted run."""
    reference, cache = whole
    partial = tmp_path / "stopped" / "predictions" / "vqav2_4shot.jsonl.partial.0"
    process = subprocess.Popen(command(tmp_path / "stopped", cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == ["interrupted; rerun the same command to continue where it stopped"]
    subprocess.run(command(tmp_path / "stopped", cache), check=True, capture_output=True, timeout=300)
    expected = (reference / "predictions" / "vqav2_4shot.jsonl").read_text()
    assert (tmp_path / "stopped" / "predictions" / "vqav2_4shot.jsonl").read_text() == expected
