"""The Idefics2, Idefics3 and SmolVLM adapters on their tiny random checkpoints: the fast paths equal
the plain ones (generation token for token, greedy and 3 beams; prefix-cached ranking within 1e-4 of
one full forward pass per candidate), batch sizes 1 and 8 agree, and `--model DIR` runs and
re-scores a 4-shot evaluation on the bundled data."""

from __future__ import annotations

import json

import pytest
import torch

from idefics_eval.demo.families import save_family_demo
from idefics_eval.engine import GenerationSettings, Generator
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import load_model, load_prompt_side
from idefics_eval.prompts import Prompt, load_template, most_common_answer
from idefics_eval.ranking import Ranker

from conftest import invoke
from family_prompts import example, shot_prompts

FAMILIES = ["idefics2", "idefics3", "smolvlm"]


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("families") / request.param
    save_family_demo(request.param, folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_model(str(checkpoint), device="cpu", dtype="float32", progress=False)


def prompts() -> list[Prompt]:
    """Ten prompts: 0 to 4 shots of images of several sizes, and a text-only one."""
    template = load_template("vqa")
    made = [template.render([example(i) for i in range(k % 5)], example(9 - k % 3), most_common_answer) for k in range(9)]
    return [*made, Prompt(items=("Question: what colour is it? Answer:",), shot_ids=())]


def test_the_checkpoint_picks_the_family_s_adapter(loaded, checkpoint):
    family = checkpoint.name
    assert loaded.adapter.family == family == loaded.model.config.model_type
    side = load_prompt_side(str(checkpoint))  # the dry run: the processor and config, no weights
    assert side.adapter.family == family and side.adapter.model is None
    for prompt in shot_prompts()[0]:
        assert side.adapter.token_ids(prompt) == loaded.adapter.token_ids(prompt)


@pytest.mark.parametrize("add_start_token", [True, False])
def test_text_inputs_and_prompt_text_equal_the_processor(loaded, add_start_token):
    adapter, batch = loaded.adapter, prompts()
    built = adapter.build_inputs(batch, add_start_token)
    text = adapter.text_inputs(batch, add_start_token)
    assert set(text) == {"input_ids", "attention_mask"}
    for key in text:
        assert torch.equal(text[key], built[key]), key
    for prompt in batch:
        alone = adapter.build_inputs([prompt], add_start_token)["input_ids"][0].tolist()
        assert adapter.token_ids(prompt, add_start_token) == alone


@pytest.mark.parametrize("num_beams", [1, 3])
def test_fast_generation_equals_generate_and_batch_sizes_agree(loaded, num_beams):
    settings = GenerationSettings(max_new_tokens=8, num_beams=num_beams)
    generator = Generator(loaded, settings, ImageFeatureCache())
    assert generator.fast
    batch = prompts()
    for size in (1, 8):
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            fast, plain = generator.generate_ids_fast(chunk), generator.generate_ids_plain(chunk)
            assert torch.equal(fast, plain), (size, start)
    one = [answer for prompt in batch for answer in generator.generate([prompt])]
    eight = generator.generate(batch[:8]) + generator.generate(batch[8:])
    assert one == eight
    assert len(set(one)) > 1  # the images and questions reach the answers


def test_prefix_cached_ranking_equals_one_full_forward_per_candidate(loaded, trie_calls):
    template = load_template("vqa")
    shots, query = [example(i) for i in range(4)], example(9)
    context = template.render(shots, query, most_common_answer)
    candidates = ["red", "green", "dark blue", "colour9", "no"]
    continuations = [template.render(shots, query, most_common_answer, candidate=c) for c in candidates]
    ranker = Ranker(loaded, 2, ImageFeatureCache())
    with torch.no_grad():
        for normalize in ("sum", "mean"):
            fast = ranker.loglikelihoods(context, continuations, normalize)
            full = ranker.loglikelihoods_full(context, continuations, normalize)
            assert fast == pytest.approx(full, abs=1e-4)
            assert max(range(len(fast)), key=fast.__getitem__) == max(range(len(full)), key=full.__getitem__)
    assert trie_calls  # the passes' self-attention took the blocked path


def test_vision_tower_embeddings_tell_images_apart(loaded):
    images = [example(i).image.load() for i in range(3)]
    embeddings = loaded.adapter.vision_embeddings(images)
    assert embeddings.shape[0] == 3 and embeddings.ndim == 2
    assert not (embeddings[0] == embeddings[1]).all()


def test_a_4_shot_run_on_the_bundled_data_completes_and_rescores(checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = invoke(capsys, "run", "--model", str(checkpoint), "--demo-data", "--task", "vqav2,coco,hatefulmemes",
                          "--shots", "4", "--limit", "6", "--output-dir", str(out), "--no-progress")
    assert code == 0, err
    run = json.loads((out / "results.json").read_text())
    code, _, err = invoke(capsys, "score", str(out), "-o", str(tmp_path / "rescored.json"))
    assert code == 0, err
    rescored = json.loads((tmp_path / "rescored.json").read_text())
    metrics = {row["task"]: row["metrics"] for row in run}
    assert set(metrics) == {"vqav2", "coco", "hatefulmemes"} and all(row["shots"] == 4 for row in run)
    assert {row["task"]: row["metrics"] for row in rescored} == metrics


def test_a_text_only_prompt_is_ranked_as_the_full_forward_ranks_it(loaded):
    question = "Question: what colour is it? Answer:"
    prompt = Prompt(items=(question,), shot_ids=())
    continuations = [Prompt(items=(f"{question} {candidate}",), shot_ids=()) for candidate in ("red", "dark blue")]
    ranker = Ranker(loaded, 2, ImageFeatureCache())
    with torch.no_grad():
        assert ranker.loglikelihoods(prompt, continuations, "sum") == pytest.approx(
            ranker.loglikelihoods_full(prompt, continuations, "sum"), abs=1e-4)
