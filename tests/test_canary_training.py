"""The canary's training code (idefics_eval/canary/train.py, world.py): what it learns from, the
structured initialisation that makes the naming game learnable, and a short end-to-end run."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from idefics_eval.canary import train as canary_train
from idefics_eval.canary.model import build_model, build_processor
from idefics_eval.canary.world import CODE, SEED, World, render
from idefics_eval.models import load_model


@pytest.fixture(scope="module")
def small_world() -> World:
    return World(SEED, scenes=20, drawings_per_class=2, singles=160)


@pytest.fixture(scope="module")
def processor():
    return build_processor()


def test_contrast_episode_shows_each_colour_once_and_learns_only_the_query(small_world):
    small_world.rng = random.Random(1)
    colour_of = dict(small_world.singles)
    for shots in (2, 4, 8):
        episode = small_world.contrast_episode(shots)
        colours = [colour_of[shot.image.index] for shot in episode.shots]
        assert len(set(colours)) == shots
        query_colour = colour_of[episode.query.image.index]
        assert query_colour in colours
        named = episode.shots[colours.index(query_colour)].answers[0]
        assert episode.query.answers == (named,)
        assert len({shot.answers[0] for shot in episode.shots}) == shots
        assert episode.learn == (False,) * shots + (True,)


def test_recency_episode_names_the_query_by_the_later_of_two_names(small_world):
    small_world.rng = random.Random(4)
    colour_of = dict(small_world.singles)
    for shots in (2, 4, 8):
        episode = small_world.recency_episode(shots)
        colours = [colour_of[shot.image.index] for shot in episode.shots]
        query_colour = colour_of[episode.query.image.index]
        same = [i for i, c in enumerate(colours) if c == query_colour]
        assert len(same) == 2 and len(set(colours)) == shots - 1
        earlier, later = (episode.shots[i].answers[0] for i in same)
        assert earlier != later and episode.query.answers == (later,)
        assert sum(shot.answers[0] == earlier for shot in episode.shots) == 1  # the old name is nobody else's
        assert episode.learn == (False,) * shots + (True,)


def test_the_loss_covers_exactly_the_answers_to_learn(small_world, processor):
    """Batches.encode marks for the loss the learnt answers (with the newline that ends a shot) and
    the final end-of-sequence, nothing of the prompt."""
    small_world.rng = random.Random(2)
    batches = canary_train.Batches(small_world, processor)
    episodes = [small_world.words_episode(4) for _ in range(6)] + [small_world.episode("vqa", 4)]
    batch = batches.encode(episodes)
    tokenizer = processor.tokenizer
    for row, episode in enumerate(episodes):
        learnt = tokenizer.decode(batch["input_ids"][row][batch["learn"][row]])
        examples = (*episode.shots, episode.query)
        expected = "".join(" " + ex.answers[0] + "\n" for ex, learn in zip(examples[:-1], episode.learn) if learn)
        expected += (" " + episode.query.answers[0] if episode.learn[-1] else "") + tokenizer.eos_token
        assert learnt.replace(" ", "") == expected.replace(" ", "")
        text = render(small_world.templates[episode.template], episode).processor_text(tokenizer.bos_token)
        assert tokenizer.decode(batch["input_ids"][row][batch["attention_mask"][row].bool()]).startswith(text[:40])


def test_the_fitted_matcher_attends_to_the_shot_whose_image_matches(small_world, processor):
    """Before any training, `init_match_head` makes head 0 of layer 1 look from the query's answer
    position at the naming word whose shot has the query's colour, far more than at the others."""
    batches = canary_train.Batches(small_world, processor)
    model = build_model(SEED)
    canary_train.shrink_resampler_latents(model)
    canary_train.init_copy_heads(model, processor.tokenizer, CODE)
    model.eval()
    fits = canary_train.init_match_head(model, batches, small_world, processor.tokenizer, episodes=128)
    assert fits["query_colour_fit"] > 0.8 and fits["key_colour_fit"] > 0.8

    small_world.rng = random.Random(3)
    episodes = [small_world.contrast_episode(3) for _ in range(48)]
    batch = batches.encode(episodes)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_attention_mask")},
                    output_attentions=True)
    attention = out.attentions[1][:, 0]
    code_ids = {w: processor.tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in CODE}
    colour_of = dict(small_world.singles)
    matching = others = 0.0
    for row, episode in enumerate(episodes):
        at = int(batch["learn"][row].nonzero().flatten()[-2]) - 1
        ids = batch["input_ids"][row]
        for shot in episode.shots:
            weight = float(attention[row, at, (ids == code_ids[shot.answers[0]]).nonzero().flatten()[0]])
            if colour_of[shot.image.index] == colour_of[episode.query.image.index]:
                matching += weight
            else:
                others += weight / 2
    assert matching > 3 * others  # measured: 0.64 against 0.13 per other word


def test_frozen_below_is_what_feeds_the_matcher(processor):
    model = build_model(SEED)
    frozen = {id(p) for p in canary_train.frozen_below(model)}
    inner = model.model
    assert all(id(p) in frozen for p in inner.vision_model.parameters())
    assert all(id(p) in frozen for p in inner.layers[0].parameters())
    assert all(id(p) not in frozen for p in inner.layers[1].self_attn.parameters())
    assert all(id(p) not in frozen for p in inner.layers[3].parameters())


def test_a_short_training_run_writes_a_loadable_checkpoint(tmp_path, monkeypatch):
    """Two steps of each phase, through `main` (the command README gives), on a small world."""
    monkeypatch.setattr(canary_train, "World", lambda seed: World(seed, scenes=20, drawings_per_class=2, singles=160))
    monkeypatch.setattr(canary_train, "PROBE_SHOTS", (2,))
    canary_train.main(["--out", str(tmp_path), "--steps", "2", "--bootstrap-steps", "2", "--batch-size", "2",
                       "--log-every", "1", "--shots-mix", "0:1,2:1", "--threads", "1"])
    record = json.loads((tmp_path / "training.json").read_text())
    assert [h["phase"] for h in record["history"]] == ["bootstrap", "bootstrap", "main", "main"]
    assert 0 <= record["history"][-1]["contrast_2shot"] <= 1
    assert record["matcher_fit"]["query_colour_fit"] > 0.5
    assert {t.dtype for t in load_file(tmp_path / "model.safetensors").values()} == {torch.float16}
    loaded = load_model(str(tmp_path))  # as `--model DIR` loads it
    assert loaded.processor.tokenizer.convert_tokens_to_ids("<image>") is not None
