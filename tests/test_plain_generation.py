"""`run --plain-generation`: the reference paths (transformers `generate` on pixels, one full
forward pass per ranked candidate) give the default run's predictions, and the row says which ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idefics_eval.cli import main
from idefics_eval.engine import Generator
from idefics_eval.ranking import Ranker


def cli_run(out: Path, task: str, *extra: str) -> None:
    main(["run", "--task", task, "--demo", "--demo-seed", "0", "--shots", "0,2", "--limit", "4", "--output-dir", str(out),
          "--cache-dir", str(out.parent / "cache"), "--no-progress", *extra])


def predictions(out: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((out / "predictions").glob("*.jsonl"))}


def rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


def counting(monkeypatch, cls, name: str) -> list[int]:
    calls: list[int] = []
    method = getattr(cls, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return method(*args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return calls


def test_plain_generation_gives_the_default_predictions(tmp_path, monkeypatch):
    cli_run(tmp_path / "default", "vqav2")
    plain_calls = counting(monkeypatch, Generator, "generate_ids_plain")
    fast_calls = counting(monkeypatch, Generator, "generate_ids_fast")
    cli_run(tmp_path / "plain", "vqav2", "--plain-generation")
    assert plain_calls and not fast_calls  # the reference path ran, and only it
    assert predictions(tmp_path / "plain") == predictions(tmp_path / "default")
    assert [row["config"]["plain_generation"] for row in rows(tmp_path / "plain")] == [True, True]
    assert [row["config"]["plain_generation"] for row in rows(tmp_path / "default")] == [False, False]


def test_plain_ranking_gives_the_default_ranking(tmp_path, monkeypatch):
    cli_run(tmp_path / "default", "hatefulmemes")
    full_calls = counting(monkeypatch, Ranker, "loglikelihoods_full")
    cached_calls = counting(monkeypatch, Ranker, "loglikelihoods")
    cli_run(tmp_path / "plain", "hatefulmemes", "--plain-generation")
    assert full_calls and not cached_calls
    default, plain = predictions(tmp_path / "default"), predictions(tmp_path / "plain")
    assert default.keys() == plain.keys()
    numbers = ("scores", "score")  # log-likelihoods (and the probability made of them): equal to float32 rounding
    for name in default:
        for a, b in zip(default[name], plain[name], strict=True):
            assert {k: v for k, v in a.items() if k not in numbers} == {k: v for k, v in b.items() if k not in numbers}
            assert b["scores"] == pytest.approx(a["scores"], abs=1e-4) and b["score"] == pytest.approx(a["score"], abs=1e-4)
