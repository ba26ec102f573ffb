"""The image cache's spill folder (`--image-cache-dir`): evicted features written atomically to files
and read back bit for bit instead of going through the vision tower again; a run with a spill gives
the predictions of a run without."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import idefics_eval.image_cache as image_cache
from idefics_eval.errors import UserError
from idefics_eval.image_cache import ImageFeatureCache, configure_shared_cache, encode_images, shared_cache
from idefics_eval.models import load_model
from idefics_eval.runner import RunConfig, run

from conftest import ColourImage, invoke

KEY = ("fingerprint-a", "torch.float32")


def spill_files(root: Path) -> list[Path]:
    return sorted(root.glob("features-*/*"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_evicted_entries_come_back_from_disk_bit_for_bit(tmp_path, dtype):
    tensors = {name: torch.randn(64, 8, generator=torch.Generator().manual_seed(i)).to(dtype) for i, name in enumerate("abcd")}
    cache = ImageFeatureCache(max_bytes=2 * 64 * 8 * tensors["a"].element_size(), spill_dir=tmp_path)  # room for two
    for name, tensor in tensors.items():
        cache.put(KEY + (name,), tensor)
    assert cache.stats.evictions >= 2 and cache.stats.spilled == cache.stats.evictions
    assert len(spill_files(tmp_path)) == cache.stats.spilled
    for name, tensor in tensors.items():
        back = cache.get(KEY + (name,))
        assert back is not None and back.dtype == dtype and torch.equal(back, tensor)
    assert cache.stats.misses == 0 and cache.stats.disk_hits >= 2
    spilled = cache.stats.spilled
    for name in "abcd":  # evicted again: their files are still there, nothing is written twice
        cache.get(KEY + (name,))
    assert cache.stats.spilled == spilled


def test_another_model_never_reads_the_spilled_features(tmp_path):
    cache = ImageFeatureCache(max_bytes=0, spill_dir=tmp_path)  # everything goes straight to disk
    cache.put(KEY + ("red",), torch.ones(3))
    assert KEY + ("red",) in cache and len(cache) == 0
    assert cache.get(("fingerprint-b", "torch.float32", "red")) is None
    assert cache.get(("fingerprint-a", "torch.bfloat16", "red")) is None
    other = ImageFeatureCache(max_bytes=0, spill_dir=tmp_path)  # another run sharing the folder
    assert other.get(KEY + ("red",)) is None  # reads only what it wrote itself
    other.put(KEY + ("red",), torch.zeros(3))
    assert torch.equal(cache.get(KEY + ("red",)), torch.ones(3))
    assert len({path.parent for path in spill_files(tmp_path)}) == 2


def test_replacing_an_entry_forgets_its_old_file(tmp_path):
    cache = ImageFeatureCache(max_bytes=0, spill_dir=tmp_path)
    cache.put("k", torch.ones(4))
    cache.put("k", torch.full((4,), 2.0))
    assert torch.equal(cache.get("k"), torch.full((4,), 2.0))
    assert len(spill_files(tmp_path)) == 1


def test_a_failed_write_leaves_no_file_and_says_what_to_do(tmp_path, monkeypatch):
    cache = ImageFeatureCache(max_bytes=0, spill_dir=tmp_path)

    def disk_full(handle, array):
        handle.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device.*--image-cache-dir"):
        cache.put("k", torch.ones(4))
    assert list(tmp_path.glob("features-*/*")) == [] and list(tmp_path.glob("features-*/.*")) == []
    assert "k" not in cache


def test_the_spill_folder_goes_with_its_cache(tmp_path):
    cache = ImageFeatureCache(max_bytes=0, spill_dir=tmp_path)
    cache.put("k", torch.ones(4))
    (folder,) = tmp_path.glob("features-*")
    cache.clear()
    assert list(folder.iterdir()) == [] and "k" not in cache
    del cache
    gc.collect()
    assert not folder.exists()


def test_spilled_images_skip_the_vision_tower(demo_loaded, tmp_path):
    images = [ColourImage((40 * i, 200 - 40 * i, 90)) for i in range(5)]
    fresh = encode_images(demo_loaded, images, None)
    one_image = fresh[0].numel() * fresh[0].element_size()
    cache = ImageFeatureCache(max_bytes=2 * one_image, spill_dir=tmp_path)  # two in memory, three spilled
    calls: list[int] = []
    hook = demo_loaded.model.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        first = encode_images(demo_loaded, images, cache)
        assert len(calls) == 5 and cache.stats.spilled == 3
        again = encode_images(demo_loaded, list(reversed(images)), cache)
    finally:
        hook.remove()
    assert len(calls) == 5  # nothing went through the vision tower a second time
    assert cache.stats.disk_hits >= 3
    assert torch.equal(first, fresh) and torch.equal(again, fresh.flip(0))


def config(tmp_path: Path, name: str, **overrides) -> RunConfig:
    base = dict(task="vqav2", shots=(0, 2), output_dir=tmp_path / name, demo=True, demo_seed=0, limit=6, num_beams=1,
                max_new_tokens=5, cache_dir=tmp_path / "cache", progress=False)
    return RunConfig(**(base | overrides))


def predictions(out: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((out / "predictions").glob("*.jsonl"))}


def test_a_run_with_a_spill_gives_the_predictions_of_a_run_without(tmp_path):
    loaded = load_model("demo", device="cpu", dtype="float32", demo_seed=0)  # its own cache, not the session's
    run(config(tmp_path, "plain"), loaded=loaded)
    spill = tmp_path / "features"
    run(config(tmp_path, "spill", image_cache_mb=0, image_cache_dir=spill), loaded=loaded)
    cache = shared_cache(loaded)
    assert cache.spill is not None and cache.spill.root == spill
    assert cache.stats.spilled > 0 and cache.stats.disk_hits > 0 and len(cache) == 0
    assert predictions(tmp_path / "spill") == predictions(tmp_path / "plain")


def test_the_shared_cache_is_kept_while_its_settings_are(demo_loaded, tmp_path):
    default = configure_shared_cache(demo_loaded)
    assert configure_shared_cache(demo_loaded) is default is shared_cache(demo_loaded)
    spilling = configure_shared_cache(demo_loaded, 1 << 20, tmp_path)
    try:
        assert spilling is not default and configure_shared_cache(demo_loaded, 1 << 20, tmp_path) is spilling
    finally:
        image_cache._SHARED[demo_loaded.model] = default


def cli_run(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(capsys, "run", "--task", "vqav2", "--demo", "--demo-seed", "0", "--shots", "0,2", "--limit", "4", "--output-dir", str(out),
                  "--cache-dir", str(out.parent / "cache"), "--no-progress", *extra)


def test_cli_spill_flags(tmp_path, capsys):
    code, _, err = cli_run(capsys, tmp_path / "spill", "--image-cache-mb", "0", "--image-cache-dir", str(tmp_path / "features"))
    assert code == 0, err
    code, _, err = cli_run(capsys, tmp_path / "plain")
    assert code == 0, err
    assert predictions(tmp_path / "spill") == predictions(tmp_path / "plain")


@pytest.mark.parametrize("flag, value, message", [
    ("--image-cache-mb", "-1", "--image-cache-mb"),
    ("--image-cache-dir", "FILE/features", "cannot write to the --image-cache-dir folder"),
])
def test_bad_spill_flags_get_one_line(tmp_path, capsys, flag, value, message):
    (tmp_path / "FILE").write_text("a file, not a folder")
    code, _, err = cli_run(capsys, tmp_path / "out", flag, value.replace("FILE", str(tmp_path / "FILE")))
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
