"""LLaVA-OneVision (`llava_onevision`): the tiny checkpoint maker, and prompts turned into the
inputs that LlavaOnevisionProcessor itself returns for the same text and images."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlavaOnevisionProcessor

from idefics_eval.demo import llava_onevision as maker
from idefics_eval.models.llava_onevision import load_processor, processor_inputs
from idefics_eval.prompts import load_template, most_common_answer

from family_prompts import assert_same, example, shot_prompts

KEYS = {"input_ids", "attention_mask", "pixel_values", "image_sizes", "batch_num_images"}


@pytest.fixture(scope="module")
def processor():
    return maker.build_processor()


@pytest.fixture(scope="module")
def shots():
    """The 0-, 1- and 4-shot prompts, the same as text written by hand (with the start token), and their images."""
    prompts, texts, images = shot_prompts()
    return prompts, ["<s>" + text for text in texts], images


def _inputs(processor, prompts):
    return processor_inputs(processor, prompts, lambda ref: ref.load(), processor.tokenizer.bos_token)


def _call(processor, images, text, **options):
    """LlavaOnevisionProcessor's own __call__ (the class transformers ships), on `processor`'s parts."""
    return LlavaOnevisionProcessor.__call__(processor, images=images, text=text, return_tensors="pt", **options)


def _image_tokens(processor, prompt) -> int:
    return int((_inputs(processor, [prompt])["input_ids"] == processor.image_token_id).sum())


@pytest.mark.parametrize("index", [0, 1, 2])
def test_inputs_equal_the_processor_on_the_prompt_written_by_hand(processor, shots, index):
    prompts, texts, images = shots
    ours = _inputs(processor, [prompts[index]])
    assert set(ours) == KEYS
    assert_same(ours, _call(processor, [images[index]], [texts[index]]))
    assert ours["input_ids"][0, 0] == processor.tokenizer.bos_token_id
    assert ours["batch_num_images"].tolist() == [len(images[index])]


def test_one_image_gets_anyres_features_and_several_get_the_whole_image_only(processor, shots):
    """Alone, a 64x64 image fits the 32x32 pinpoint (2x2 crops: 4x4 features and 4 newlines), a
    64x16 one the 16x32 pinpoint (1x2 crops: 2x4 features, 2 newlines), and a 33x47 one the 32x32
    pinpoint with the padded columns cut (4x2 features, 4 newlines), each after its whole image's
    2x2 features; in a prompt with shots every image gets its 2x2 features and one newline."""
    alone = {example(i).image.size: load_template("vqa").render([], example(i), most_common_answer) for i in (0, 3, 4)}
    assert _image_tokens(processor, alone[(64, 64)]) == 4 + 16 + 4
    assert _image_tokens(processor, alone[(64, 16)]) == 4 + 8 + 2
    assert _image_tokens(processor, alone[(33, 47)]) == 4 + 8 + 4
    assert _image_tokens(processor, shots[0][2]) == 5 * (4 + 1)


def test_batch_equals_the_processor_and_each_prompt_alone_left_padded(processor, shots):
    prompts, texts, images = shots
    batch = _inputs(processor, prompts)
    assert_same(batch, _call(processor, images, texts, padding="longest", padding_side="left"))
    first_image = 0
    for row, prompt in enumerate(prompts):
        alone, count = _inputs(processor, [prompt]), len(prompt.images)
        length = alone["input_ids"].shape[1]
        pad = batch["input_ids"].shape[1] - length
        assert torch.equal(batch["input_ids"][row, pad:], alone["input_ids"][0])
        assert batch["attention_mask"][row].tolist() == [0] * pad + [1] * length
        crops, rows = alone["pixel_values"].shape[1], slice(first_image, first_image + count)
        assert torch.equal(batch["pixel_values"][rows, :crops], alone["pixel_values"])
        assert not batch["pixel_values"][rows, crops:].any()
        assert torch.equal(batch["image_sizes"][rows], alone["image_sizes"])
        first_image += count


def test_checkpoint_folder_loads_back_the_same_model_and_processor(tmp_path, processor, shots):
    from transformers import LlavaOnevisionForConditionalGeneration

    maker.save_demo_model(tmp_path, seed=3)
    loaded = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.model_type == "llava_onevision"
    reference = maker.build_model(seed=3).state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in loaded.state_dict().items())
    assert not torch.equal(reference["lm_head.weight"], maker.build_model(seed=4).state_dict()["lm_head.weight"])
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "LlavaOnevisionProcessor" and config["num_image_tokens"] == 4
    reloaded = load_processor(tmp_path)
    for batch in (shots[0], shots[0][:1]):
        assert_same(_inputs(reloaded, batch), _inputs(processor, batch))


def test_the_tiny_model_takes_the_inputs_and_images_change_its_scores(processor, shots):
    model = maker.build_model()
    inputs = _inputs(processor, shots[0])
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1]
        other = dict(inputs, pixel_values=inputs["pixel_values"].neg())
        assert not torch.allclose(model(**other).logits[:, -1], logits, atol=1e-4)
