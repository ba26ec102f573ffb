"""Data parallel on CPU (torchrun, gloo): 1 and 2 processes give identical files; a killed 2-process
run resumes on 1 process to the same predictions, every query exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(out: Path, cache: Path, processes: int, batch_size: int = 4) -> list[str]:
    run = ["run", "--task", "vqav2", "--demo", "--shots", "0,4", "--limit", "12", "--num-beams", "1",
           "--batch-size", str(batch_size), "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress"]
    if processes == 1:
        return [sys.executable, "-m", "idefics_eval", *run]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "idefics_eval", *run]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    subprocess.run(command(root / "out", root / "cache", 1), check=True, capture_output=True, timeout=600)
    return root


def test_two_processes_equal_one(single, tmp_path):
    done = subprocess.run(command(tmp_path / "out", single / "cache", 2), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("vqav2_0shot.jsonl", "vqav2_4shot.jsonl"):
        two = lines(tmp_path / "out" / "predictions" / name)
        one = lines(single / "out" / "predictions" / name)
        assert sorted(two, key=lambda r: r["id"]) == sorted(one, key=lambda r: r["id"])
        assert len({r["id"] for r in two}) == len(two) == 12
    metrics = lambda root: [(r["shots"], r["metrics"], r["num_examples"]) for r in json.loads((root / "results.json").read_text())]
    assert metrics(tmp_path / "out") == metrics(single / "out")
    assert not list((tmp_path / "out" / "predictions").glob("*.partial*"))


def test_killed_two_process_run_resumes_on_one(single, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(command(out, single / "cache", 2, batch_size=1), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    partials = lambda: list((out / "predictions").glob("vqav2_4shot.jsonl.partial.*")) if (out / "predictions").exists() else []
    while time.monotonic() < deadline and process.poll() is None:
        if sum(p.read_text().count("\n") for p in partials()) >= 4:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(partials()) == 2  # both ranks had written
    subprocess.run(command(out, single / "cache", 1), check=True, capture_output=True, timeout=600)
    for name in ("vqav2_0shot.jsonl", "vqav2_4shot.jsonl"):
        resumed = lines(out / "predictions" / name)
        assert resumed == lines(single / "out" / "predictions" / name)
        assert len({r["id"] for r in resumed}) == len(resumed) == 12
