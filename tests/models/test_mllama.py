"""Llama 3.2 Vision (`mllama`): the tiny checkpoint maker, and prompts turned into the inputs that
MllamaProcessor itself returns for the same text and images."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.demo import mllama as maker
from idefics_eval.models.mllama import IMAGE_TOKEN, processor_inputs

from family_prompts import assert_same, shot_prompts

KEYS = {"input_ids", "attention_mask", "pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"}


@pytest.fixture(scope="module")
def processor():
    return maker.build_processor()


@pytest.fixture(scope="module")
def shots():
    """The 0-, 1- and 4-shot prompts, and the same as text written with `<|image|>`, and their images."""
    prompts, texts, images = shot_prompts()
    return prompts, [text.replace("<image>", IMAGE_TOKEN) for text in texts], images


def _inputs(processor, prompts):
    return processor_inputs(processor, prompts, lambda ref: ref.load())


@pytest.mark.parametrize("index", [0, 1, 2])
def test_inputs_equal_the_processor_on_the_prompt_written_by_hand(processor, shots, index):
    prompts, texts, images = shots
    ours = _inputs(processor, [prompts[index]])
    assert set(ours) == KEYS
    assert_same(ours, processor(images=[images[index]], text=[texts[index]], return_tensors="pt"))
    assert ours["input_ids"][0].tolist().count(processor.image_token_id) == len(images[index])
    assert ours["input_ids"][0, 0] == processor.tokenizer.bos_token_id


def test_batch_equals_the_processor_and_each_prompt_alone_left_padded(processor, shots):
    prompts, texts, images = shots
    batch = _inputs(processor, prompts)
    assert_same(batch, processor(images=images, text=texts, padding="longest", padding_side="left", return_tensors="pt"))
    assert batch["cross_attention_mask"].shape[2] == 5
    for row, prompt in enumerate(prompts):
        alone, count = _inputs(processor, [prompt]), len(prompt.images)
        length = alone["input_ids"].shape[1]
        pad = batch["input_ids"].shape[1] - length
        assert torch.equal(batch["input_ids"][row, pad:], alone["input_ids"][0])
        assert batch["attention_mask"][row].tolist() == [0] * pad + [1] * length
        assert torch.equal(batch["cross_attention_mask"][row, pad:, :count], alone["cross_attention_mask"][0])
        assert not batch["cross_attention_mask"][row, :pad].any() and not batch["cross_attention_mask"][row, :, count:].any()
        assert torch.equal(batch["pixel_values"][row, :count], alone["pixel_values"][0])
        assert torch.equal(batch["aspect_ratio_ids"][row, :count], alone["aspect_ratio_ids"][0])


def test_tiles_follow_the_aspect_ratio(processor, shots):
    """64x64 is one tile, 40x30 and 64x16 two side by side, 20x50 two stacked (tiny tiles split the
    images as large ones are split at the real size)."""
    inputs = _inputs(processor, [shots[0][2]])
    assert inputs["aspect_ratio_mask"][0].sum(dim=1).tolist() == [1, 2, 2, 2, 2]
    assert inputs["aspect_ratio_ids"][0].tolist() == [1, 2, 3, 2, 2]


def test_tokens_before_the_first_image_see_none_and_later_ones_see_their_image(processor, shots):
    inputs = _inputs(processor, [shots[0][1]])
    mask, tokens = inputs["cross_attention_mask"][0], inputs["input_ids"][0].tolist()
    first, second = [i for i, token in enumerate(tokens) if token == processor.image_token_id]
    assert first > 1 and not mask[:first].any()
    assert mask[first:second, 0].any(dim=1).all() and not mask[first:second, 1].any()
    assert mask[second:, 1].any(dim=1).all() and not mask[second:, 0].any()


def test_checkpoint_folder_loads_back_the_same_model_and_processor(tmp_path, processor, shots):
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    maker.save_demo_model(tmp_path, seed=3)
    loaded = MllamaForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.model_type == "mllama"
    reference = maker.build_model(seed=3).state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in loaded.state_dict().items())
    assert not torch.equal(reference["lm_head.weight"], maker.build_model(seed=4).state_dict()["lm_head.weight"])
    assert_same(_inputs(AutoProcessor.from_pretrained(tmp_path), shots[0]), _inputs(processor, shots[0]))


def test_images_change_the_tiny_models_next_token_scores(processor, shots):
    """The opened gates: with the real model's zero gates the images would have no effect at all."""
    model = maker.build_model()
    inputs = _inputs(processor, [shots[0][1]])
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
        other = dict(inputs, pixel_values=inputs["pixel_values"].neg())
        assert not torch.allclose(model(**other).logits[0, -1], logits, atol=1e-4)
