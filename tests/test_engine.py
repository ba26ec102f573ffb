"""Generation: batching gives the same answers as one query at a time; banned and stop words."""

from __future__ import annotations

import pytest

from idefics_eval.engine import GenerationSettings, Generator, banned_token_ids, batches_by_length, count_tokens, cut_at_stop_words, generate_all
from idefics_eval.prompts import load_template, most_common_answer

from conftest import make_example

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 30, 220), (240, 240, 20), (150, 20, 160), (250, 140, 0)]


def _prompts(count: int, shots: int):
    """Prompts with different shot counts, so a batch mixes lengths and image counts."""
    template = load_template("vqa")
    support = [make_example(f"s{i}", f"s{i}", f"What color is shape {i}?", [f"colour{i}"] * 10, rgb=COLOURS[i % 6])
               for i in range(8)]
    prompts = []
    for q in range(count):
        query = make_example(f"q{q}", f"q{q}", "What color is the circle?" + " really" * q, ["red"] * 10, rgb=COLOURS[(q + 3) % 6])
        prompts.append(template.render(support[: (q * 3) % (shots + 1)], query, most_common_answer))
    return prompts


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_generation_equals_one_at_a_time(demo_loaded, num_beams):
    generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=8, num_beams=num_beams))
    prompts = _prompts(6, shots=4)
    assert len({len(p.images) for p in prompts}) > 2
    single = [generator.generate([p])[0] for p in prompts]
    lengths = [count_tokens(demo_loaded, p) for p in prompts]
    batched: dict[int, str] = {}
    generate_all(generator, prompts, lengths, 4, lambda idx, answers: batched.update(zip(idx, answers)))
    assert [batched[i] for i in range(len(prompts))] == single


def test_images_change_the_answer(demo_loaded):
    """The demo model's gates are open: a prompt's images reach the logits (guards the mask setup)."""
    import torch

    generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=1, num_beams=1))
    template = load_template("vqa")
    logits = []
    for rgb in [(255, 0, 0), (0, 0, 255)]:
        query = make_example("q", "q", "What color is it?", ["red"] * 10, rgb=rgb)
        inputs = generator.encode([template.render([], query, most_common_answer)])
        with torch.no_grad():
            logits.append(demo_loaded.model(**inputs).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1])


def test_banned_tokens_cover_newlines_and_image_tokens(demo_loaded):
    tokenizer = demo_loaded.processor.tokenizer
    banned = {ids[0] for ids in banned_token_ids(tokenizer)}
    assert {tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<fake_token_around_image>")} <= banned
    assert set(tokenizer("\n", add_special_tokens=False)["input_ids"]) <= banned
    assert all("\n" not in tokenizer.decode([i]) for i in range(len(tokenizer)) if i not in banned)


def test_generated_text_never_holds_banned_tokens(demo_loaded):
    generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=15, num_beams=1, stop_words=()))
    for answer in generator.generate(_prompts(4, shots=2)):
        assert "\n" not in answer and "<image>" not in answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("red Question: what", "red"),
        (" two apples\nImage:", "two apples"),
        ("yes Answer: no", "yes"),
        ("blue", "blue"),
        ("Caption", ""),
    ],
)
def test_cut_at_first_stop_word(text, expected):
    assert cut_at_stop_words(text, GenerationSettings().stop_words) == expected


def test_batches_put_most_images_then_longest_first():
    batches = batches_by_length([(1, 10), (3, 5), (3, 50), (0, 100), (1, 20)], batch_size=2)
    assert batches == [[2, 1], [4, 0], [3]]


@pytest.mark.parametrize(
    "raw, settings, expected",
    [
        (" yes\nQuestion: Is it red? Answer: no", GenerationSettings(), "yes"),
        ("Answer: yes\nQuestion: what", GenerationSettings(), ""),  # the authors' rule: cut at the first stop word
        (' "two dogs"', GenerationSettings(strip_quotes=True), "two dogs"),
        (' "two dogs"', GenerationSettings(), '"two dogs"'),
        (" a red circle on a white background.\nImage:", GenerationSettings(), "a red circle on a white background."),
        ("unanswerable User: hi", GenerationSettings(), "unanswerable"),
        (" 2 <end_of_utterance>", GenerationSettings(), "2"),
        ("first line\nsecond line", GenerationSettings(stop_words=()), "first line"),
        ("first line\nsecond line", GenerationSettings(stop_words=(), first_line=False), "first line\nsecond line"),
    ],
)
def test_postprocessing_of_realistic_outputs(raw, settings, expected):
    from idefics_eval.engine import postprocess

    assert postprocess(raw, settings) == expected
