"""The image feature cache: LRU by bytes, hits and misses counted, and cached features give the
same scores and generations as features computed afresh."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.image_cache import ImageFeatureCache, compute_features, encode_images, pixel_values, shared_cache
from idefics_eval.prompts import load_template, most_common_answer
from idefics_eval.ranking import Ranker

from conftest import ColourImage, make_example


def _tensor(n_floats: int) -> torch.Tensor:
    return torch.zeros(n_floats, dtype=torch.float32)  # 4 bytes each


def test_hit_miss_and_lru_eviction_by_bytes():
    cache = ImageFeatureCache(max_bytes=400)
    assert cache.get("a") is None and cache.stats.misses == 1
    cache.put("a", _tensor(40))  # 160 bytes
    cache.put("b", _tensor(40))
    assert cache.bytes == 320 and len(cache) == 2
    assert cache.get("a") is not None and cache.stats.hits == 1  # "a" is now the most recent
    cache.put("c", _tensor(40))  # needs 160 more: evicts the least recently used, "b"
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats.evictions == 1 and cache.bytes == 320
    cache.put("d", _tensor(90))  # 360 bytes: evicts both others
    assert list(cache._entries) == ["d"] and cache.bytes == 360 and cache.stats.evictions == 3
    cache.put("huge", _tensor(200))  # larger than the budget: not stored, nothing evicted
    assert "huge" not in cache and "d" in cache
    cache.put("d", _tensor(10))  # replacing an entry re-counts its bytes
    assert cache.bytes == 40


def test_zero_budget_stores_nothing():
    cache = ImageFeatureCache(max_bytes=0)
    cache.put("a", _tensor(1))
    assert len(cache) == 0 and cache.bytes == 0


def test_encode_images_computes_each_image_once(demo_loaded):
    cache = ImageFeatureCache()
    red, blue, green = ColourImage((255, 0, 0)), ColourImage((0, 0, 255)), ColourImage((0, 255, 0))
    first = encode_images(demo_loaded, [red, blue, red], cache)
    assert cache.stats.misses == 2 and len(cache) == 2 and torch.equal(first[0], first[2])
    second = encode_images(demo_loaded, [blue, green, red], cache)
    assert cache.stats.hits == 2 and cache.stats.misses == 3
    assert torch.equal(second[0], first[1]) and torch.equal(second[2], first[0])
    alone = compute_features(demo_loaded, pixel_values(demo_loaded, [green.load()]))[0]
    assert torch.equal(second[1], alone)  # each image is encoded on its own
    together = encode_images(demo_loaded, [red, blue, green], None)  # no cache: computed again, same bits
    assert torch.equal(together, torch.stack([first[0], first[1], second[1]]))
    assert all(key[0] == demo_loaded.fingerprint for key in cache._entries)


def test_shared_cache_is_one_per_model(demo_loaded):
    assert shared_cache(demo_loaded) is shared_cache(demo_loaded)
    assert Ranker(demo_loaded, 4).image_cache is shared_cache(demo_loaded)


@pytest.mark.parametrize("max_bytes", [1 << 20, 3000])  # 3000 bytes: room for 5 latent sets, so evictions
def test_ranking_with_the_cache_equals_without(demo_loaded, max_bytes):
    template = load_template("vqa")
    colours = [(250, 0, 0), (0, 0, 250), (0, 200, 0), (200, 200, 0), (90, 0, 90), (0, 90, 90)]
    shots = [make_example(f"s{i}", f"s{i}", "What color is it?", ["red"] * 10, rgb=colours[i]) for i in range(4)]
    candidates = ["red", "blue", "a dark green square", "no"]
    cached = Ranker(demo_loaded, batch_size=3, image_cache=ImageFeatureCache(max_bytes))
    fresh = Ranker(demo_loaded, batch_size=3, image_cache=ImageFeatureCache(0))
    for q, rgb in enumerate([(10, 10, 10), (240, 240, 240), (10, 10, 10)]):
        query = make_example(f"q{q}", f"q{q}", "What color is the square?", ["green"] * 10, rgb=rgb)
        context = template.render(shots[q : q + 3], query, most_common_answer)
        continuations = [template.render(shots[q : q + 3], query, most_common_answer, candidate=c) for c in candidates]
        assert cached.loglikelihoods(context, continuations, "sum") == fresh.loglikelihoods(context, continuations, "sum")
    assert cached.image_cache.stats.hits > 0
    assert (cached.image_cache.stats.evictions > 0) == (max_bytes < 4096)
