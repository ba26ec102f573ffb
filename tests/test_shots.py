"""Shot selection: RICES against a brute-force ranking, exclusions, caches, and seeded random draws."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import Example, ExampleSet
from idefics_eval.shots import ShotSettings, build_selector, embedding_fingerprint


@dataclass(frozen=True)
class MemImage:
    """A tiny in-memory image whose pixels are a function of `pixels_seed`."""

    pixels_seed: int

    @property
    def key(self) -> str:
        return f"mem:{self.pixels_seed}"

    def load(self) -> Image.Image:
        pixels = np.random.default_rng(self.pixels_seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
        return Image.fromarray(pixels)


class FakeEncoder:
    """Deterministic: a fixed random projection of the pixels. Counts the images it encodes."""

    def __init__(self, name: str = "fake:v1", dim: int = 8):
        self.name = name
        self.projection = np.random.default_rng(1234).normal(size=(48, dim)).astype(np.float32)
        self.encoded = 0

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        self.encoded += len(images)
        pixels = np.stack([np.asarray(image, dtype=np.float32).reshape(-1) / 255 - 0.5 for image in images])
        return pixels @ self.projection


def make_set(name: str, spec: list[tuple[str, str, int]], source: str = "memory") -> ExampleSet:
    """spec: (example id, image id, pixels seed)."""
    examples = [
        Example(id=i, image_id=img, image=MemImage(seed), fields={"question": f"q {i}"}, answers=("a",))
        for i, img, seed in spec
    ]
    return ExampleSet(name=name, source=source, examples=examples)


def support_spec(n_images: int = 20, seed: int = 0) -> list[tuple[str, str, int]]:
    """1-3 questions per image; images 0 and 1 have identical pixels (an exact similarity tie)."""
    rng = np.random.default_rng(seed)
    spec = []
    for image in range(n_images):
        pixels = 1000 if image in (0, 1) else 1000 + image
        for question in range(int(rng.integers(1, 4))):
            spec.append((f"s{image}_{question}", f"img{image}", pixels))
    rng.shuffle(spec)  # questions about one image are not adjacent in support order
    return spec


SUPPORT = make_set("toy/train", support_spec())
QUERIES = make_set("toy/val", [(f"v{i}", f"vimg{i}", 5000 + i) for i in range(12)] + [("v_dup", "vimgdup", 1000)])


def brute_force(support: ExampleSet, query: Example, encoder: FakeEncoder) -> list[str]:
    """All eligible support ids, most similar first, ties by support order."""

    def unit(image_ref):
        vector = encoder.encode([image_ref.load()])[0]
        return vector / max(np.linalg.norm(vector), 1e-12)

    q = unit(query.image)
    scored = [
        (-float(np.dot(unit(example.image), q)), position, example.id)
        for position, example in enumerate(support.examples)
        if example.image_id != query.image_id and example.id != query.id
    ]
    return [example_id for *_, example_id in sorted(scored)]


def ids(examples: list[Example]) -> list[str]:
    return [example.id for example in examples]


@pytest.mark.parametrize("max_k", [4, 30])  # 30 > the 20 support images: the search covers the whole index
def test_rices_equals_brute_force_most_similar_last_and_nested(max_k):
    encoder = FakeEncoder()
    selector = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, max_k, encoder, cache_dir=None)
    for query in QUERIES.examples:
        expected = brute_force(SUPPORT, query, FakeEncoder())[:max_k]
        for k in range(1, max_k + 1):
            shots = selector.select(query, k)
            assert ids(shots) == expected[:k][::-1]  # nested, most similar last
        assert selector.select(query, 0) == []


def test_rices_similarities_are_each_shots_cosine_in_prompt_order():
    """What `idefics-eval prompt` prints beside each shot: its similarity to the query image."""
    encoder = FakeEncoder()
    selector = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, encoder, cache_dir=None)

    def unit(image_ref):
        vector = encoder.encode([image_ref.load()])[0]
        return vector / max(np.linalg.norm(vector), 1e-12)

    for query in QUERIES.examples:
        shots = selector.select(query, 3)
        expected = [float(np.dot(unit(shot.image), unit(query.image))) for shot in shots]
        assert selector.similarities(query, 3) == pytest.approx(expected, abs=1e-5)
        assert selector.similarities(query, 3) == sorted(selector.similarities(query, 3))  # most similar last


def test_identical_image_is_the_last_shot_and_ties_follow_support_order():
    selector = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 6, FakeEncoder(), cache_dir=None)
    query = next(q for q in QUERIES.examples if q.id == "v_dup")  # same pixels as img0 and img1
    tied = [e.id for e in SUPPORT.examples if e.image_id in ("img0", "img1")]  # support order
    shots = ids(selector.select(query, len(tied)))
    assert shots == tied[::-1]


def test_exact_ties_everywhere_still_match_brute_force():
    """All support images identical: the first search cannot decide the cut-off and must widen."""
    spec = [(f"s{i}_{j}", f"img{i}", 77) for j in range(2) for i in range(12)]  # interleaved questions
    spec[3] = ("v0", "img3", 77)  # shares an id with a query about another image
    support = make_set("toy/train", spec)
    queries = make_set("toy/val", [("v0", "vimg0", 5), ("v1", "img4", 6), ("v2", "vimg2", 77)])
    selector = build_selector(ShotSettings("rices"), support, queries, 5, FakeEncoder(), cache_dir=None)
    for query in queries.examples:
        assert ids(selector.select(query, 5)) == brute_force(support, query, FakeEncoder())[:5][::-1]


def test_random_shots_have_no_similarity():
    random = build_selector(ShotSettings("random", 0), SUPPORT, QUERIES, 4, None, cache_dir=None)
    assert random.similarities(QUERIES.examples[0], 3) == [None, None, None]


def rank_one_image(scores, rows, positions_per_row, skip_rows, need, complete):
    """The per-query-image ranking `shots._rank` replaced (its plain path): None if the search may
    have cut off a tie or better, else the `need` best positions by (similarity desc, support order)."""
    keep = (rows >= 0) & ~np.isin(rows, skip_rows)
    groups = [np.array(positions_per_row[row], dtype=np.int64) for row in rows[keep]]
    positions = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    similarity = np.repeat(scores[keep], [len(group) for group in groups])
    if not complete and np.count_nonzero(similarity > scores[-1]) < need:
        return None
    best = np.lexsort((positions, -similarity))[:need]
    return positions[best], similarity[best]


def rank_batch(scores, rows, positions_per_row, skip_rows, need, complete):
    """`shots._rank` on a batch, as a list like `rank_one_image`'s per image (None: unresolved)."""
    from idefics_eval.shots import _ImageRows, _rank

    row_of_position = np.zeros(sum(map(len, positions_per_row)), dtype=np.int64)
    for row, positions in enumerate(positions_per_row):
        row_of_position[positions] = row
    image_rows = _ImageRows.grouping(row_of_position, len(positions_per_row))
    skip = np.array([np.isin(searched, own) for searched, own in zip(rows, skip_rows)]).reshape(rows.shape)
    resolved, ranked, similarity = _rank(scores, rows, skip, image_rows, need, complete)
    found = iter(zip(ranked, similarity))
    return [next(found) if ok else None for ok in resolved]


def test_rank_refuses_a_cut_off_that_may_hide_a_tie():
    positions_per_row = [[0, 5], [1], [2], [3], [4]]  # image row -> support positions
    scores = np.array([[1.0, 0.9, 0.5, 0.5]], dtype=np.float32)  # row 4 is the query's own image
    rows = np.array([[4, 0, 2, 3]])  # unsearched row 1 may tie at 0.5, and its example comes first
    assert rank_batch(scores, rows, positions_per_row, [[4]], 3, complete=False) == [None]
    assert rank_batch(scores, rows, positions_per_row, [[4]], 2, complete=False)[0][0].tolist() == [0, 5]
    full_scores = np.array([[1.0, 0.9, 0.5, 0.5, 0.5]], dtype=np.float32)
    ((ranked, similarity),) = rank_batch(full_scores, np.array([[4, 0, 3, 2, 1]]), positions_per_row, [[4]], 4, True)
    assert ranked.tolist() == [0, 5, 1, 2]
    assert similarity.tolist() == pytest.approx([0.9, 0.9, 0.5, 0.5])


@pytest.mark.parametrize("seed", range(40))
def test_rank_of_a_batch_equals_the_ranking_of_each_image_alone(seed):
    """Adversarial batches: scores from three values (ties everywhere, across and within images),
    images with several examples in shuffled support order, own rows to leave out (none, one, several,
    not searched), rows FAISS could not fill (-1), and cut-offs that may or may not hide a tie."""
    rng = np.random.default_rng(seed)
    n_rows, batch = int(rng.integers(1, 12)), int(rng.integers(1, 9))
    k = int(rng.integers(1, n_rows + 1))
    counts = rng.integers(1, 4, n_rows)
    positions_per_row = [sorted(p.tolist()) for p in np.split(rng.permutation(counts.sum()), np.cumsum(counts)[:-1])]
    scores = -np.sort(-rng.choice(np.float32([0.1, 0.5, 0.9]), (batch, k)), axis=1)
    rows = np.array([rng.permutation(n_rows)[:k] for _ in range(batch)])
    unfilled = rng.integers(0, k + 1, batch) if rng.random() < 0.3 else np.full(batch, k)
    for image, n in enumerate(unfilled):
        rows[image, n:], scores[image, n:] = -1, -np.finfo(np.float32).max
    skip_rows = [rng.choice(n_rows, int(rng.integers(0, min(n_rows, 2) + 1)), replace=False).tolist() for _ in range(batch)]
    need = int(rng.integers(1, 8))
    for complete in (False, True):
        expected = [rank_one_image(s, r, positions_per_row, own, need, complete)
                    for s, r, own in zip(scores, rows, skip_rows)]
        got = rank_batch(scores, rows, positions_per_row, skip_rows, need, complete)
        assert [e is None for e in expected] == [g is None for g in got]
        for e, g in zip(expected, got):
            if e is not None:
                assert e[0].tolist() == g[0].tolist() and e[1].tolist() == g[1].tolist()


def test_exclusion_when_support_and_queries_are_the_same_split():
    encoder = FakeEncoder()
    selector = build_selector(ShotSettings("rices"), SUPPORT, SUPPORT, 5, encoder, cache_dir=None)
    assert encoder.encoded == len(SUPPORT.unique_images())  # query vectors reused from the index
    for query in SUPPORT.examples:
        shots = selector.select(query, 5)
        assert all(shot.image_id != query.image_id and shot.id != query.id for shot in shots)
        assert ids(shots) == brute_force(SUPPORT, query, FakeEncoder())[:5][::-1]


def test_own_id_excluded_even_with_a_different_image():
    support = make_set("toy/train", [("x", "a", 1), ("y", "b", 2), ("z", "c", 3)])
    queries = make_set("toy/val", [("x", "other", 1)])  # same id and pixels as support "x"
    for settings in (ShotSettings("rices"), ShotSettings("random")):
        selector = build_selector(settings, support, queries, 2, FakeEncoder(), cache_dir=None)
        assert sorted(ids(selector.select(queries.examples[0], 2))) == ["y", "z"]


COCO_LIKE = make_set("coco/train", [(str(i), str(i), 100 + i) for i in range(4)], source="data/coco")


@pytest.mark.parametrize("selection", ["rices", "random"])
def test_a_bare_id_shared_with_another_dataset_excludes_nothing(selection):
    """NoCaps ids 0-4499 are also COCO ids: a NoCaps query about image "0" keeps COCO image "0"."""
    queries = make_set("nocaps/validation", [("0", "0", 7)], source="data/nocaps")  # id and image id collide
    selector = build_selector(ShotSettings(selection), COCO_LIKE, queries, 4, FakeEncoder(), cache_dir=None)
    assert sorted(ids(selector.select(queries.examples[0], 4))) == ["0", "1", "2", "3"]


@pytest.mark.parametrize("selection", ["rices", "random"])
def test_the_very_same_image_in_another_dataset_is_still_excluded(selection):
    queries = make_set("nocaps/validation", [("q", "x9", 101)], source="data/nocaps")  # COCO image "1"'s pixels
    selector = build_selector(ShotSettings(selection), COCO_LIKE, queries, 3, FakeEncoder(), cache_dir=None)
    assert sorted(ids(selector.select(queries.examples[0], 3))) == ["0", "2", "3"]
    with pytest.raises(UserError, match="3 once a query's own image"):
        build_selector(ShotSettings(selection), COCO_LIKE, queries, 4, FakeEncoder(), cache_dir=None)


@pytest.mark.parametrize("selection", ["rices", "random"])
def test_a_bare_id_within_one_dataset_is_the_same_image(selection):
    """Validation and train of one COCO folder share image ids: image "0" is the query's own."""
    queries = make_set("coco/validation", [("v", "0", 7)], source="data/coco")
    selector = build_selector(ShotSettings(selection), COCO_LIKE, queries, 3, FakeEncoder(), cache_dir=None)
    assert sorted(ids(selector.select(queries.examples[0], 3))) == ["1", "2", "3"]
    other_folder = make_set("coco/validation", [("v", "0", 7)], source="elsewhere/coco")
    selector = build_selector(ShotSettings(selection), COCO_LIKE, other_folder, 4, FakeEncoder(), cache_dir=None)
    assert len(selector.select(other_folder.examples[0], 4)) == 4


def test_index_and_query_embeddings_are_saved_and_reused(tmp_path):
    first = FakeEncoder()
    built = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, first, tmp_path, batch_size=3)
    assert first.encoded == len(SUPPORT.unique_images()) + len(QUERIES.unique_images())

    folder = tmp_path / "indexes" / built.fingerprint
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["image_ids"] == [image_id for image_id, _ in SUPPORT.unique_images()]
    assert meta["encoder"] == "fake:v1" and meta["split"] == "toy/train"
    assert meta["dataset_fingerprint"] == SUPPORT.fingerprint and meta["count"] == len(meta["image_ids"])
    assert (folder / "index.faiss").is_file()
    assert (tmp_path / "embeddings" / f"{embedding_fingerprint(QUERIES, 'fake:v1')}.npy").is_file()
    assert not list(tmp_path.rglob("*.tmp"))

    second = FakeEncoder()
    reused = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, second, tmp_path)
    assert second.encoded == 0
    assert reused.fingerprint == built.fingerprint
    for query in QUERIES.examples:
        assert ids(reused.select(query, 4)) == ids(built.select(query, 4))

    renamed = FakeEncoder(name="fake:v2")
    other = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, renamed, tmp_path)
    assert renamed.encoded > 0 and other.fingerprint != built.fingerprint

    smaller = ExampleSet("toy/train", "memory", SUPPORT.examples[1:])
    fresh = FakeEncoder()
    changed = build_selector(ShotSettings("rices"), smaller, QUERIES, 4, fresh, tmp_path)
    assert fresh.encoded >= len(smaller.unique_images()) and changed.fingerprint != built.fingerprint


def test_partial_or_corrupt_cache_files_are_not_used(tmp_path):
    reference = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, FakeEncoder(), cache_dir=None)
    fingerprint = embedding_fingerprint(SUPPORT, "fake:v1")
    folder = tmp_path / "indexes" / fingerprint
    npy = tmp_path / "embeddings" / f"{embedding_fingerprint(QUERIES, 'fake:v1')}.npy"

    # An interrupted first run: only temporary files, no meta.json.
    folder.mkdir(parents=True)
    (folder / ".index.faiss.abc.tmp").write_bytes(b"half an index")
    encoder = FakeEncoder()
    build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, encoder, tmp_path)
    assert encoder.encoded == len(SUPPORT.unique_images()) + len(QUERIES.unique_images())

    # Truncated index and embeddings (e.g. a disk filled up outside this program).
    (folder / "index.faiss").write_bytes((folder / "index.faiss").read_bytes()[:40])
    npy.write_bytes(npy.read_bytes()[:100])
    encoder = FakeEncoder()
    rebuilt = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, encoder, tmp_path)
    assert encoder.encoded == len(SUPPORT.unique_images()) + len(QUERIES.unique_images())
    for query in QUERIES.examples:
        assert ids(rebuilt.select(query, 4)) == ids(reference.select(query, 4))

    # A well-formed index of other images under this fingerprint (copied, or a stale meta.json).
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "image_ids": meta["image_ids"][::-1]}))
    encoder = FakeEncoder()
    build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, encoder, tmp_path)
    assert encoder.encoded == len(SUPPORT.unique_images())

    # The rewritten files are good: a further run embeds nothing.
    encoder = FakeEncoder()
    build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, encoder, tmp_path)
    assert encoder.encoded == 0


def random_shots(seed: int, queries: list[Example], max_k: int = 5, k: int = 5) -> dict[str, list[str]]:
    selector = build_selector(ShotSettings("random", seed), SUPPORT, ExampleSet("v", "m", queries), max_k, None, None)
    return {query.id: ids(selector.select(query, k)) for query in queries}


def test_random_is_seeded_per_query_not_by_order_or_company():
    queries = list(QUERIES.examples)
    everything = random_shots(0, queries)
    assert random_shots(0, queries[::-1]) == everything
    assert random_shots(0, queries[3:5]) == {q.id: everything[q.id] for q in queries[3:5]}
    assert random_shots(0, queries) == everything
    assert random_shots(1, queries) != everything
    for shots in everything.values():
        assert len(set(shots)) == 5
    assert len({tuple(shots) for shots in everything.values()}) > 1  # not one draw for all queries


def test_random_is_nested_and_independent_of_max_k():
    queries = list(QUERIES.examples)
    four_of_eight = random_shots(7, queries, max_k=8, k=4)
    eight = random_shots(7, queries, max_k=8, k=8)
    assert four_of_eight == random_shots(7, queries, max_k=4, k=4)
    assert all(eight[q][:4] == four_of_eight[q] for q in eight)


def test_random_excludes_and_covers_the_eligible_support():
    selector = build_selector(ShotSettings("random", 3), SUPPORT, SUPPORT, 4, None, None)
    seen = set()
    for query in SUPPORT.examples:
        shots = selector.select(query, 4)
        assert all(shot.image_id != query.image_id and shot.id != query.id for shot in shots)
        seen.update(ids(shots))
    assert len(seen) > len(SUPPORT) // 2


@pytest.mark.parametrize("selection", ["rices", "random"])
def test_more_shots_than_support_is_a_user_error(selection):
    support = make_set("toy/train", [("a", "i1", 1), ("b", "i1", 1), ("c", "i2", 2)])
    queries = make_set("toy/val", [("q", "i9", 9)])
    encoder = FakeEncoder()
    build_selector(ShotSettings(selection), support, queries, 3, encoder, None)
    with pytest.raises(UserError, match="toy/train has 3 examples, fewer than the 4 shots.*lower --shots"):
        build_selector(ShotSettings(selection), support, queries, 4, encoder, None)
    with pytest.raises(UserError, match=r"\(1 once a query's own image and id are left out\).*2 shots"):
        build_selector(ShotSettings(selection), support, support, 2, encoder, None)


def test_unknown_selection_is_a_user_error():
    with pytest.raises(UserError, match="rices, random"):
        ShotSettings("nearest")


@pytest.fixture
def searches(monkeypatch) -> list[int]:
    """Counts RICES searches (the FAISS calls a neighbours cache hit skips)."""
    from idefics_eval.shots import RicesSelector

    calls = []
    search = RicesSelector._search

    def counted(self, *args):
        calls.append(1)
        return search(self, *args)

    monkeypatch.setattr(RicesSelector, "_search", counted)
    return calls


def everything_selected(selector, queries: ExampleSet) -> list:
    return [(ids(selector.select(q, selector.max_k)), selector.similarities(q, selector.max_k)) for q in queries.examples]


def test_neighbours_are_saved_and_a_hit_gives_a_fresh_search_s_shots_without_searching(tmp_path, searches):
    fresh = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 6, FakeEncoder(), cache_dir=None)
    first = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 6, FakeEncoder(), tmp_path)
    assert len(list((tmp_path / "indexes" / first.fingerprint / "neighbours").glob("*.npz"))) == 1
    again = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 6, FakeEncoder(), tmp_path)
    assert len(searches) == 2  # the fresh one and the first; the third read what the first found
    assert everything_selected(again, QUERIES) == everything_selected(first, QUERIES) == everything_selected(fresh, QUERIES)
    for query in QUERIES.examples:  # nested as without the cache
        assert ids(again.select(query, 2)) == ids(fresh.select(query, 2))


def restyled(split: ExampleSet, **changes) -> ExampleSet:
    """`split` with its first example's image id or pixels changed."""
    first = split.examples[0]
    image = MemImage(changes["pixels"]) if "pixels" in changes else first.image
    example = Example(first.id, changes.get("image_id", first.image_id), image, first.fields, first.answers)
    return ExampleSet(split.name, split.source, [example, *split.examples[1:]])


KEY_CHANGES = {
    "max_k": lambda: dict(max_k=5),
    "encoder": lambda: dict(encoder=FakeEncoder(name="fake:v2")),
    "support": lambda: dict(support=ExampleSet("toy/train", "memory", SUPPORT.examples[1:])),
    "query pixels": lambda: dict(queries=restyled(QUERIES, pixels=4242)),
    # Same pixels, so the same embeddings, but now the support's own image img5 (same dataset): left out.
    "query's own image": lambda: dict(queries=restyled(QUERIES, image_id="img5")),
}


@pytest.mark.parametrize("change", [*KEY_CHANGES, "faiss version", "neighbours version"])
def test_any_change_to_what_the_search_depends_on_misses_the_neighbours(tmp_path, searches, monkeypatch, change):
    settings = dict(support=SUPPORT, queries=QUERIES, max_k=4, encoder=FakeEncoder())
    build_selector(ShotSettings("rices"), settings["support"], settings["queries"], settings["max_k"], settings["encoder"], tmp_path)
    if change in KEY_CHANGES:
        settings |= KEY_CHANGES[change]()
    elif change == "faiss version":
        import faiss

        monkeypatch.setattr(faiss, "__version__", "0.0.0")
    else:
        monkeypatch.setattr("idefics_eval.shots._NEIGHBOURS_VERSION", -1)
    args = settings["support"], settings["queries"], settings["max_k"]
    changed = build_selector(ShotSettings("rices"), *args, settings["encoder"], tmp_path)
    assert len(searches) == 2
    fresh = build_selector(ShotSettings("rices"), *args, FakeEncoder(settings["encoder"].name), cache_dir=None)
    assert everything_selected(changed, settings["queries"]) == everything_selected(fresh, settings["queries"])


def test_damaged_or_foreign_neighbours_are_reported_and_found_again(tmp_path, searches, caplog):
    reference = everything_selected(build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, FakeEncoder(), None), QUERIES)
    build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, FakeEncoder(), tmp_path)
    (payload,) = tmp_path.glob("indexes/*/neighbours/*.npz")
    intact = payload.read_bytes()

    payload.write_bytes(intact[: len(intact) // 2])  # truncated
    with caplog.at_level("WARNING", logger="idefics_eval.cache_files"):
        again = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, FakeEncoder(), tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(payload) in warning and warning.endswith("; rebuilding") and "\n" not in warning
    assert len(searches) == 3 and everything_selected(again, QUERIES) == reference
    assert payload.read_bytes() == intact  # rewritten

    # Another entry's files under this entry's name (its meta records other inputs): not used.
    other = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 5, FakeEncoder(), tmp_path)
    (other_payload,) = set(tmp_path.glob("indexes/*/neighbours/*.npz")) - {payload}
    other_payload.replace(payload)
    other_payload.with_suffix(".json").replace(payload.with_suffix(".json"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="idefics_eval.cache_files"):
        again = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, FakeEncoder(), tmp_path)
    assert len(caplog.records) == 1 and len(searches) == 5 and everything_selected(again, QUERIES) == reference
    assert everything_selected(other, QUERIES) != reference


def test_a_rebuilt_index_drops_the_neighbours_found_with_the_old_one(tmp_path, searches):
    first = build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, FakeEncoder(), tmp_path)
    folder = tmp_path / "indexes" / first.fingerprint
    (folder / "index.faiss").write_bytes(b"damaged")
    build_selector(ShotSettings("rices"), SUPPORT, QUERIES, 4, FakeEncoder(), tmp_path)
    assert len(searches) == 2 and len(list((folder / "neighbours").glob("*.npz"))) == 1
