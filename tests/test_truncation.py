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
import torch
from conftest import invoke
from test_bad_inputs import data_copy, long_question

from idefics_eval.dry_run import prompt_view
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


# -- truncation "left" (a protocol's truncation: left, the IDEFICS authors'): tokens cut, not shots --

LEFT = "name: left\ndefault:\n  truncation: left\n"


def left_protocol(tmp_path: Path) -> Path:
    path = tmp_path / "left.yaml"
    path.write_text(LEFT)
    return path


def left_view(task: str, data: Path, tmp_path: Path, index: int, max_length: int | None = None):
    config = RunConfig(task=task, shots=(2,), output_dir=tmp_path, demo=True, data=str(data), protocol=str(left_protocol(tmp_path)),
                       max_new_tokens=MAX_NEW_TOKENS, max_length=max_length, cache_dir=tmp_path / "cache", progress=False)
    return prompt_view(config, query_index=index)


def reserve_of(task: str, loaded, p, query) -> int:
    return MAX_NEW_TOKENS if p.spec.request == "generate" else candidate_reserve(loaded, candidates_of(p.spec, query))


@pytest.mark.parametrize("task", ["vqav2", "scienceqa"])
def test_left_truncation_cuts_the_first_tokens_and_their_images_on_both_paths(task, canary, tmp_path, capsys):
    data = task_data(task, tmp_path)
    p = prepare(RunConfig(task=task, shots=(0,), output_dir=tmp_path / "measure", demo=True, data=str(data), limit=LIMIT))
    bare = needed_tokens(task, canary, tmp_path, data)
    full = {}  # each query's 2-shot prompt uncut, as the processor encodes it, and its answer room
    for index, query in enumerate(p.queries.examples):
        view = left_view(task, data, tmp_path, index)
        assert view.to_json()["cut_tokens"] == 0
        full[query.id] = (view.requests[0].prompt, processor_length(canary, view.requests[0].prompt) + reserve_of(task, canary, p, query))
    limit = (max(bare.values()) + min(need for _, need in full.values())) // 2
    assert max(bare.values()) <= limit < min(need for _, need in full.values())  # every query fits alone, none with its shots

    # What the model is given: the processor's own ids less the cut, and the images after it.
    image_id = canary.processor.tokenizer.convert_tokens_to_ids("<image>")
    for index, (query_id, (prompt, need)) in enumerate(full.items()):
        cut = need - limit
        view = left_view(task, data, tmp_path, index, max_length=limit)
        shown = view.to_json()
        items = [[item if isinstance(item, str) else item.load() for item in prompt.items]]
        own = canary.processor(text=items, return_tensors="pt")["input_ids"][0].tolist()
        start = 1 if p.generation.add_start_token else 0
        own = own if start else own[1:]
        assert shown["cut_tokens"] == cut and shown["dropped_shots"] == 0 and shown["shot_ids"] == list(prompt.shot_ids)
        assert shown["input_ids"] == own[:start] + own[start + cut:]
        kept_prompt = view.requests[0].prompt
        assert len(kept_prompt.images) == shown["input_ids"].count(image_id) == 3 - own[start:start + cut].count(image_id)
        assert kept_prompt.images == prompt.images[kept_prompt.cut_images:]

    results = {}
    for path in ("fast", "plain"):
        out = tmp_path / path
        code, stdout, err = invoke(capsys, "run", "--task", task, "--demo", "--data", str(data), "--shots", "2", "--limit", str(LIMIT),
                                   "--num-beams", "1", "--max-new-tokens", str(MAX_NEW_TOKENS), "--max-length", str(limit),
                                   "--output-dir", str(out), "--no-progress", "--protocol", str(left_protocol(tmp_path)),
                                   *(["--plain-generation"] if path == "plain" else []))
        assert code == 0, err
        assert f"note: {task} 2-shot: {LIMIT} of {LIMIT} prompts cut from the left to fit {limit} tokens" in stdout
        lines = [json.loads(line) for line in (out / "predictions" / f"{task}_2shot.jsonl").read_text().splitlines()]
        (row,) = json.loads((out / "results.json").read_text())
        assert row["num_truncated"] == LIMIT and row["config"]["generation"]["truncation"] == "left"
        assert {line["id"]: (line["cut_tokens"], line["dropped_shots"]) for line in lines} == {
            query_id: (need - limit, 0) for query_id, (_, need) in full.items()}
        results[path] = [(line["id"], line["prediction"], [round(s, 4) for s in line.get("scores", [])]) for line in lines]
    assert results["fast"] == results["plain"]


def test_the_plain_inputs_of_a_cut_prompt_equal_the_fast_paths(canary, tmp_path):
    """A batch of a cut and an uncut prompt: the processor's inputs, cut (models.idefics.cut_inputs), equal
    the fast path's token inputs, and its pixels are those of the images kept, in order."""
    from idefics_eval.engine import Generator
    from idefics_eval.model_requests import fit_prompt

    data = task_data("vqav2", tmp_path)
    config = RunConfig(task="vqav2", shots=(2,), output_dir=tmp_path / "p", demo=True, data=str(data), selection="random",
                       protocol=str(left_protocol(tmp_path)), max_new_tokens=MAX_NEW_TOKENS, max_length=48)
    p = prepare(config, writes=False)
    query, shots = p.queries.examples[0], list(p.support.examples[:2])
    cut, _, length = fit_prompt(p, canary, shots, query, MAX_NEW_TOKENS)
    assert cut.cut_tokens > 0 and cut.cut_images == 1 and length == 48 - MAX_NEW_TOKENS
    whole = p.template.render([], query, most_common_answer)
    generator = Generator(canary, p.generation)
    plain, fast = generator.encode([cut, whole]), generator.text_inputs([cut, whole])
    for key in ("input_ids", "attention_mask", "image_attention_mask"):
        assert plain[key].tolist() == fast[key].tolist(), key
    pixels = canary.processor.image_processor([ref.load() for ref in cut.images], return_tensors="pt")
    pixels = pixels if isinstance(pixels, torch.Tensor) else pixels["pixel_values"]
    assert plain["pixel_values"].shape[1] == 2 and bool((plain["pixel_values"][0] == pixels).all())
    assert bool((plain["pixel_values"][1, 1] == 0).all())  # the uncut prompt's one image, then padding


def test_the_protocols_truncation_and_context_limit(canary, tmp_path):
    from idefics_eval.errors import UserError
    from idefics_eval.model_requests import context_limit

    def prepared(protocol: str, max_length: int | None = None):
        return prepare(RunConfig(task="vqav2", shots=(0,), output_dir=tmp_path, demo=True, protocol=protocol, max_length=max_length),
                       writes=False)

    idefics = prepared("idefics")
    assert (idefics.truncation, idefics.protocol_max_length, context_limit(idefics, canary)) == ("left", 2048, 2048)
    default = prepared("default")
    assert (default.truncation, context_limit(default, canary)) == ("drop-shots", canary.max_length)
    assert context_limit(prepared("idefics", max_length=100), canary) == 100  # --max-length wins
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\ndefault:\n  max_length: 999999\n")
    assert context_limit(prepared(str(mine)), canary) == canary.max_length  # never past the model's context
    for content, message in (("truncation: right", "default.truncation"), ("max_length: 0", "default.max_length"),
                             ("max_length: long", "default.max_length")):
        mine.write_text(f"name: mine\ndefault:\n  {content}\n")
        with pytest.raises(UserError, match=message):
            prepared(str(mine))


def test_left_truncation_is_refused_for_a_family_whose_inputs_do_not_honour_the_cut(canary, tmp_path):
    """Only an adapter with `left_truncation` builds cut inputs; for any other the run stops in one line."""
    from types import SimpleNamespace

    from idefics_eval.errors import UserError
    from idefics_eval.model_requests import check_context

    p = prepare(RunConfig(task="vqav2", shots=(0,), output_dir=tmp_path, demo=True, protocol=str(left_protocol(tmp_path))),
                writes=False)
    assert canary.adapter.left_truncation
    check_context(p, canary)
    other = SimpleNamespace(max_length=canary.max_length, name="tiny", adapter=SimpleNamespace(left_truncation=False, family="llava_onevision"))
    with pytest.raises(UserError, match="truncation: left is not implemented for llava_onevision models"):
        check_context(p, other)


def test_the_candidates_reserve_is_their_longest_tokenisation_for_each_list(demo_loaded):
    """Kept per class list (`_longest_candidate`): another list, or a list of another length, gets its own."""
    tokenizer = demo_loaded.processor.tokenizer

    def plain(candidates):
        return max(len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in candidates) + 4

    short, long = ["red", "blue"], ["red", "a very dark and long blue square"]
    for candidates in (short, long, short, tuple(long)):
        assert candidate_reserve(demo_loaded, candidates) == plain(candidates)
    assert plain(long) > plain(short)
