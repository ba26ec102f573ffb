"""A protocol's `truncation: left` on the families whose images are blocks of tokens (Idefics2, and
whichever others set `left_truncation`): with a limit that cuts every query's few-shot prompt, the
ids the model reads are the processor's own for the whole prompt less the cut, the cut never
splits an image's block (the images kept are exactly the later ones, and their `<image>` tokens
all stay), the plain path's inputs equal the fast path's, and both paths predict and score alike."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import invoke
from test_truncation import DEMO_DATA, LEFT, LIMIT, MAX_NEW_TOKENS

from idefics_eval.dry_run import prompt_view
from idefics_eval.demo.families import save_family_demo
from idefics_eval.engine import GenerationSettings, Generator, load_image
from idefics_eval.errors import UserError
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.model_requests import candidate_reserve, candidates_of
from idefics_eval.models import load_model
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.ranking import Ranker
from idefics_eval.prompts import IMAGE

FAMILIES = ["idefics2", "idefics3", "smolvlm", "llava_onevision"]
TASKS = ["vqav2", "scienceqa"]
SHOTS = 4  # enough that a prompt cut into its second image is still longer than its query alone


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


def needs(checkpoint: Path, loaded, task: str, tmp_path: Path):
    """(the prepared run, each query's answer room, its need with no shots, and its SHOTS-shot prompt
    uncut with its need): the prompt's length in the processor's own ids plus the answer room."""
    p = prepare(config(checkpoint, task, tmp_path, 0), writes=False)
    reserve = {q.id: MAX_NEW_TOKENS if p.spec.request == "generate" else candidate_reserve(loaded, candidates_of(p.spec, q))
               for q in p.queries.examples}
    bare = {q.id: len(own_ids(loaded, prompt_view(config(checkpoint, task, tmp_path, 0), query_index=i).requests[0].prompt,
                              p.generation.add_start_token)) + reserve[q.id] for i, q in enumerate(p.queries.examples)}
    full = {}
    for index, query in enumerate(p.queries.examples):
        prompt = prompt_view(config(checkpoint, task, tmp_path, SHOTS), query_index=index).requests[0].prompt
        assert prompt.cut_tokens == 0 and len(prompt.images) == SHOTS + 1
        full[query.id] = (prompt, len(own_ids(loaded, prompt, p.generation.add_start_token)) + reserve[query.id])
    return p, reserve, bare, full


def assert_runs_agree(checkpoint: Path, task: str, tmp_path: Path, capsys, limit: int, cuts: dict[str, int]) -> None:
    """`run` with the limit, on the fast paths and on the plain ones (model.generate; a full forward
    pass per candidate): every prompt noted as cut, each line's `cut_tokens` those given, and the
    same predictions and scores."""
    results = {}
    for path in ("fast", "plain"):
        out = tmp_path / path
        code, stdout, err = invoke(capsys, "run", "--task", task, "--model", str(checkpoint), "--data", str(DEMO_DATA / task),
                                   "--shots", str(SHOTS), "--limit", str(LIMIT), "--num-beams", "1", "--max-new-tokens", str(MAX_NEW_TOKENS),
                                   "--max-length", str(limit), "--output-dir", str(out), "--no-progress",
                                   "--protocol", str(tmp_path / "left.yaml"), *(["--plain-generation"] if path == "plain" else []))
        assert code == 0, err
        assert f"{LIMIT} of {LIMIT} prompts cut from the left to fit {limit} tokens" in stdout
        (row,) = json.loads((out / "results.json").read_text())
        assert row["num_truncated"] == LIMIT
        lines = [json.loads(line) for line in (out / "predictions" / f"{task}_{SHOTS}shot.jsonl").read_text().splitlines()]
        assert {line["id"]: (line["cut_tokens"], line["dropped_shots"]) for line in lines} == {q: (c, 0) for q, c in cuts.items()}
        results[path] = [(line["id"], line["prediction"], [round(s, 4) for s in line.get("scores", [])]) for line in lines]
    assert results["fast"] == results["plain"]


def kept_pixels(adapter, batch) -> dict[str, torch.Tensor]:
    """The image processor's inputs for the images a batch's prompts keep. Idefics2/3 and SmolVLM:
    those of the images kept, processed for themselves. LLaVA-OneVision: those of the whole
    prompts' images (each shown as in the whole prompt: among several, where it has several) less
    the rows of the images cut."""
    if adapter.family != "llava_onevision":
        pixels = adapter.processor.image_processor([[load_image(ref) for ref in prompt.images] for prompt in batch],
                                                   return_tensors="pt")
        return {key: pixels[key] for key in ("pixel_values", "pixel_attention_mask")}
    every = [[item for item in prompt.items if not isinstance(item, str)] for prompt in batch]
    pixels = adapter.processor.image_processor([[load_image(ref) for ref in refs] for refs in every], return_tensors="pt")
    rows, at = [], 0
    for prompt, refs in zip(batch, every):
        rows += range(at + prompt.cut_images, at + len(refs))
        at += len(refs)
    return {key: pixels[key][rows] for key in ("pixel_values", "image_sizes")}


@pytest.mark.parametrize("block", [0, 1], ids=["into-the-first-image", "into-the-second-image"])
@pytest.mark.parametrize("task", TASKS)
def test_left_truncation_drops_whole_image_blocks_on_both_paths(task, block, checkpoint, loaded, tmp_path, capsys):
    """The shortest prompt's cut ends two tokens into its first image's block, or its second's (which
    leaves LLaVA-OneVision the query's image alone, still shown as one of several)."""
    adapter = loaded.adapter
    p, reserve, bare, full = needs(checkpoint, loaded, task, tmp_path)
    start = 1 if p.generation.add_start_token else 0
    # The shortest prompt's cut ends two tokens into an image's block: it must widen to the block's end.
    shortest = min(full, key=lambda query_id: full[query_id][1])  # every other query is cut more
    short_prompt, short_need = full[shortest]
    short_block = adapter.image_blocks(own_ids(loaded, short_prompt, p.generation.add_start_token), short_prompt)[block]
    limit = short_need - (short_block[0] + 2 - start)
    assert max(bare.values()) <= limit < min(need for _, need in full.values())  # every query fits alone, none with its shots

    image_id = adapter.tokenizer.convert_tokens_to_ids(IMAGE)
    cuts = {}
    for index, (query_id, (prompt, need)) in enumerate(full.items()):
        view = prompt_view(config(checkpoint, task, tmp_path, SHOTS, max_length=limit), query_index=index)
        shown, kept = view.to_json(), view.requests[0].prompt
        own = own_ids(loaded, prompt, p.generation.add_start_token)
        cut = shown["cut_tokens"]
        assert cut >= need - limit and shown["dropped_shots"] == 0 and shown["input_ids"] == own[:start] + own[start + cut:]
        assert 1 <= kept.cut_images <= SHOTS and kept.images == prompt.images[kept.cut_images:]
        sizes = adapter.image_sizes(prompt)
        assert own[start:start + cut].count(image_id) == sum(sizes[:kept.cut_images])  # cut images go whole ...
        assert shown["input_ids"].count(image_id) == sum(sizes[kept.cut_images:])  # ... and kept ones stay whole
        if query_id == shortest:
            assert kept.cut_images == block + 1
            assert cut == short_block[1] - start > need - limit  # widened past the block, and the prompt is that much shorter
            assert len(shown["input_ids"]) + reserve[query_id] < limit
        cuts[query_id] = cut

        # The plain path's inputs for the cut prompt, in a batch with an uncut one: the fast path's ids
        # and masks, and the processor's pixels for the images kept.
        whole = prompt_view(config(checkpoint, task, tmp_path, 0), query_index=index).requests[0].prompt
        batch = [whole, kept]  # this order: LLaVA-OneVision's plain path refuses the other (batch_num_images)
        plain = adapter.build_inputs(batch, p.generation.add_start_token)
        fast = adapter.text_inputs(batch, p.generation.add_start_token)
        assert set(fast) == {"input_ids", "attention_mask"}
        for key in fast:
            assert plain[key].tolist() == fast[key].tolist(), key
        for key, pixels in kept_pixels(adapter, batch).items():
            assert torch.equal(plain[key], pixels), key
    assert_runs_agree(checkpoint, task, tmp_path, capsys, limit, cuts)


def test_a_cut_into_the_first_of_two_adjacent_images_takes_all_its_tokens(checkpoint, loaded, tmp_path):
    """Two images with no text between them (a shot's image right after another): a cut ending in
    the first image's block takes every token of it (Idefics3's closing fake token too, which a
    second fake token, the next image's own, follows), and the ids kept after the start token are
    the family's own for a prompt opening with the second image."""
    adapter = loaded.adapter
    shown = prompt_view(config(checkpoint, "vqav2", tmp_path, SHOTS), query_index=0).requests[0].prompt
    first = shown.items.index(shown.images[0])
    prompt = replace(shown, items=(*shown.items[:first], shown.images[1], *shown.items[first:]))
    own = own_ids(loaded, prompt, True)
    begin, _ = adapter.image_blocks(own, prompt)[0]
    cut = adapter.cut_from_left(prompt, begin + 2 - 1, True)  # two tokens into the first image (after <s>)
    assert cut.cut_images == 1 and cut.images == prompt.images[1:]
    rest = replace(prompt, items=prompt.items[first + 1:])  # opens with the second image
    assert adapter.token_ids(cut, True) == own[:1] + adapter.token_ids(rest, False)
    assert adapter.build_inputs([cut], True)["input_ids"][0].tolist() == adapter.token_ids(cut, True)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families") / "llava_onevision"
    save_family_demo("llava_onevision", folder, seed=0)
    return folder, load_model(str(folder), device="cpu", dtype="float32", progress=False)


def test_llava_onevision_prompt_cut_to_its_last_image_still_shows_it_among_several(llava, tmp_path):
    """LLaVA-OneVision shows a prompt's lone image by its anyres crops, and each of several images
    whole: a prompt cut to the query's image keeps the tokens and features that image has in the
    whole prompt (one of several), on the fast and the plain paths of generation and of ranking."""
    checkpoint, loaded = llava
    adapter = loaded.adapter
    shown = prompt_view(config(checkpoint, "vqav2", tmp_path, SHOTS), query_index=0).requests[0].prompt
    own = own_ids(loaded, shown, True)
    cut = adapter.cut_from_left(shown, adapter.image_blocks(own, shown)[-2][0] + 2 - 1, True)  # into the last shot's image
    assert cut.cut_images == SHOTS and cut.images == shown.images[-1:]
    alone = prompt_view(config(checkpoint, "vqav2", tmp_path, 0), query_index=0).requests[0].prompt
    image_id = adapter.image_token_id
    among_several = adapter.image_sizes(shown)[-1]
    assert adapter.token_ids(cut, True).count(image_id) == among_several < adapter.token_ids(alone, True).count(image_id)
    assert adapter.token_ids(cut, True) == own[:1] + own[1 + cut.cut_tokens:]

    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    batch = [alone, cut]  # one image alone, then one among several
    fast = Generator(loaded, settings, ImageFeatureCache()).generate_fast(batch)
    assert Generator(loaded, settings, ImageFeatureCache(), fast=False).generate_plain(batch) == fast
    with pytest.raises(UserError, match="--batch-size 1"):  # the model cannot be told the other order
        adapter.build_inputs([cut, alone], True)

    words = [" red", " blue", " two"]
    continuations = [replace(cut, items=(*cut.items[:-1], cut.items[-1] + word)) for word in words]
    ranker = Ranker(loaded, 2, ImageFeatureCache())
    assert ranker.loglikelihoods(cut, continuations, "sum") == pytest.approx(ranker.loglikelihoods_full(cut, continuations, "sum"), abs=1e-4)


@pytest.fixture(scope="module")
def llama_vision(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families") / "mllama"
    save_family_demo("mllama", folder, seed=0)
    return folder, load_model(str(folder), device="cpu", dtype="float32", progress=False)


@pytest.mark.parametrize("task", TASKS)
def test_llama_vision_cut_keeps_its_start_token_first_and_drops_the_images_cut(task, llama_vision, tmp_path, capsys):
    """Llama 3.2 Vision's processor writes an image that opens the prompt (ScienceQA's) before
    `<|begin_of_text|>`: the tokens cut are the first of the processor's ids other than the start
    token, which stays first; the cross-attention mask and the pixels hold the images kept only."""
    checkpoint, loaded = llama_vision
    adapter = loaded.adapter
    p, _, bare, full = needs(checkpoint, loaded, task, tmp_path)
    assert p.generation.add_start_token
    bos, image_id = adapter.tokenizer.bos_token_id, adapter.image_token_id

    def body(ids: list[int]) -> list[int]:
        """The ids less the start token (the demo tokenizer adds no other)."""
        at = ids.index(bos)
        return ids[:at] + ids[at + 1:]

    shortest = min(full, key=lambda query_id: full[query_id][1])  # every other query is cut more
    short_prompt, short_need = full[shortest]
    short_own = own_ids(loaded, short_prompt, True)
    assert (short_own[0] == image_id) == (task == "scienceqa")  # ScienceQA's prompt opens with its image
    limit = short_need - (body(short_own).index(image_id) + 2)  # the cut takes the first image and a token after it
    assert max(bare.values()) <= limit < min(need for _, need in full.values())

    cuts = {}
    for index, (query_id, (prompt, need)) in enumerate(full.items()):
        view = prompt_view(config(checkpoint, task, tmp_path, SHOTS, max_length=limit), query_index=index)
        shown, kept = view.to_json(), view.requests[0].prompt
        own = own_ids(loaded, prompt, True)
        cut = shown["cut_tokens"]
        assert cut == need - limit and shown["dropped_shots"] == 0
        assert shown["input_ids"] == [bos, *body(own)[cut:]]
        assert kept.cut_images == body(own)[:cut].count(image_id) >= 1 and kept.images == prompt.images[kept.cut_images:]
        cuts[query_id] = cut

        whole = prompt_view(config(checkpoint, task, tmp_path, 0), query_index=index).requests[0].prompt
        plain = adapter.build_inputs([kept, whole], True)
        fast = adapter.text_inputs([kept, whole], True)
        assert set(fast) == {"input_ids", "attention_mask", "cross_attention_mask"}
        for key in fast:
            assert plain[key].tolist() == fast[key].tolist(), key
        pixels = adapter.processor.image_processor([[load_image(ref) for ref in kept.images], [load_image(ref) for ref in whole.images]],
                                                   return_tensors="pt")
        assert torch.equal(plain["pixel_values"], pixels["pixel_values"])
        # The tokens before the first image kept (the end of a cut image's text) see no image.
        row, mask = plain["input_ids"][0].tolist(), plain["cross_attention_mask"][0]
        assert mask.shape[1] == len(kept.images) and not mask[: row.index(image_id)].any() and mask[row.index(image_id):].any()
    assert_runs_agree(checkpoint, task, tmp_path, capsys, limit, cuts)


def test_llama_vision_cut_takes_every_image_before_the_start_token(llama_vision, tmp_path):
    """Two images open the prompt, both before `<|begin_of_text|>`: a cut of one token takes both,
    so that the start token stays first with no image before it."""
    checkpoint, loaded = llama_vision
    adapter = loaded.adapter
    shown = prompt_view(config(checkpoint, "scienceqa", tmp_path, SHOTS), query_index=0).requests[0].prompt
    prompt = replace(shown, items=(shown.images[1], *shown.items))
    own = own_ids(loaded, prompt, True)
    assert own[:3] == [adapter.image_token_id, adapter.image_token_id, adapter.tokenizer.bos_token_id]
    cut = adapter.cut_from_left(prompt, 1, True)
    assert (cut.cut_tokens, cut.cut_images) == (2, 2) and cut.images == prompt.images[2:]
    assert adapter.token_ids(cut, True) == own[2:]
    assert adapter.build_inputs([cut], True)["input_ids"][0].tolist() == own[2:]


def test_the_families_that_honour_a_left_cut_are_those_tested_here():
    """Every family here; a new family's adapter refuses `truncation: left` until it sets the flag
    (tests/test_truncation.py), and then it is tested here."""
    from idefics_eval.models import SUPPORTED_FAMILIES, adapter_class

    honoured = [family for family in SUPPORTED_FAMILIES if adapter_class(family, "tiny").left_truncation]
    assert sorted(honoured) == sorted(["idefics", *FAMILIES, "mllama"]) == sorted(SUPPORTED_FAMILIES)
