"""Caches that cannot lie: a byte flipped in any kind of cached file is reported in one line and the
entry rebuilt, so the run's predictions equal a cold run's; an image replaced in place under the same
name misses the caches, because they are keyed by image content."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from idefics_eval import examples as examples_module
from idefics_eval import image_cache
from idefics_eval.examples import DatasetImage, Example, ExampleSet, FileImage, image_digest
from idefics_eval.models import load_model
from idefics_eval.plan import DEMO_DATA
from idefics_eval.paths import Confinement
from idefics_eval.runner import RunConfig, run
from idefics_eval.shots import RicesSelector, embed, embedding_fingerprint


def config(out: Path, cache: Path | None, **overrides) -> RunConfig:
    base = {"task": "vqav2", "shots": (0, 4), "output_dir": out, "demo": True, "demo_seed": 0, "limit": 4,
            "num_beams": 1, "max_new_tokens": 3, "cache_dir": cache, "progress": False}
    return RunConfig(**(base | overrides))


def predictions(out: Path) -> dict[str, list[dict]]:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((out / "predictions").glob("*.jsonl"))}


def cache_files(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


def fresh_model():
    """A model of its own: its in-memory image features are not those of another test's run."""
    return load_model("demo", device="cpu", dtype="float32", demo_seed=0)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40  # in a float's high byte an exponent bit (the value jumps); in JSON a wrong character
    path.write_bytes(bytes(data))


def cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "idefics_eval.cache_files"]


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A run from an empty cache: its predictions, and the cache it leaves."""
    root = tmp_path_factory.mktemp("cold")
    run(config(root / "out", root / "cache"), loaded=fresh_model())
    return predictions(root / "out"), root / "cache"


# Every kind of file the RICES cache holds, and where a flipped byte does harm: a payload's last byte
# is the high byte of its last float (FAISS and .npy both end with the vectors, little-endian), the
# neighbours' .npz a byte of its arrays; in a meta file, a byte of what it describes or of the
# payload's recorded SHA-256.
def digest_byte(data: bytes) -> int:
    return data.index(b'"sha256": "') + 20


KINDS = {
    "indexes/*/index.faiss": [lambda data: len(data) - 1],
    "indexes/*/meta.json": [lambda data: len(data) // 2, digest_byte],
    "embeddings/*.npy": [lambda data: len(data) - 1],
    "embeddings/*.json": [lambda data: len(data) // 2, digest_byte],
    "indexes/*/neighbours/*.npz": [lambda data: len(data) // 2],
    "indexes/*/neighbours/*.json": [lambda data: len(data) // 2, digest_byte],
}
DAMAGE = [(kind, offset) for kind, offsets in KINDS.items() for offset in offsets]


def test_the_kinds_cover_every_cached_file(cold):
    _, cache = cold
    files = cache_files(cache)
    assert all(any(Path(name).match(kind) for kind in KINDS) for name in files)
    assert all(sum(Path(name).match(kind) for name in files) == 1 for kind in KINDS)


@pytest.mark.parametrize(("kind", "offset"), DAMAGE, ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(DAMAGE)])
def test_a_flipped_byte_is_reported_once_and_rebuilt(cold, tmp_path, caplog, kind, offset):
    reference, cold_cache = cold
    cache = tmp_path / "cache"
    shutil.copytree(cold_cache, cache)
    (damaged,) = cache.glob(kind)
    flip(damaged, offset(damaged.read_bytes()))

    with caplog.at_level(logging.WARNING):
        run(config(tmp_path / "out", cache), loaded=fresh_model())

    assert predictions(tmp_path / "out") == reference
    (warning,) = cache_warnings(caplog)
    assert str(damaged) in warning and warning.endswith("; rebuilding") and "\n" not in warning
    assert cache_files(cache) == cache_files(cold_cache)  # rewritten as a cold run writes it


def test_a_damaged_spill_file_is_recomputed_not_read(tmp_path, caplog, monkeypatch):
    """Spill files live for one run, so the damage is done as they are written."""
    plain = tmp_path / "plain"
    run(config(plain, None), loaded=fresh_model())
    write = image_cache.FeatureSpill.write

    def write_then_damage(self, key, tensor):
        write(self, key, tensor)
        path = self._files[key][0]
        flip(path, path.stat().st_size - 1)

    monkeypatch.setattr(image_cache.FeatureSpill, "write", write_then_damage)
    with caplog.at_level(logging.WARNING):
        run(config(tmp_path / "spill", None, image_cache_mb=0, image_cache_dir=tmp_path / "features"), loaded=fresh_model())

    assert predictions(tmp_path / "spill") == predictions(plain)
    warnings = cache_warnings(caplog)
    assert warnings and all(w.endswith("failed its checksum; recomputing") and "\n" not in w for w in warnings)
    assert all(str(tmp_path / "features") in w and ".npy" in w for w in warnings)


def test_a_second_run_takes_the_neighbours_from_the_cache_and_records_the_same(cold, tmp_path, monkeypatch):
    """Evaluating again (the next checkpoint) on the same queries: no search, the same shots, results
    and recorded fingerprints as the run that searched."""
    reference, cold_cache = cold
    cache = tmp_path / "cache"
    shutil.copytree(cold_cache, cache)
    monkeypatch.setattr(RicesSelector, "_search", lambda *args: pytest.fail("searched despite the neighbours cache"))
    run(config(tmp_path / "warm", cache), loaded=fresh_model())
    assert predictions(tmp_path / "warm") == reference
    assert cache_files(cache) == cache_files(cold_cache)

    monkeypatch.undo()
    run(config(tmp_path / "uncached", None), loaded=fresh_model())
    assert predictions(tmp_path / "uncached") == reference
    volatile = ("started", "finished", "duration_s", "environment")
    rows = [[{k: v for k, v in row.items() if k not in volatile} for row in json.loads((tmp_path / out / "results.json").read_text())]
            for out in ("warm", "uncached")]
    assert rows[0] == rows[1]
    manifests = [json.loads((tmp_path / out / "manifest.json").read_text()) for out in ("warm", "uncached")]
    assert manifests[0] == manifests[1] and "index_fingerprint" in json.dumps(manifests[0])


def shots_of(out: Path) -> dict[str, list[str]]:
    return {row["id"]: row["shots"] for row in predictions(out)["vqav2_4shot.jsonl"]}


@pytest.mark.parametrize("side", ["support", "query"])
def test_an_image_replaced_in_place_misses_the_cache(tmp_path, side):
    data = tmp_path / "data"
    shutil.copytree(DEMO_DATA / "vqav2", data)
    cache = tmp_path / "cache"
    run(config(tmp_path / "before", cache, data=str(data)), loaded=fresh_model())
    before = shots_of(tmp_path / "before")

    # The first query's image and a support image it does not take shots from now hold the same
    # bytes, under their old names and mtimes: RICES must now put that support image's questions last.
    query_id, shots = next(iter(before.items()))
    query_image = data / "val2014" / f"COCO_val2014_{int(query_id) // 1000:012d}.jpg"
    support_image = next(p for p in sorted((data / "train2014").iterdir())
                         if all(int(s) // 1000 != int(p.stem.rsplit("_", 1)[1]) for s in shots))
    target, source = (support_image, query_image) if side == "support" else (query_image, support_image)
    stat = target.stat()
    target.write_bytes(source.read_bytes())
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    run(config(tmp_path / "warm", cache, data=str(data)), loaded=fresh_model())
    run(config(tmp_path / "cold", tmp_path / "cold_cache", data=str(data)), loaded=fresh_model())
    after = shots_of(tmp_path / "warm")
    assert after == shots_of(tmp_path / "cold") and after != before
    assert int(after[query_id][-1]) // 1000 == int(support_image.stem.rsplit("_", 1)[1])


def png(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


class CountingEncoder:
    name = "counting:v1"

    def __init__(self):
        self.encoded = 0

    def encode(self, images):
        self.encoded += len(images)
        return np.stack([np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) + 1 for image in images])


def test_query_embeddings_follow_the_file_bytes(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(png((200, 0, 0)))

    def embedded(encoder):
        split = ExampleSet("toy/val", str(tmp_path), [Example("q", "a", FileImage(image), {}, ("x",))])
        images = split.unique_images()
        return embed(images, encoder, 1, tmp_path / "cache", embedding_fingerprint(split, encoder.name), "embed", False)

    red = embedded(CountingEncoder())
    image.write_bytes(png((0, 0, 200)))
    encoder = CountingEncoder()
    blue = embedded(encoder)
    assert encoder.encoded == 1 and not np.allclose(red, blue)
    encoder = CountingEncoder()
    assert np.array_equal(embedded(encoder), blue) and encoder.encoded == 0  # unchanged bytes: reused


def test_dataset_images_are_keyed_by_their_bytes_not_the_dataset_fingerprint(tmp_path):
    """The datasets library's fingerprint of local files hashes their mtimes, and a save_to_disk
    folder keeps the one it was saved with: a cell's bytes (or the file it names) are what count."""
    features = datasets.Features({"image": datasets.Image(decode=False)})
    (tmp_path / "c.png").write_bytes(png((0, 200, 0)))
    cells = [{"bytes": png((200, 0, 0)), "path": None}, {"bytes": png((0, 0, 200)), "path": None},
             {"bytes": None, "path": str(tmp_path / "c.png")}]
    dataset = datasets.Dataset.from_dict({"image": cells}, features=features)
    inside = Confinement(tmp_path, "the data folder")
    refs = [DatasetImage(dataset=dataset, index=i, column="image", fingerprint="same", inside=inside) for i in range(3)]
    assert refs[0].key != refs[1].key  # rows differ by index; the same row of another content must differ too
    other = datasets.Dataset.from_dict({"image": cells[1:2] * 3}, features=features)
    assert DatasetImage(other, 0, "image", "same", inside).key == refs[0].key
    assert DatasetImage(other, 0, "image", "same", inside).digest() == refs[1].digest() != refs[0].digest()
    before = refs[2].digest()
    (tmp_path / "c.png").write_bytes(png((0, 100, 0)))
    assert refs[2].digest() != before


def counted_file_digests(monkeypatch) -> list[Path]:
    hashed, real = [], examples_module._file_digest
    monkeypatch.setattr(examples_module, "_file_digest", lambda path: hashed.append(path) or real(path))
    return hashed


def test_a_file_digest_is_kept_until_the_file_changes_even_under_its_old_size_and_mtime(tmp_path, monkeypatch):
    """Every prompt asks for its images' digests: hashed once per ref, then checked by `stat`,
    whose ctime shows a `cp -p` over the file (same size, mtime set back) that size and mtime miss."""
    path = tmp_path / "a.png"
    path.write_bytes(b"encoded image 1")
    now = examples_module.time.time_ns
    monkeypatch.setattr(examples_module.time, "time_ns", lambda: now() + 10 * examples_module._RACY_NS)  # all settled
    hashed = counted_file_digests(monkeypatch)
    ref = FileImage(path)
    red = ref.digest()
    assert ref.digest() == red and hashed == [path]
    stat = path.stat()
    time.sleep(0.05)  # a timestamp tick later (a few milliseconds on Linux)
    path.write_bytes(b"encoded image 2")  # as long: same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert ref.digest() == hashlib.sha256(path.read_bytes()).hexdigest() != red and hashed == [path, path]


def test_a_digest_taken_just_after_a_write_is_not_kept(tmp_path, monkeypatch):
    """Where timestamps are coarse (a few milliseconds on older Linux kernels, 2 s on FAT), a second
    write within the tick of the first leaves the stat as it was: a digest taken then could go stale
    unseen, so it is not kept (git's "racy" entries) and the file is hashed at every ask."""
    path = tmp_path / "a.png"
    path.write_bytes(b"encoded image 1")
    hashed = counted_file_digests(monkeypatch)
    ref = FileImage(path)
    assert ref.digest() == ref.digest() == hashlib.sha256(b"encoded image 1").hexdigest() and hashed == [path, path]


def test_a_dataset_image_path_leaving_its_folder_is_not_even_hashed(tmp_path):
    import datasets

    from idefics_eval.errors import UserError

    outside = tmp_path / "outside.png"
    outside.write_bytes(png((9, 9, 9)))
    (tmp_path / "data").mkdir()
    features = datasets.Features({"image": datasets.Image(decode=False)})
    dataset = datasets.Dataset.from_dict({"image": [{"bytes": None, "path": "../outside.png"}]}, features=features)
    ref = DatasetImage(dataset, 0, "image", "fp", Confinement(tmp_path / "data", "the data folder"))
    with pytest.raises(UserError, match="leaves the data folder"):
        ref.digest()


class BytesImage:
    """An image given by its encoded bytes (hashed, never decoded)."""

    def __init__(self, key: str, data: bytes):
        self.key, self.data = key, data

    def load(self):
        return Image.open(io.BytesIO(self.data))

    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def test_content_fingerprint_hashed_in_batches_equals_one_image_at_a_time_and_sees_every_image():
    n = 2 * examples_module._DIGEST_BATCH + 3  # two full thread-pool batches and a short last one
    images = [BytesImage(f"img{i}", f"bytes {i}".encode()) for i in range(n)]

    def split(refs) -> ExampleSet:
        return ExampleSet("s", "mem", [Example(id=str(i), image_id=f"img{i}", image=ref, fields={}, answers=("a",))
                                       for i, ref in enumerate(refs)])

    plain = hashlib.sha256(split(images).fingerprint.encode())
    for i, ref in enumerate(images):
        plain.update(f"\x1eimg{i}\x1f{image_digest(ref)}".encode())
    assert split(images).content_fingerprint == plain.hexdigest()[:16]
    for changed in (0, examples_module._DIGEST_BATCH, n - 1):
        replaced = images[:changed] + [BytesImage(f"img{changed}", b"other bytes")] + images[changed + 1 :]
        assert split(replaced).content_fingerprint != split(images).content_fingerprint
