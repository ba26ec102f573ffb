"""The model adapter interface (models/base.py): the registry, and what a family without fast paths gets."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from idefics_eval.engine import GenerationSettings, Generator
from idefics_eval.errors import UserError
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import ADAPTERS, SUPPORTED_FAMILIES, adapter_class, load_prompt_side
from idefics_eval.models.base import ModelAdapter
from idefics_eval.models.idefics import IdeficsAdapter
from idefics_eval.prompts import load_template, most_common_answer
from idefics_eval.ranking import Ranker

from conftest import make_example


def _left_to_families() -> list[str]:
    """The base class's methods and properties that only raise NotImplementedError."""
    names = []
    for name, member in vars(ModelAdapter).items():
        function = member.__func__ if isinstance(member, classmethod) else member.fget if isinstance(member, property) else member
        if inspect.isfunction(function) and inspect.getsource(function).rstrip().endswith("raise NotImplementedError"):
            names.append(name)
    return names


def test_every_registered_family_implements_the_whole_interface():
    assert SUPPORTED_FAMILIES == tuple(ADAPTERS) and "idefics" in ADAPTERS
    required = _left_to_families()
    assert {"check_processor", "build_inputs", "text_inputs", "forward", "vision_embeddings", "prompt_text"} <= set(required)
    for family in ADAPTERS:
        adapter = adapter_class(family, "checkpoint")
        assert issubclass(adapter, ModelAdapter) and adapter.family == family
        assert isinstance(adapter.model_class, type) and adapter.model_class.__module__.startswith("transformers.")
        missing = [name for name in required if _owner(adapter, name) is ModelAdapter]
        assert missing == [], f"{family} leaves {missing} to the base class"


def _owner(cls: type, name: str) -> type:
    """The class of `cls`'s method resolution order that defines `name`."""
    return next(klass for klass in cls.__mro__ if name in vars(klass))


def test_an_unsupported_type_is_one_line_listing_the_supported_ones():
    with pytest.raises(UserError) as error:
        adapter_class("gpt2", "some/model")
    assert str(error.value) == f"some/model: config.model_type 'gpt2' is not a supported family; supported: {', '.join(ADAPTERS)}"


def test_an_in_memory_model_of_another_family_is_refused_by_the_api(demo_loaded):
    """`idefics_eval.evaluate` takes a model object: its config's model_type picks the adapter too."""
    from types import SimpleNamespace

    from idefics_eval.models import check_processor

    check_processor(demo_loaded.model, demo_loaded.processor, "mine")  # an IDEFICS model and processor pass
    other = SimpleNamespace(config=SimpleNamespace(model_type="qwen2_vl"))
    with pytest.raises(UserError, match="^mine: config.model_type 'qwen2_vl' is not a supported family; supported: idefics"):
        check_processor(other, demo_loaded.processor, "mine")
    with pytest.raises(UserError, match="not an IdeficsProcessor"):
        check_processor(demo_loaded.model, demo_loaded.processor.tokenizer, "mine")


def test_the_demo_loads_behind_the_idefics_adapter(demo_loaded):
    assert type(demo_loaded.adapter) is IdeficsAdapter
    assert demo_loaded.max_length == demo_loaded.model.config.max_position_embeddings
    side = load_prompt_side("demo", demo_seed=0)  # the dry run's adapter: no weights
    assert type(side.adapter) is IdeficsAdapter and side.adapter.model is None
    prompt = load_template("vqa").render([], make_example("q", "q", "What color?", ["red"]), most_common_answer)
    assert side.adapter.token_ids(prompt) == demo_loaded.adapter.token_ids(prompt)
    assert side.max_length == demo_loaded.max_length


class WithoutFastPaths(IdeficsAdapter):
    """IDEFICS as a family that declares no fast path: every request must take the plain one."""

    cached_features = fast_generation = prefix_ranking = False

    def forward(self, *args, **kwargs):
        raise AssertionError("a family without fast paths ran the fast path's forward")


def _without_fast_paths(loaded):
    plain = dataclasses.replace(loaded)  # a LoadedModel of its own, its adapter not yet made
    plain.adapter = WithoutFastPaths(loaded.processor, loaded.model.config, loaded.model, loaded.device, loaded.dtype)
    return plain


def _prompts():
    template = load_template("vqa")
    shots = [make_example(f"s{i}", f"s{i}", "What color is it?", ["red"], rgb=(40 * i, 90, 200 - 30 * i)) for i in range(3)]
    query = make_example("q", "q", "What color is the square?", ["green"], rgb=(0, 200, 0))
    return template, shots, query


def test_a_family_without_fast_paths_takes_the_plain_paths_and_says_so(demo_loaded, capsys):
    template, shots, query = _prompts()
    loaded = _without_fast_paths(demo_loaded)
    prompts = [template.render(shots[:k], query, most_common_answer) for k in (0, 1, 3)]
    settings = GenerationSettings(max_new_tokens=5, num_beams=2)
    generator = Generator(loaded, settings, ImageFeatureCache())
    assert not generator.fast
    reference = Generator(demo_loaded, settings, ImageFeatureCache())
    assert reference.fast
    assert generator.generate(prompts) == reference.generate_plain(prompts)

    context = template.render(shots, query, most_common_answer)
    continuations = [template.render(shots, query, most_common_answer, candidate=c) for c in ("red", "green", "dark blue")]
    ranker = Ranker(loaded, 2, ImageFeatureCache())
    with torch.no_grad():
        assert ranker.loglikelihoods(context, continuations, "sum") == Ranker(demo_loaded, 2).loglikelihoods_full(
            context, continuations, "sum")
    Generator(loaded, settings)  # said once per process, not once per generator
    err = capsys.readouterr().err.splitlines()
    assert err == ["idefics: generation runs model.generate (no fast loop for this family)",
                   "idefics: ranking runs one full forward pass per candidate (no prefix cache for this family)"]
