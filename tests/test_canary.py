"""The trained canary (idefics_eval/canary) through the real pipeline, and prompts broken on purpose.

The canary learnt, on the synthetic world, to name a shape by the word of the shot whose image has
the same colour, choosing among shots of different colours. So on `canary_words` its score depends
on the shots reaching it intact: each test below breaks one thing the harness must get right (the
shots' images, the image attention, the shot order, keeping the answer out of the prompt) and
checks that the score moves the way that break must move it. If the harness itself ever broke the
prompt that way, `test_canary_reads_its_shots` or `test_canary_tells_shots_of_different_colours_apart`
would fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from idefics_eval.canary.world import write_words_data
from idefics_eval.models import CANARY_DIR, CANARY_NAME, idefics, load_model
from idefics_eval.prompts import Prompt, PromptTemplate
from idefics_eval.runner import RunConfig, run
from idefics_eval.shots import RicesSelector


def words_scores(out: Path, shots, selection="rices", data=None, demo_seed=None, max_length=None) -> dict[int, float]:
    config = RunConfig(task="canary_words", shots=tuple(shots), output_dir=out, demo=True, demo_seed=demo_seed,
                       data=None if data is None else str(data), selection=selection, progress=False,
                       max_length=max_length)
    return {row.shots: row.metrics["vqa_accuracy"] for row in run(config)}


@pytest.fixture(scope="module")
def one_per_colour(tmp_path_factory) -> Path:
    """canary_words with a support set of eight circles, one per colour: retrieved shots show
    different colours with different names, and only an intact image match finds the query's."""
    folder = tmp_path_factory.mktemp("one_per_colour")
    write_words_data(folder, shapes=("circle",), repeats={"train": 1, "validation": 3})
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_per_colour) -> dict[int, float]:
    return words_scores(tmp_path_factory.mktemp("reference"), (0, 2), data=one_per_colour)


def shuffled_scores(out: Path, data: Path) -> float:
    """8 random shots from the one-per-colour support: every colour shown once, in a seeded random
    order, so neither retrieval nor recency points at the right shot: only the images do (chance
    12.5)."""
    return words_scores(out, (8,), selection="random", data=data)[8]


@pytest.fixture(scope="module")
def shuffled_reference(tmp_path_factory, one_per_colour) -> float:
    return shuffled_scores(tmp_path_factory.mktemp("shuffled"), one_per_colour)


def test_the_shipped_canary_is_a_small_safetensors_checkpoint():
    files = {path.name for path in CANARY_DIR.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    assert (CANARY_DIR / "model.safetensors").stat().st_size < 5_000_000
    loaded = load_model(str(CANARY_DIR))
    assert loaded.name == CANARY_NAME
    assert loaded.model.dtype == torch.float32  # stored in float16, evaluated in float32 on CPU
    training = json.loads((CANARY_DIR / "training.json").read_text())
    assert training["steps"] > 0 and training["history"]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> dict[int, float]:
    return words_scores(tmp_path_factory.mktemp("bundled"), (0, 4))


def test_canary_reads_its_shots(bundled):
    """0 shots: the made-up name cannot be known; 4 retrieved shots (the query's colour) tell it."""
    assert bundled[0] <= 15 and bundled[4] >= 90


def test_canary_tells_shots_of_different_colours_apart(reference, shuffled_reference):
    """Two retrieved shots of two colours, two names: only matching the query's image to the right
    shot's image finds its name (guessing between the two words scores 50); and all eight colours
    shown in random order (chance 12.5)."""
    assert reference[0] <= 15 and reference[2] >= 80
    assert shuffled_reference >= 80


def test_random_model_learns_nothing_from_shots(tmp_path, one_per_colour):
    scores = words_scores(tmp_path, (0, 2), data=one_per_colour, demo_seed=0)
    assert scores[0] <= 15 and scores[2] <= 15


def _drop_shot_images(render):
    def broken(self, shots, query, shot_answer, candidate=None) -> Prompt:
        prompt = render(self, shots, query, shot_answer, candidate)
        images = [i for i, item in enumerate(prompt.items) if not isinstance(item, str)]
        kept = [item for i, item in enumerate(prompt.items) if isinstance(item, str) or i == images[-1]]
        merged: list = []
        for item in kept:
            if isinstance(item, str) and merged and isinstance(merged[-1], str):
                merged[-1] += item
            else:
                merged.append(item)
        return Prompt(tuple(merged), prompt.shot_ids)
    return broken


def test_shots_without_their_images_lose_the_score(tmp_path, monkeypatch, one_per_colour, shuffled_reference):
    """The shots' names are all still there, but not the pictures they name: which of the eight
    names is the query's can no longer be told."""
    monkeypatch.setattr(PromptTemplate, "render", _drop_shot_images(PromptTemplate.render))
    broken = shuffled_scores(tmp_path, one_per_colour)
    assert broken <= min(35, shuffled_reference - 50)


def _shifted_by_one_image(mask):
    def shifted(input_ids, tokenizer, num_images):
        true = mask(input_ids, tokenizer, num_images)
        wrong = torch.zeros_like(true)
        wrong[..., :-1] = true[..., 1:]  # a token of image k's text now attends to image k - 1
        return wrong
    return shifted


def test_image_attention_shifted_by_one_image_loses_the_names(tmp_path, monkeypatch, one_per_colour,
                                                              shuffled_reference):
    """Every token sees the image before the one it should (the first shot's text sees none): each
    name is then tied to the wrong picture, and the query's text sees the last shot's picture."""
    monkeypatch.setattr(idefics, "image_attention_mask", _shifted_by_one_image(idefics.image_attention_mask))
    broken = shuffled_scores(tmp_path, one_per_colour)
    assert broken <= shuffled_reference - 50


def test_leaked_answer_is_copied(tmp_path, monkeypatch, one_per_colour, reference):
    """The query itself shown as a shot, answer included (what a broken same-image exclusion does):
    even at 0 shots the canary then names every query."""
    render = PromptTemplate.render

    def leaking(self, shots, query, shot_answer, candidate=None):
        return render(self, [*shots, query], query, shot_answer, candidate)

    monkeypatch.setattr(PromptTemplate, "render", leaking)
    leaked = words_scores(tmp_path, (0,), data=one_per_colour)
    assert leaked[0] >= reference[0] + 50


def test_shots_in_reversed_order_lose_the_score_when_the_context_is_short(tmp_path, monkeypatch, one_per_colour):
    """RICES puts the most similar shot last, and a prompt longer than the context loses its first
    (least similar) shots. In the reverse order the shot that names the query is the one cut off."""
    one_shot_fits = 60  # tokens: the instruction, one shot and the query
    right = words_scores(tmp_path / "right", (4,), data=one_per_colour, max_length=one_shot_fits)
    monkeypatch.setattr(RicesSelector, "_prompt_order", lambda self, chosen: chosen)  # most similar first
    broken = words_scores(tmp_path / "reversed", (4,), data=one_per_colour, max_length=one_shot_fits)
    assert right[4] >= 60
    assert broken[4] <= right[4] - 40
