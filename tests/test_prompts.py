"""Prompt rendering: the golden 2-shot VQA prompt, template validation, the shot answer."""

from __future__ import annotations

import pytest

from idefics_eval.errors import UserError
from idefics_eval.prompts import load_template, most_common_answer, parse_template

from conftest import make_example

PREFIX = "Instruction: provide an answer to the question. Use the image to answer.\n"


@pytest.fixture
def two_shot():
    shots = [
        make_example("1", "10", "What color is the circle?", ["red"] * 6 + ["Red"] * 4, rgb=(255, 0, 0)),
        make_example("2", "20", "How many shapes are there?", ["two"] * 3 + ["2"] * 7, rgb=(0, 255, 0)),
    ]
    query = make_example("3", "30", "Is there a blue square?", ["yes"] * 10, rgb=(0, 0, 255))
    prompt = load_template("vqa").render(shots, query, most_common_answer)
    return shots, query, prompt


def test_two_shot_items_are_one_text_item_per_shot(two_shot):
    shots, query, prompt = two_shot
    assert prompt.items == (
        PREFIX + "Image:",
        shots[0].image,
        "Question: What color is the circle? Answer: red\nImage:",
        shots[1].image,
        "Question: How many shapes are there? Answer: 2\nImage:",
        query.image,
        "Question: Is there a blue square? Answer:",
    )
    assert prompt.shot_ids == ("1", "2")


def test_golden_two_shot_tokens(two_shot, demo_loaded):
    """Pins the exact token sequence, and that the processor produces exactly it."""
    _, _, prompt = two_shot
    processor = demo_loaded.processor
    tokenizer = processor.tokenizer
    images = [item if isinstance(item, str) else item.load() for item in prompt.items]
    ids = processor(text=[images], return_tensors="pt")["input_ids"][0].tolist()
    fake, image = "<fake_token_around_image>", "<image>"
    assert prompt.processor_text(tokenizer.bos_token) == (
        f"<s>{PREFIX}Image:{fake}{image}{fake}Question: What color is the circle? Answer: red\nImage:"
        f"{fake}{image}{fake}Question: How many shapes are there? Answer: 2\nImage:"
        f"{fake}{image}{fake}Question: Is there a blue square? Answer:"
    )
    assert ids == tokenizer(prompt.processor_text(tokenizer.bos_token), add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<s>" and ids[0] == tokenizer.bos_token_id
    image_positions = [i for i, token in enumerate(tokens) if token == image]
    assert [tokens[i - 1 : i + 2] for i in image_positions] == [[fake, image, fake]] * 3
    # Text between the images decodes back to exactly the rendered shot text.
    assert tokenizer.decode(ids[image_positions[0] + 2 : image_positions[1] - 1]) == (
        "Question: What color is the circle? Answer: red\nImage:"
    )
    assert tokenizer.decode(ids[image_positions[2] + 2 :]) == "Question: Is there a blue square? Answer:"
    assert image_positions == [27, 44, 61]
    assert ids == GOLDEN_IDS


# The demo tokenizer's ids for the prompt above (<s>=1, <fake_token_around_image>=512, <image>=513).
GOLDEN_IDS = [1, 433, 456, 451, 440, 28, 289, 454, 325, 71, 387, 335, 338, 270, 350, 16, 383, 327, 270, 347, 338, 335, 16, 201, 292, 28, 512, 513, 512, 317, 28, 405, 417, 402, 270, 346, 33, 301, 28, 390, 201, 292, 28, 512, 513, 512, 317, 28, 391, 413, 416, 388, 341, 33, 301, 28, 379, 201, 292, 28, 512, 513, 512, 317, 28, 412, 341, 314, 397, 343, 33, 301, 28]


def test_image_attention_follows_the_latest_image(two_shot, demo_loaded):
    """Each text token attends only to the most recent image before it; the prefix to none."""
    _, _, prompt = two_shot
    images = [item if isinstance(item, str) else item.load() for item in prompt.items]
    inputs = demo_loaded.processor(text=[images], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    mask = inputs["image_attention_mask"][0]
    image_id = demo_loaded.processor.tokenizer.convert_tokens_to_ids("<image>")
    current = -1
    for position, token in enumerate(ids):
        current += token == image_id
        expected = [int(current == column) for column in range(3)]
        assert mask[position].tolist() == expected, position


def test_most_common_answer_breaks_ties_by_answer_order():
    example = make_example("1", "1", "q", ["two", "2", "2", "two", "3"])
    assert most_common_answer(example) == "two"


def test_missing_field_names_the_template_and_field():
    template = load_template("vqa")
    query = make_example("7", "1", "q", ["a"])
    bad = type(query)(id="7", image_id="1", image=query.image, fields={}, answers=("a",))
    with pytest.raises(UserError, match=r"vqa\.yaml.*\{question\}.*example 7"):
        template.render([], bad, most_common_answer)


@pytest.mark.parametrize(
    "body, message",
    [
        ("name: x\nversion: 1\nexample: 'no image {answer}'\n", "exactly once"),
        ("name: x\nversion: 1\nexample: '<image>{question}'\n", "answer"),
        ("name: x\nversion: 1\nexample: '<image>{answer}'\ncolour: red\n", "unknown key 'colour'"),
        ("name: x\nexample: '<image>{answer}'\n", "missing required key 'version'"),
        ("name: [x\n", "not valid YAML"),
    ],
)
def test_bad_templates_are_rejected_with_the_file(tmp_path, body, message):
    path = tmp_path / "x.yaml"
    path.write_text(body)
    with pytest.raises(UserError, match=message) as error:
        parse_template(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("name", ["vqa", "imagenet"])
def test_candidates_rendered_together_equal_one_render_each(name):
    """render_candidates renders the shots once; each prompt equals render(..., candidate=c)."""
    template = load_template(name)
    fields = {"question": "What is it?", "class_name": "x"}
    shots = [make_example(f"s{i}", f"s{i}", "What is it?", [f"thing {i}"] * 10, rgb=(i, 0, 0)) for i in range(3)]
    for shot in shots:
        shot.fields.update(fields | {"class_name": shot.answers[0]})
    query = make_example("q", "q", "What is it?", ["x"] * 10)
    query.fields.update(fields)
    candidates = ["tench", "great white shark", "no", ""]
    for shown in (shots, []):
        together = template.render_candidates(shown, query, most_common_answer, candidates)
        assert together == [template.render(shown, query, most_common_answer, candidate=c) for c in candidates]
        assert len({prompt.items for prompt in together}) == len(candidates)
