"""The image feature cache: LRU by bytes, hits and misses counted, and cached features give the
same scores and generations as features computed afresh."""

from __future__ import annotations

import os

import datasets
import pytest
import torch
from PIL import Image

from idefics_eval import examples as examples_module
from idefics_eval.engine import load_image
from idefics_eval.examples import DatasetImage, FileImage
from idefics_eval.image_cache import ImageFeatureCache, compute_features, encode_images, pixel_values, shared_cache
from idefics_eval.paths import Confinement
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


def png_file(path, rgb) -> None:
    Image.new("RGB", (32, 32), rgb).save(path, format="PNG")


def fresh_features(loaded, path) -> torch.Tensor:
    with Image.open(path) as image:
        return compute_features(loaded, pixel_values(loaded, [image.convert("RGB")]))[0]


def test_an_image_edited_in_place_misses_the_feature_cache(demo_loaded, tmp_path):
    """A training loop's second `evaluate` reads its split afresh (new refs to the same paths): an
    image replaced in place, under its old mtime, must not get the old image's features (or pixels)."""
    path = tmp_path / "a.png"
    png_file(path, (250, 0, 0))
    cache = ImageFeatureCache()
    red = encode_images(demo_loaded, [FileImage(path)], cache)[0]
    stat = path.stat()
    png_file(path, (0, 0, 250))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    blue = encode_images(demo_loaded, [FileImage(path)], cache)[0]
    assert torch.equal(blue, fresh_features(demo_loaded, path)) and not torch.equal(blue, red)
    assert load_image(FileImage(path)).getpixel((0, 0)) == (0, 0, 250)


def test_two_datasets_images_under_one_key_get_their_own_features(demo_loaded, tmp_path):
    """Two save_to_disk copies keep the fingerprint they were saved with: rows of the same index
    have one key but hold different images."""
    features = datasets.Features({"image": datasets.Image(decode=False)})
    inside = Confinement(tmp_path, "the data folder")
    refs = []
    for rgb, name in [((250, 0, 0), "red.png"), ((0, 0, 250), "blue.png")]:
        png_file(tmp_path / name, rgb)
        cells = [{"bytes": (tmp_path / name).read_bytes(), "path": None}]
        dataset = datasets.Dataset.from_dict({"image": cells}, features=features)
        refs.append(DatasetImage(dataset=dataset, index=0, column="image", fingerprint="saved", inside=inside))
    assert refs[0].key == refs[1].key
    cache = ImageFeatureCache()
    red = encode_images(demo_loaded, refs[:1], cache)[0]
    blue = encode_images(demo_loaded, refs[1:], cache)[0]
    assert torch.equal(red, fresh_features(demo_loaded, tmp_path / "red.png"))
    assert torch.equal(blue, fresh_features(demo_loaded, tmp_path / "blue.png"))
    assert load_image(refs[1]).getpixel((0, 0)) == (0, 0, 250)


def test_a_prompt_hashes_no_image_again(demo_loaded, tmp_path, monkeypatch):
    """The feature cache's key is the image's digest, asked for at every prompt: hashed once per
    ref while the file is unchanged (an old file, past the racy window), then a `stat` each time."""
    path = tmp_path / "old.png"
    png_file(path, (0, 200, 0))
    monkeypatch.setattr(examples_module, "_RACY_NS", 0)  # trust a file written just now (no tick to wait)
    hashed = []
    monkeypatch.setattr(examples_module, "_file_digest", lambda p: hashed.append(p) or "digest of " + str(p))
    ref, cache = FileImage(path), ImageFeatureCache()
    for _ in range(3):
        encode_images(demo_loaded, [ref, ref], cache)
    assert hashed == [path] and cache.stats.misses == 1
