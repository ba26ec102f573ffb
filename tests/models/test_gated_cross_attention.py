"""The gated cross-attention's image keys and values, projected once per batch
(`models.gated_cross_attention.image_key_values`), give the plain forward pass's logits, are
computed once however many decoding steps run, and leave the model as it was."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.engine import GenerationSettings, Generator
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models.gated_cross_attention import image_key_values

from test_engine_fast import _prompts


@pytest.fixture(scope="module")
def prompts():
    return _prompts(8)


def projections(model):
    return [module for layer in model.model.gated_cross_attn_layers for module in (layer.cross_attn.k_proj, layer.cross_attn.v_proj)]


def test_logits_equal_the_plain_forward_pass(demo_loaded, prompts):
    generator = Generator(demo_loaded, GenerationSettings(), ImageFeatureCache())
    inputs, features = generator.text_inputs(prompts), generator.image_features(prompts)
    args = (inputs, features)
    with torch.no_grad():
        plain = generator.forward(*args, positions=0).logits
        with image_key_values(demo_loaded.model, features, inputs["image_attention_mask"].shape[-1]):
            ours = generator.forward(*args, positions=0).logits
    assert torch.equal(plain, ours)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_projected_once_per_batch_and_restored(demo_loaded, prompts, num_beams):
    model = demo_loaded.model
    originals = projections(model)
    calls = []
    hooks = [module.register_forward_hook(lambda *_: calls.append(1)) for module in originals]
    steps = []
    generator = Generator(demo_loaded, GenerationSettings(max_new_tokens=6, num_beams=num_beams), ImageFeatureCache())
    forward = generator.forward
    generator.forward = lambda *args, **kwargs: steps.append(1) or forward(*args, **kwargs)
    try:
        generator.generate_ids_fast(prompts)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(steps) > 2  # the prompt and several decoding steps ran
    assert len(calls) == len(originals)  # each projection once, for the whole batch
    assert all(now is before for now, before in zip(projections(model), originals))


def test_restored_when_decoding_fails(demo_loaded, prompts):
    model = demo_loaded.model
    originals = projections(model)
    generator = Generator(demo_loaded, GenerationSettings(), ImageFeatureCache())
    features = generator.image_features(prompts[:2])
    with pytest.raises(RuntimeError, match="computed for"):
        with image_key_values(model, features, max(1, max(len(p.images) for p in prompts[:2]))):
            inputs = generator.text_inputs(prompts[:1])  # another batch than the one projected
            generator.forward(inputs, generator.image_features(prompts[:1]))
    assert all(now is before for now, before in zip(projections(model), originals))
