"""Idefics2: the tiny checkpoint maker, and the model inputs built from the harness's interleaved
prompts equal Idefics2Processor's on the same images and hand-written text."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.demo.idefics2 import build_processor, save_demo_model
from idefics_eval.models.idefics2 import processor_inputs
from idefics_eval.prompts import Prompt

from family_prompts import assert_same, shot_prompts


@pytest.mark.parametrize("do_image_splitting", [False, True])
@pytest.mark.parametrize("add_start_token", [True, False])
def test_inputs_equal_the_processor_on_hand_written_text(do_image_splitting, add_start_token):
    processor = build_processor(do_image_splitting)
    prompts, texts, images = shot_prompts()
    if not add_start_token:  # the tokenizer adds <s> by default, as Mistral's does
        expected = processor(text=texts, images=images, padding="longest", add_special_tokens=False, return_tensors="pt")
    else:
        expected = processor(text=texts, images=images, padding="longest", return_tensors="pt")
    ours = processor_inputs(processor, prompts, add_start_token)
    assert_same(ours, expected)
    assert ours["pixel_values"].shape[:2] == (3, 25 if do_image_splitting else 5)  # the 4-shot prompt's 5 images (x 5 crops)
    assert ours["attention_mask"][0, 0] == 0 and ours["attention_mask"][-1, 0] == 1  # padded on the left
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    per_image = processor.image_seq_len * (5 if do_image_splitting else 1)
    assert [(row == image_id).sum().item() for row in ours["input_ids"]] == [per_image * n for n in (1, 2, 5)]
    for prompt, text, prompt_images in zip(prompts, texts, images):
        alone = processor(text=[text], images=[prompt_images], return_tensors="pt",
                          **({} if add_start_token else {"add_special_tokens": False}))
        assert_same(processor_inputs(processor, [prompt], add_start_token), alone)


def test_text_only_prompts_have_no_pixels():
    processor = build_processor()
    text_only = Prompt(items=("Question: what colour? Answer:",), shot_ids=())
    ours = processor_inputs(processor, [text_only], True)
    assert set(ours) == {"input_ids", "attention_mask"}
    assert ours["input_ids"].tolist() == [processor.tokenizer("Question: what colour? Answer:")["input_ids"]]


def test_demo_checkpoint_loads_back_offline(tmp_path):
    from transformers import AutoConfig, AutoProcessor, Idefics2ForConditionalGeneration, Idefics2Processor

    save_demo_model(tmp_path, seed=3)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, Idefics2Processor) and AutoConfig.from_pretrained(tmp_path).model_type == "idefics2"
    model = Idefics2ForConditionalGeneration.from_pretrained(tmp_path)
    prompts, _, _ = shot_prompts()
    inputs = processor_inputs(processor, prompts, True)
    assert_same(inputs, processor_inputs(build_processor(), prompts, True))
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(processor.tokenizer)) and torch.isfinite(logits).all()
