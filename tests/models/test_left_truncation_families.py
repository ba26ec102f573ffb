"""A protocol's `truncation: left` on the families whose images are blocks of tokens (Idefics2, and
whichever others set `left_truncation`): with a limit that cuts every query's 2-shot prompt, the
ids the model reads are the processor's own for the whole prompt less the cut, the cut never
splits an image's block (the images kept are exactly the later ones, and their `<image>` tokens
all stay), the plain path's inputs equal the fast path's, and both paths predict and score alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import invoke
from test_truncation import DEMO_DATA, LEFT, LIMIT, MAX_NEW_TOKENS

from idefics_eval.dry_run import prompt_view
from idefics_eval.demo.families import save_family_demo
from idefics_eval.engine import load_image
from idefics_eval.model_requests import candidate_reserve, candidates_of
from idefics_eval.models import load_model
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.prompts import IMAGE

FAMILIES = ["idefics2", "idefics3", "smolvlm"]
TASKS = ["vqav2", "scienceqa"]


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("families") / request.param
    save_family_demo(request.param, folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_model(str(checkpoint), device="cpu", dtype="float32", progress=False)


def config(checkpoint: Path, task: str, tmp_path: Path, shots: int, max_length: int | None = None) -> RunConfig:
    protocol = tmp_path / "left.yaml"
    protocol.write_text(LEFT)
    return RunConfig(task=task, shots=(shots,), output_dir=tmp_path / "out", model=str(checkpoint), data=str(DEMO_DATA / task),
                     protocol=str(protocol), max_new_tokens=MAX_NEW_TOKENS, max_length=max_length, limit=LIMIT,
                     cache_dir=tmp_path / "cache", progress=False)


def own_ids(loaded, prompt, add_start_token: bool) -> list[int]:
    """The family's processor's ids for the whole prompt (the plain path, uncut)."""
    return loaded.adapter.build_inputs([prompt], add_start_token)["input_ids"][0].tolist()


@pytest.mark.parametrize("task", TASKS)
def test_left_truncation_drops_whole_image_blocks_on_both_paths(task, checkpoint, loaded, tmp_path, capsys):
    adapter = loaded.adapter
    p = prepare(config(checkpoint, task, tmp_path, 0), writes=False)
    start = 1 if p.generation.add_start_token else 0
    reserve = {q.id: MAX_NEW_TOKENS if p.spec.request == "generate" else candidate_reserve(loaded, candidates_of(p.spec, q))
               for q in p.queries.examples}
    bare = {q.id: len(own_ids(loaded, prompt_view(config(checkpoint, task, tmp_path, 0), query_index=i).requests[0].prompt,
                              p.generation.add_start_token)) + reserve[q.id] for i, q in enumerate(p.queries.examples)}
    full = {}
    for index, query in enumerate(p.queries.examples):
        prompt = prompt_view(config(checkpoint, task, tmp_path, 2), query_index=index).requests[0].prompt
        assert prompt.cut_tokens == 0 and len(prompt.images) == 3
        full[query.id] = (prompt, len(own_ids(loaded, prompt, p.generation.add_start_token)) + reserve[query.id])
    # The first query's cut ends two tokens into its first image's block: it must widen to the block's end.
    first_prompt, first_need = next(iter(full.values()))
    first_block = adapter.image_blocks(own_ids(loaded, first_prompt, p.generation.add_start_token), first_prompt)[0]
    limit = first_need - (first_block[0] + 2 - start)
    assert max(bare.values()) <= limit < min(need for _, need in full.values())  # every query fits alone, none with its shots

    image_id = adapter.tokenizer.convert_tokens_to_ids(IMAGE)
    cuts = {}
    for index, (query_id, (prompt, need)) in enumerate(full.items()):
        view = prompt_view(config(checkpoint, task, tmp_path, 2, max_length=limit), query_index=index)
        shown, kept = view.to_json(), view.requests[0].prompt
        own = own_ids(loaded, prompt, p.generation.add_start_token)
        cut = shown["cut_tokens"]
        assert cut >= need - limit and shown["dropped_shots"] == 0 and shown["input_ids"] == own[:start] + own[start + cut:]
        assert 1 <= kept.cut_images <= 2 and kept.images == prompt.images[kept.cut_images:]
        sizes = adapter.image_sizes(prompt)
        assert own[start:start + cut].count(image_id) == sum(sizes[:kept.cut_images])  # cut images go whole ...
        assert shown["input_ids"].count(image_id) == sum(sizes[kept.cut_images:])  # ... and kept ones stay whole
        if not cuts:
            assert cut == first_block[1] - start > need - limit  # widened past the block, and the prompt is that much shorter
            assert len(shown["input_ids"]) + reserve[query_id] < limit
        cuts[query_id] = cut

        # The plain path's inputs for the cut prompt, in a batch with an uncut one: the fast path's ids
        # and masks, and the processor's pixels for the images kept.
        whole = prompt_view(config(checkpoint, task, tmp_path, 0), query_index=index).requests[0].prompt
        plain = adapter.build_inputs([kept, whole], p.generation.add_start_token)
        fast = adapter.text_inputs([kept, whole], p.generation.add_start_token)
        assert set(fast) == {"input_ids", "attention_mask"}
        for key in fast:
            assert plain[key].tolist() == fast[key].tolist(), key
        pixels = adapter.processor.image_processor([[load_image(ref) for ref in kept.images], [load_image(ref) for ref in whole.images]],
                                                   return_tensors="pt")
        for key in ("pixel_values", "pixel_attention_mask"):
            assert torch.equal(plain[key], pixels[key]), key

    results = {}
    for path in ("fast", "plain"):
        out = tmp_path / path
        code, stdout, err = invoke(capsys, "run", "--task", task, "--model", str(checkpoint), "--data", str(DEMO_DATA / task),
                                   "--shots", "2", "--limit", str(LIMIT), "--num-beams", "1", "--max-new-tokens", str(MAX_NEW_TOKENS),
                                   "--max-length", str(limit), "--output-dir", str(out), "--no-progress",
                                   "--protocol", str(tmp_path / "left.yaml"), *(["--plain-generation"] if path == "plain" else []))
        assert code == 0, err
        assert f"{LIMIT} of {LIMIT} prompts cut from the left to fit {limit} tokens" in stdout
        lines = [json.loads(line) for line in (out / "predictions" / f"{task}_2shot.jsonl").read_text().splitlines()]
        assert {line["id"]: (line["cut_tokens"], line["dropped_shots"]) for line in lines} == {q: (c, 0) for q, c in cuts.items()}
        results[path] = [(line["id"], line["prediction"], [round(s, 4) for s in line.get("scores", [])]) for line in lines]
    assert results["fast"] == results["plain"]


def test_the_families_that_honour_a_left_cut_are_those_tested_here():
    """The others (Llama 3.2 Vision, LLaVA-OneVision) refuse `truncation: left` (tests/test_truncation.py)."""
    from idefics_eval.models import SUPPORTED_FAMILIES, adapter_class

    honoured = [family for family in SUPPORTED_FAMILIES if adapter_class(family, "tiny").left_truncation]
    assert sorted(honoured) == sorted(["idefics", *FAMILIES])
