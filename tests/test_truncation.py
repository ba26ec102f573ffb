"""Truncation counted truthfully: with a context limit just above the shortest query's zero-shot prompt,
that query loses every shot (and counts as truncated), the longer ones cannot fit even with no shots
(refused in one line, or skipped and counted), and the fast and plain paths agree, for a generated
(VQAv2), a ranked (ScienceQA) and a matched task (Winoground, one caption made longer).

The true lengths come from the processor (the plain path's own model inputs), not from the code
that fits the prompts."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import invoke
from test_bad_inputs import data_copy, long_question

from idefics_eval.model_requests import candidate_reserve, candidates_of
from idefics_eval.models import demo_model_name, load_model
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.prompts import most_common_answer

MAX_NEW_TOKENS = 3
LIMIT = 2  # queries; their zero-shot prompts differ in length
DEMO_DATA = Path(__file__).resolve().parents[1] / "idefics_eval" / "demo" / "data"


def longer_caption(data: Path) -> None:
    """Winoground's first two examples have captions of equal length; the second gets a longer one."""
    path = data / "examples.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["caption_1"] += " and a green circle below them"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


# task: (shot counts, how its copy of the demo data is edited)
TASKS = {"vqav2": ("0,2", None), "scienceqa": ("0,2", None), "winoground": ("0", longer_caption)}


def task_data(task: str, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DEMO_DATA / task, data)
    if TASKS[task][1]:
        TASKS[task][1](data)
    return data


@pytest.fixture(scope="module")
def canary():
    """The model `--demo` runs (its processor gives the true prompt lengths)."""
    return load_model(demo_model_name(None), device="cpu", dtype="float32")


def processor_length(loaded, prompt) -> int:
    items = [[item if isinstance(item, str) else item.load() for item in prompt.items]]
    return loaded.processor(text=items, return_tensors="pt")["input_ids"].shape[1]


def needed_tokens(task: str, loaded, tmp_path: Path, data: Path | None = None) -> dict[str, int]:
    """Each query's true need with no shots: its prompt and the room kept for the answer (generated:
    the new tokens; ranked: the longest candidate), or for Winoground its longest context + caption."""
    p = prepare(RunConfig(task=task, shots=(0,), output_dir=tmp_path / "measure", demo=True, data=data and str(data), limit=LIMIT))
    needs = {}
    for query in p.queries.examples:
        if p.spec.request == "match":
            shown = [replace(query, image=image) for image in (query.image, *query.extra_images)]
            needs[query.id] = max(processor_length(loaded, p.template.render([], q, most_common_answer, candidate=query.fields[f"caption_{c}"]))
                                  for q in shown for c in (0, 1))
            continue
        reserve = MAX_NEW_TOKENS if p.spec.request == "generate" else candidate_reserve(loaded, candidates_of(p.spec, query))
        needs[query.id] = processor_length(loaded, p.template.render([], query, lambda shot: "")) + reserve
    return needs


def run_at(capsys, task: str, data: Path, shots: str, limit: int, out: Path, *extra: str) -> tuple[int, str]:
    code, _, err = invoke(capsys, "run", "--task", task, "--demo", "--data", str(data), "--shots", shots, "--limit", str(LIMIT), "--num-beams", "1",
                          "--max-new-tokens", str(MAX_NEW_TOKENS), "--max-length", str(limit), "--output-dir", str(out),
                          "--no-progress", *extra)
    return code, err


def counted(out: Path) -> tuple[dict, dict]:
    """Per shot count: (examples, truncated, skipped) from results.json, and (id, dropped, shots, error) per line."""
    rows = {row["shots"]: (row["num_examples"], row["num_truncated"], row["num_skipped"])
            for row in json.loads((out / "results.json").read_text())}
    lines = {path.name: [(line["id"], line["dropped_shots"], line["shots"], "error" in line)
                         for line in map(json.loads, path.read_text().splitlines())]
             for path in sorted((out / "predictions").glob("*.jsonl"))}
    return rows, lines


@pytest.mark.parametrize("task", sorted(TASKS))
def test_truncation_and_skips_are_the_true_numbers_on_both_paths(task, canary, tmp_path, capsys):
    shots, data = TASKS[task][0], task_data(task, tmp_path)
    needs = needed_tokens(task, canary, tmp_path, data)
    limit = min(needs.values())
    fitting = [query_id for query_id, need in needs.items() if need <= limit]
    too_long = [query_id for query_id, need in needs.items() if need > limit]
    assert fitting and too_long, needs  # the data still gives both kinds

    results = {}
    for path in ("fast", "plain"):
        out = tmp_path / path
        code, err = run_at(capsys, task, data, shots, limit, out, "--on-bad-example", "skip",
                           *(["--plain-generation"] if path == "plain" else []))
        assert code == 0, err
        results[path] = counted(out)
    assert results["fast"] == results["plain"]

    rows, lines = results["fast"]
    for k in map(int, shots.split(",")):
        # a shot adds an image and its text, so a query that only just fits alone keeps none
        assert rows[k] == (len(fitting), len(fitting) if k else 0, len(too_long))
        (name,) = [n for n in lines if n.startswith(f"{task}_{k}shot")]
        assert {query_id: (dropped, kept, error) for query_id, dropped, kept, error in lines[name]} == (
            {query_id: (k, [], False) for query_id in fitting} | {query_id: (0, [], True) for query_id in too_long})


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_prompt_too_long_even_alone_stops_the_run_in_one_line(task, canary, tmp_path, capsys):
    data = task_data(task, tmp_path)
    needs = needed_tokens(task, canary, tmp_path, data)
    longest = max(needs, key=needs.get)
    code, err = run_at(capsys, task, data, "0", needs[longest] - 1, tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    first = next(query_id for query_id, need in needs.items() if need == needs[longest])
    assert f"query {first}: its prompt needs {needs[first]} tokens" in err
    assert f"more than the {needs[longest] - 1} of --max-length; raise --max-length" in err


def test_a_100000_character_question_is_skipped_before_anything_large_is_allocated(tmp_path):
    """In a fresh process, so that its peak memory is its own: the question is measured by the
    tokenizer and skipped; the model never sees it (it did: the run was killed for memory)."""
    data = data_copy(tmp_path, long_question)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "idefics_eval", "run", "--task", "vqav2", "--demo", "--data", str(data),
                           "--shots", "0", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3",
                           "--on-bad-example", "skip", "--output-dir", str(out), "--no-progress"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((out / "results.json").read_text())
    assert (row["num_examples"], row["num_skipped"], row["num_truncated"]) == (1, 1, 0)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    assert peak_mib < 3000
