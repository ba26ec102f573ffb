"""The Llama 3.2 Vision and LLaVA-OneVision adapters on their tiny random checkpoints, loaded from
a folder as `--model DIR` loads them: the fast paths equal the plain ones (model.generate, one full
forward pass per candidate), batch size does not change an answer, and a few-shot run of the
bundled data completes and re-scores to its own numbers."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from idefics_eval.engine import GenerationSettings, Generator
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import load_model, load_prompt_side
from idefics_eval.prompts import Prompt, load_template, most_common_answer
from idefics_eval.ranking import Ranker

from conftest import invoke
from family_prompts import example, shot_prompts

FAMILIES = ["mllama", "llava_onevision"]


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    importlib.import_module(f"idefics_eval.demo.{request.param}").save_demo_model(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_model(str(checkpoint), device="cpu", dtype="float32")


def _eight_prompts():
    """0 to 4 shots, queries of every image shape: lone images get their own anyres grid / tiles."""
    template = load_template("vqa")
    return [template.render([example(i) for i in range(shots)], example(5 + q), most_common_answer)
            for q, shots in enumerate([0, 4, 1, 0, 3, 2, 4, 0])]


def test_the_checkpoint_loads_behind_its_familys_adapter(loaded, checkpoint):
    family = json.loads((checkpoint / "config.json").read_text())["model_type"]
    assert loaded.adapter.family == family and type(loaded.adapter).__name__ != "IdeficsAdapter"
    assert loaded.adapter.cached_features and loaded.adapter.fast_generation and loaded.adapter.prefix_ranking


def test_the_dry_runs_processor_alone_counts_the_same_tokens(loaded, checkpoint):
    side = load_prompt_side(str(checkpoint))
    assert type(side.adapter) is type(loaded.adapter) and side.adapter.model is None
    assert side.max_length == loaded.max_length
    for prompt in shot_prompts()[0]:
        assert side.adapter.token_ids(prompt) == loaded.adapter.token_ids(prompt)


@pytest.mark.parametrize("add_start_token", [True, False])
def test_text_inputs_equal_the_processors_inputs_without_pixels(loaded, add_start_token):
    prompts = shot_prompts()[0]
    adapter = loaded.adapter
    for batch in (prompts, prompts[:1], prompts[2:]):
        built, text = adapter.build_inputs(batch, add_start_token), adapter.text_inputs(batch, add_start_token)
        assert set(text) <= set(built) and {"input_ids", "attention_mask"} <= set(text)
        for key, value in text.items():
            assert torch.equal(value, built[key]), key
        assert [adapter.token_ids(p, add_start_token) for p in batch] == [
            ids[mask.bool()].tolist() for ids, mask in zip(built["input_ids"], built["attention_mask"])]
        has_start = (built["input_ids"] == adapter.tokenizer.bos_token_id).any(dim=1)
        assert has_start.tolist() == [add_start_token] * len(batch)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_fast_generation_equals_generate_token_for_token(loaded, num_beams):
    prompts = _eight_prompts()
    generator = Generator(loaded, GenerationSettings(max_new_tokens=6, num_beams=num_beams), ImageFeatureCache())
    assert generator.fast
    for batch in (prompts, prompts[:1], prompts[3:4]):
        plain, fast = generator.generate_ids_plain(batch), generator.generate_ids_fast(batch)
        assert torch.equal(fast, plain), (plain.tolist(), fast.tolist())
    assert plain.shape[1] > 1


def test_batch_sizes_one_and_eight_give_the_same_answers(loaded):
    prompts = _eight_prompts()
    generator = Generator(loaded, GenerationSettings(max_new_tokens=6, num_beams=3), ImageFeatureCache())
    together = generator.generate(prompts)
    assert together == [generator.generate([prompt])[0] for prompt in prompts]
    assert len(set(together)) > 1  # the images and questions change the answers


@pytest.mark.parametrize("add_start_token", [True, False])
def test_prefix_cached_ranking_equals_one_full_forward_per_candidate(loaded, add_start_token, trie_calls):
    template = load_template("vqa")
    for shots in (0, 4):
        context = template.render([example(i) for i in range(shots)], example(9), most_common_answer)
        candidates = ["red", "green", "dark blue", "colour 9", "yes"]
        continuations = [template.render([example(i) for i in range(shots)], example(9), most_common_answer, candidate=c)
                         for c in candidates]
        ranker = Ranker(loaded, 2, ImageFeatureCache(), add_start_token=add_start_token)
        for normalize in ("sum", "mean", "sequence_sum"):
            fast = ranker.loglikelihoods(context, continuations, normalize)
            full = ranker.loglikelihoods_full(context, continuations, normalize)
            assert fast == pytest.approx(full, abs=1e-4, rel=1e-6), normalize
            assert max(range(len(fast)), key=fast.__getitem__) == max(range(len(full)), key=full.__getitem__)
    assert trie_calls  # the passes' self-attention took the blocked path


def test_images_are_encoded_once_per_run(loaded):
    """A shot shown to several prompts is encoded once; the vision tower does not run again."""
    prompts = _eight_prompts()
    generator = Generator(loaded, GenerationSettings(max_new_tokens=2), ImageFeatureCache())
    generator.generate_ids_fast(prompts)
    cached = len(generator.image_cache)
    assert 0 < cached <= len({ref.key for prompt in prompts for ref in prompt.images})
    calls = []
    hook = generator.adapter.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    try:
        generator.generate_ids_fast([prompt for prompt in prompts if len(prompt.images) > 1])
    finally:
        hook.remove()
    assert calls == [] and len(generator.image_cache) == cached


def test_a_four_shot_run_of_the_bundled_data_completes_and_rescores_the_same(checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = invoke(capsys, "run", "--task", "vqav2,coco,hatefulmemes", "--model", str(checkpoint), "--demo-data",
                          "--shots", "4", "--limit", "4", "--num-beams", "3", "--batch-size", "8", "--output-dir", str(out),
                          "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu")
    assert code == 0, err
    rows = json.loads((out / "results.json").read_text())
    assert sorted((r["task"], r["shots"], r["num_examples"]) for r in rows) == [
        ("coco", 4, 4), ("hatefulmemes", 4, 4), ("vqav2", 4, 4)]
    code, _, err = invoke(capsys, "score", str(out), "-o", str(tmp_path / "rescored.json"))
    assert code == 0, err
    rescored = json.loads((tmp_path / "rescored.json").read_text())
    assert {r["task"]: r["metrics"] for r in rescored} == {r["task"]: r["metrics"] for r in rows}


def test_a_text_only_prompt_takes_every_path(loaded):
    """No image at all (the processor gets none): generation and ranking still equal their references."""
    question = "Question: what colour is it? Answer:"
    prompt = Prompt(items=(question,), shot_ids=())
    for num_beams in (1, 3):
        generator = Generator(loaded, GenerationSettings(max_new_tokens=4, num_beams=num_beams), ImageFeatureCache())
        assert torch.equal(generator.generate_ids_fast([prompt]), generator.generate_ids_plain([prompt]))
    continuations = [Prompt(items=(f"{question} {candidate}",), shot_ids=()) for candidate in ("red", "dark blue")]
    ranker = Ranker(loaded, 2, ImageFeatureCache())
    assert ranker.loglikelihoods(prompt, continuations, "sum") == pytest.approx(
        ranker.loglikelihoods_full(prompt, continuations, "sum"), abs=1e-4)
