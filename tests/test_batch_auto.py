"""`--batch-size auto`: the probe's choice under a simulated GPU out-of-memory (no GPU in the test
machines), the one-example failure, the probe running on the run's longest requests, and the
8 chosen off GPU, recorded and giving the same predictions as batch size 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import idefics_eval.engine as engine
import idefics_eval.runner as runner
from idefics_eval.engine import AUTO_BATCH_LIMIT, Generator, count_tokens, find_batch_size, resolve_batch_size
from idefics_eval.errors import UserError
from idefics_eval.ranking import Ranker
from idefics_eval.runner import RunConfig, run

from conftest import invoke


def fits_up_to(threshold: int, tried: list[int]):
    """A try-function that runs out of GPU memory above `threshold` rows, noting every size tried."""

    def try_batch(size: int) -> None:
        tried.append(size)
        if size > threshold:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated, {size} rows)")

    return try_batch


@pytest.fixture
def empty_cache_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


@pytest.mark.parametrize(
    "threshold, limit, tried, chosen",
    [
        (12, 64, [1, 2, 4, 8, 16], 8),
        (1, 64, [1, 2], 1),
        (100, 64, [1, 2, 4, 8, 16, 32, 64], 64),  # nothing fails: the cap
        (100, 6, [1, 2, 4, 6], 6),  # a cap that is not a power of two is tried itself
        (5, 6, [1, 2, 4, 6], 4),
    ],
)
def test_the_largest_size_that_fits_is_chosen(threshold, limit, tried, chosen, empty_cache_calls):
    seen: list[int] = []
    assert find_batch_size(fits_up_to(threshold, seen), limit) == chosen
    assert seen == tried
    assert len(empty_cache_calls) == (1 if threshold < limit else 0)  # released after the out-of-memory error


def test_a_model_that_does_not_fit_with_one_example_is_a_user_error(empty_cache_calls):
    with pytest.raises(UserError) as caught:
        find_batch_size(fits_up_to(0, []), 64)
    message = str(caught.value)
    assert "does not fit" in message and "one example" in message
    assert "--dtype" in message and "--device-map" in message and "\n" not in message


def test_other_errors_are_not_taken_for_out_of_memory():
    def broken(size: int) -> None:
        raise RuntimeError("a shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        find_batch_size(broken, 64)


def test_auto_probes_only_on_cuda_and_at_most_the_cap():
    def worst_case(rows: int, seen: list[int]):
        return lambda: (fits_up_to(1000, seen), rows)

    never: list[int] = []
    assert resolve_batch_size(16, torch.device("cuda"), worst_case(100, never)) == 16
    assert resolve_batch_size("auto", torch.device("cpu"), worst_case(100, never)) == 8
    assert resolve_batch_size("auto", torch.device("mps"), worst_case(100, never)) == 8
    assert never == []
    seen: list[int] = []
    assert resolve_batch_size("auto", torch.device("cuda"), worst_case(1000, seen)) == AUTO_BATCH_LIMIT
    assert max(seen) == AUTO_BATCH_LIMIT
    assert resolve_batch_size("auto", torch.device("cuda"), worst_case(3, [])) == 3  # no larger batch than requests


@pytest.fixture
def simulated_gpu(monkeypatch):
    """The runner believes it runs on CUDA (the model stays on CPU), so `auto` probes."""
    real = engine.resolve_batch_size
    monkeypatch.setattr(runner, "resolve_batch_size", lambda batch_size, device, worst_case: real(batch_size, torch.device("cuda"), worst_case))


def config(tmp_path: Path, name: str, **overrides) -> RunConfig:
    base = dict(task="vqav2", shots=(0, 2), output_dir=tmp_path / name, demo=True, demo_seed=0, limit=6, num_beams=1,
                max_new_tokens=5, cache_dir=tmp_path / "cache", progress=False)
    return RunConfig(**(base | overrides))


def predictions(out: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((out / "predictions").glob("*.jsonl"))}


def test_generation_probe_runs_the_longest_prompts_and_records_its_choice(tmp_path, monkeypatch, simulated_gpu):
    calls: list[list[tuple[int, int]]] = []
    generate = Generator.generate_raw  # what the run calls (the sample log keeps the raw text)

    def generate_or_run_out(self, prompts):
        calls.append([(len(p.images), count_tokens(self.loaded, p)) for p in prompts])
        if len(prompts) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return generate(self, prompts)

    monkeypatch.setattr(Generator, "generate_raw", generate_or_run_out)
    rows = run(config(tmp_path, "auto", batch_size="auto"))
    assert [row.config["batch_size"] for row in rows] == [2, 2]  # 1 and 2 fit, 4 did not
    two_shot = calls[len(calls) // 2 :]  # every shot count probes its own prompts: 1, 2, 4, then the run
    probe, batches = two_shot[:3], two_shot[3:]
    assert [len(call) for call in probe] == [1, 2, 4]
    everything = sorted((size for batch in batches for size in batch), reverse=True)
    assert probe[2] == everything[:4]  # the probe ran the run's longest prompts, longest first
    assert [len(batch) for batch in batches] == [2, 2, 2]
    monkeypatch.setattr(Generator, "generate_raw", generate)
    assert predictions(tmp_path / "auto") == predictions(run_dir(tmp_path, "one", batch_size=1))


def run_dir(tmp_path: Path, name: str, **overrides) -> Path:
    run(config(tmp_path, name, **overrides))
    return tmp_path / name


def test_ranking_probe_runs_the_longest_context(tmp_path, monkeypatch, simulated_gpu):
    calls: list[tuple[int, int, int]] = []
    loglikelihoods = Ranker.loglikelihoods

    def score_or_run_out(self, context, continuations, normalize):
        calls.append((self.batch_size, len(context.images), count_tokens(self.loaded, context)))
        if self.batch_size > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return loglikelihoods(self, context, continuations, normalize)

    monkeypatch.setattr(Ranker, "loglikelihoods", score_or_run_out)
    rows = run(config(tmp_path, "auto", task="hatefulmemes", shots=(2,), batch_size="auto"))
    assert rows[0].config["batch_size"] == 1
    probe, queries = calls[:2], calls[2:]
    assert [size for size, _, _ in probe] == [1, 2]  # two candidates: no larger batch is tried
    assert probe[0][1:] == max(call[1:] for call in queries)
    monkeypatch.setattr(Ranker, "loglikelihoods", loglikelihoods)
    assert predictions(tmp_path / "auto") == predictions(run_dir(tmp_path, "fixed", task="hatefulmemes", shots=(2,), batch_size=1))


def cli_run(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(capsys, "run", "--task", "vqav2", "--demo", "--demo-seed", "0", "--shots", "0,2", "--limit", "6", "--output-dir", str(out),
                  "--cache-dir", str(out.parent / "cache"), "--no-progress", *extra)


def test_auto_on_cpu_is_8_and_gives_the_predictions_of_batch_size_1(tmp_path, capsys):
    code, _, err = cli_run(capsys, tmp_path / "auto", "--batch-size", "auto")
    assert code == 0, err
    rows = json.loads((tmp_path / "auto" / "results.json").read_text())
    assert [row["config"]["batch_size"] for row in rows] == [8, 8]
    code, _, err = cli_run(capsys, tmp_path / "one", "--batch-size", "1")
    assert code == 0, err
    assert predictions(tmp_path / "auto") == predictions(tmp_path / "one")
    assert [row["config"]["batch_size"] for row in json.loads((tmp_path / "one" / "results.json").read_text())] == [1, 1]


@pytest.mark.parametrize("value", ["zero", "0", "-2", "1.5", ""])
def test_a_batch_size_that_is_not_positive_or_auto_is_refused(tmp_path, capsys, value):
    code, _, err = cli_run(capsys, tmp_path / "out", "--batch-size", value)
    assert code == 2
    assert "--batch-size" in err and "positive whole number or auto" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_config_refuses_a_bad_batch_size(tmp_path):
    with pytest.raises(UserError, match="--batch-size 0"):
        run(config(tmp_path, "out", batch_size=0))
    with pytest.raises(UserError, match="--batch-size 'big'"):
        run(config(tmp_path, "out", batch_size="big"))
