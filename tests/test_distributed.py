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


@pytest.fixture
def machine(monkeypatch):
    """A machine of `cores` cores under a 1-minute load of `load`, with OMP_NUM_THREADS unset."""
    from idefics_eval import distributed

    def set_machine(cores: int, load: float) -> None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(distributed.os, "getloadavg", lambda: (load, load, load), raising=False)

    return set_machine


def test_default_threads_take_the_free_cores_and_respect_omp_num_threads(machine, monkeypatch):
    from idefics_eval.distributed import default_threads

    machine(8, 0.4)
    assert default_threads() == 8
    machine(8, 2.7)
    assert default_threads() == 6  # two cores busy with other programs
    machine(2, 9.0)
    assert default_threads() == 1  # a busy machine: one thread, never fewer
    machine(8, 0.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == 4  # two processes of one torchrun on this machine share the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert default_threads() == 4  # not a number: as if unset


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_threads_option_sets_torch_threads_for_the_command_and_restores_them(command, machine, monkeypatch, tmp_path, capsys):
    import torch

    from idefics_eval import runner, sweep
    from idefics_eval.errors import UserError

    from conftest import invoke

    seen = []

    def record(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise UserError("stopped by the test")

    monkeypatch.setattr(runner, "run_tasks", record)
    monkeypatch.setattr(sweep, "_evaluate_checkpoint", record)  # a sweep sets them once its arguments are checked
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "idefics"}')
    args = {"run": ["run", "--task", "vqav2", "--demo", "--output-dir", str(tmp_path / "out")],
            "sweep": ["sweep", "--checkpoints", str(tmp_path / "ckpt"), "--task", "vqav2", "--demo-data", "--shots", "0",
                      "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]}[command]
    before = torch.get_num_threads()
    machine(2, 0.0)
    assert invoke(capsys, *args, "--threads", "3")[0] == 2
    assert invoke(capsys, *args)[0] == 2
    assert seen == [3, 2] and torch.get_num_threads() == before
    code, _, err = invoke(capsys, *args, "--threads", "0")
    assert code == 2 and "--threads" in err
