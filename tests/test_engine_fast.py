"""The fast generation path (cached image features, our own greedy / beam-search loop over the
forward pass with the key/value cache) gives the same token ids as `model.generate` on pixels."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.engine import GenerationSettings, Generator, fast_path_supported
from idefics_eval.models.idefics import image_attention_mask
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.prompts import Prompt, load_template, most_common_answer

from conftest import make_example

COLOURS = [(230, 20, 20), (20, 200, 40), (30, 30, 220), (240, 240, 20), (150, 20, 160), (250, 140, 0),
           (10, 10, 10), (200, 200, 200), (90, 30, 160)]


def _prompts(count: int) -> list[Prompt]:
    """Prompts with 0 to 8 images (the 0-image ones are text only), mixed lengths."""
    template = load_template("vqa")
    support = [make_example(f"s{i}", f"s{i}", f"What color is shape {i}?", [f"colour{i}"] * 10, rgb=COLOURS[i])
               for i in range(8)]
    prompts = []
    for q in range(count):
        if q % 5 == 4:
            prompts.append(Prompt(items=("Question: what colour" + " is it" * (q % 3) + "? Answer:",), shot_ids=()))
            continue
        query = make_example(f"q{q}", f"q{q}", "What color is the circle?" + " really" * (q % 4), ["red"] * 10,
                             rgb=(q * 15 % 256, 255 - q * 10, 100))
        prompts.append(template.render(support[: (q * 3) % 8], query, most_common_answer))
    return prompts


@pytest.fixture(scope="module")
def prompts():
    made = _prompts(16)
    assert {len(p.images) for p in made} >= {0, 1, 8} and len({len(p.images) for p in made}) > 5
    return made


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_fast_generation_equals_generate_on_pixels(demo_loaded, prompts, num_beams, batch_size):
    generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=10, num_beams=num_beams), ImageFeatureCache())
    lengths = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        plain = generator.generate_ids_plain(batch)
        fast = generator.generate_ids_fast(batch)
        assert torch.equal(fast, plain), (start, plain.tolist(), fast.tolist())
        lengths.append(plain.shape[1])
    assert max(lengths) > 1  # something was generated past the first token


def test_text_only_batch(demo_loaded, prompts):
    batch = [p for p in prompts if not p.images]
    for num_beams in (1, 3):
        generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=6, num_beams=num_beams))
        assert torch.equal(generator.generate_ids_fast(batch), generator.generate_ids_plain(batch))


def test_fast_path_is_the_default_and_answers_match(demo_loaded, prompts):
    generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=8, num_beams=3))
    assert generator.fast
    assert generator.generate(prompts[:8]) == generator.generate_plain(prompts[:8])


def test_text_inputs_equal_the_processor(demo_loaded, prompts):
    generator = Generator(demo_loaded, GenerationSettings())
    for batch in (prompts[:8], prompts[8:], [prompts[4]], [prompts[3]]):
        reference, ours = generator.encode(batch), generator.text_inputs(batch)
        for key, value in ours.items():
            assert torch.equal(reference[key].to(value.dtype), value), key


def test_image_mask_after_an_end_of_document_token(demo_loaded):
    """The processor's rule: after </s> no image is seen until the next <image>."""
    from transformers.models.idefics.processing_idefics import (
        image_attention_mask_for_packed_input_ids, incremental_to_binary_attention_mask)

    tokenizer = demo_loaded.processor.tokenizer
    image, eos = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.eos_token_id
    ids = torch.tensor([[1, 5, image, 6, eos, 7, image, 8, eos, eos, 9, image, 3], [0, 0, 1, image, image, 4, eos, 5, 6, 7, 8, 9, image]])
    for classes in (1, 2, 3, 4):
        incremental, _ = image_attention_mask_for_packed_input_ids(ids.clone(), tokenizer, "pt")
        expected = incremental_to_binary_attention_mask(incremental, "pt", num_classes=classes)
        assert torch.equal(image_attention_mask(ids, tokenizer, classes), expected)


def test_model_without_resampler(prompts):
    """image_encoder_embeddings instead of perceiver_embeddings when the checkpoint has no resampler."""
    from transformers import IdeficsForVisionText2Text

    from idefics_eval.demo.model import build_config, build_processor
    from idefics_eval.models import LoadedModel

    config = build_config()
    config.use_resampler = False
    config.perceiver_config.use_resampler = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = IdeficsForVisionText2Text(config).eval()
    loaded = LoadedModel(model, build_processor(), "no-resampler", "no-resampler", torch.device("cpu"), torch.float32)
    for num_beams in (1, 3):
        generator = Generator(loaded, GenerationSettings(max_new_tokens=6, num_beams=num_beams), ImageFeatureCache())
        batch = prompts[:5]
        assert torch.equal(generator.generate_ids_fast(batch), generator.generate_ids_plain(batch))


def test_unsupported_generation_config_falls_back(demo_loaded):
    config = demo_loaded.model.generation_config
    assert fast_path_supported(config)
    changed = config.__class__(**config.to_dict())
    changed.repetition_penalty = 1.3
    assert not fast_path_supported(changed)


def test_beams_share_their_prompts_cache_and_never_reorder_it(demo_loaded, prompts, monkeypatch):
    """The prompt's key/value cache is held once per prompt (one cache row each, however many
    beams) and never gathered into a new beam order; the token ids are still generate's."""
    from transformers.cache_utils import Cache

    generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=10, num_beams=3), ImageFeatureCache())
    forward, rows = generator.forward, []

    def recording(inputs, features, cache=None, **kwargs):
        out = forward(inputs, features, cache=cache, **kwargs)
        rows.append((inputs["input_ids"].shape, out.cache.layers[0].keys.shape[0]))
        return out

    batch = prompts[:8]
    plain = generator.generate_ids_plain(batch)
    monkeypatch.setattr(Cache, "reorder_cache", lambda *_: pytest.fail("the cache was reordered"))
    generator.forward = recording
    assert torch.equal(generator.generate_ids_fast(batch), plain)
    assert len(rows) > 2 and all(cache_rows == len(batch) for _, cache_rows in rows)
    assert all(shape == (len(batch), 3) for shape, _ in rows[1:])  # each step: the three beams' tokens side by side


def test_eager_attention_equals_generate(prompts):
    """The beams' attention mask is given as the eager implementation takes it (added to the scores)."""
    from idefics_eval.demo.model import build_model, build_processor
    from idefics_eval.models import LoadedModel

    model = build_model(0)
    model.set_attn_implementation("eager")
    loaded = LoadedModel(model, build_processor(), "eager", "eager", torch.device("cpu"), torch.float32)
    generator = Generator(loaded, GenerationSettings(max_new_tokens=8, num_beams=3), ImageFeatureCache())
    batch = prompts[:8]
    assert torch.equal(generator.generate_ids_fast(batch), generator.generate_ids_plain(batch))
