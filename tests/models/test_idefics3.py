"""Idefics3 and SmolVLM: the tiny checkpoint makers, and the model inputs built from the harness's
interleaved prompts equal the families' own processors on the same images and hand-written text."""

from __future__ import annotations

import pytest
import torch
from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

from idefics_eval.demo.idefics3 import build_config, build_processor, save_demo_model
from idefics_eval.models.idefics3 import Idefics3Adapter, load_processor, processor_inputs
from idefics_eval.prompts import Prompt

from family_prompts import SizedImage, assert_same, shot_prompts


@pytest.mark.parametrize("do_image_splitting", [True, False])
@pytest.mark.parametrize("add_start_token", [True, False])
def test_idefics3_inputs_equal_the_processor_on_hand_written_text(do_image_splitting, add_start_token):
    processor = build_processor("idefics3", do_image_splitting)
    prompts, texts, images = shot_prompts()
    start = {} if add_start_token else {"add_special_tokens": False}  # the tokenizer adds <s> by default
    expected = processor(text=texts, images=images, padding="longest", return_tensors="pt", **start)
    ours = processor_inputs(processor, prompts, add_start_token)
    assert_same(ours, expected)
    assert ours["attention_mask"][0, 0] == 0 and ours["attention_mask"][-1, 0] == 1  # padded on the left
    grid = processor.tokenizer.convert_tokens_to_ids("<row_1_col_1>")
    assert bool((ours["input_ids"] == grid).any()) == do_image_splitting  # the 64-pixel images are split
    for prompt, text, prompt_images in zip(prompts, texts, images):
        alone = processor(text=[text], images=[prompt_images], return_tensors="pt", **start)
        assert_same(processor_inputs(processor, [prompt], add_start_token), alone)


@pytest.mark.parametrize("do_image_splitting", [True, False])
def test_smolvlm_inputs_equal_smolvlm_s_own_placeholders_and_pixels(do_image_splitting):
    """SmolVLMProcessor needs torchvision to be built; its parts do not: SmolVLM's image processor
    and the function that writes each image's placeholder string."""
    processor = build_processor("smolvlm", do_image_splitting)
    prompts, texts, images = shot_prompts()
    pixels = processor.image_processor(images, return_row_col_info=True, return_tensors="pt")
    expanded = []
    for index, text in enumerate(texts):
        parts = text.split("<image>")
        for image, part in enumerate(parts[1:]):
            placeholder = get_image_prompt_string(
                pixels["rows"][index][image], pixels["cols"][index][image], processor.image_seq_len,
                "<fake_token_around_image>", "<image>", "<global-img>")
            parts[0] += placeholder + part
        expanded.append(parts[0])
    expected = processor.tokenizer(expanded, padding="longest", return_tensors="pt")
    ours = processor_inputs(processor, prompts, True)
    assert set(ours) == {"input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"}
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(ours[key], expected[key]), key
    for key in ("pixel_values", "pixel_attention_mask"):
        assert torch.equal(ours[key], pixels[key]), key


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_demo_checkpoint_loads_back_offline(family, tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    save_demo_model(tmp_path, family, seed=3)
    assert AutoConfig.from_pretrained(tmp_path).model_type == family
    processor = load_processor(str(tmp_path))
    model = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(model).__name__ == {"idefics3": "Idefics3ForConditionalGeneration",
                                    "smolvlm": "SmolVLMForConditionalGeneration"}[family]
    prompts, _, _ = shot_prompts()
    inputs = processor_inputs(processor, prompts, True)
    assert_same(inputs, processor_inputs(build_processor(family), prompts, True))
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(processor.tokenizer)) and torch.isfinite(logits).all()


@pytest.mark.parametrize("do_image_splitting", [True, False])
def test_prompt_text_expands_each_image_as_the_processor_splits_it(do_image_splitting):
    """The adapter's text (token counts, truncation and ranking read it) computes each image's grid
    from its size alone; the processor resizes and splits the pixels: the same ids, whatever the shape."""
    processor = build_processor("idefics3", do_image_splitting)
    adapter = Idefics3Adapter(processor, build_config("idefics3", processor.tokenizer))
    sizes = [(1, 1), (5, 200), (200, 5), (31, 33), (32, 32), (33, 32), (65, 64), (100, 30), (300, 700), (1000, 10)]
    for size in sizes:
        prompt = Prompt(items=("Image:", SizedImage((9, 90, 200), size), "Caption:"), shot_ids=())
        assert adapter.token_ids(prompt) == adapter.build_inputs([prompt], True)["input_ids"][0].tolist(), size
