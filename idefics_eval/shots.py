"""Shot selection: which support examples go in front of each query.

Two protocols:

* **RICES** (Retrieval-based In-Context Example Selection; Yang et al. 2022, "An Empirical Study of
  GPT-3 for Few-Shot Knowledge-Based VQA"; used by Flamingo and reproduced in OpenFlamingo's
  `open_flamingo/eval/rices.py`): every support image and every query image is embedded with an
  image encoder, rows are L2-normalised, and each query's shots are the support examples whose
  image is most similar to the query image by cosine similarity. As in OpenFlamingo the shots are
  returned with the MOST similar LAST, right before the query. Retrieval is by image, then expanded
  to the questions about that image (support order breaks ties, so results are deterministic).
  Support embeddings live in a FAISS `IndexFlatIP` cached under `cache_dir/indexes/<fingerprint>/`;
  query embeddings under `cache_dir/embeddings/<fingerprint>.npy`; what the search found for the
  query images beside the index (`neighbours/`), keyed by the index's fingerprint, the query
  embeddings' values, the query images' own rows, max_k and the FAISS version, so evaluating
  checkpoint after checkpoint on the same queries searches once.
  The caches cannot lie: the fingerprint hashes the split, the encoder's name and every image's
  bytes (`ExampleSet.content_fingerprint`), so an image replaced in place is embedded again; the
  model's own tower, which a training loop changes in place under one name, is keyed by a hash
  of all its weights too (`cache_entry`, the folder or file name then hashing both); and
  each entry is written with a meta file (written last) holding what it was built from and its
  SHA-256, checked before use (`cache_files`), so a damaged entry is reported in one warning line
  naming the file and rebuilt, never used.
* **random**: shots drawn uniformly without replacement, with a generator seeded by
  (seed, hash of the query id), so a query's shots never depend on sharding, batching or --limit.

Both exclude from a query's shots every support example about the query's image and the support
example with the query's own id (this matters when support and query splits overlap). Ids are only
comparable within one dataset: when the support split comes from another dataset (NoCaps queries,
COCO shots), a support image is excluded only when it is the very same image (the same image key),
never because its bare id happens to be the query's. Shot sets are nested: the k-shot set is the
first k of the `max_k` selection.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from .cache_files import read_entry, write_entry
from .errors import UserError
from .examples import Example, ExampleSet, ImageRef
from .protocols import TEXT_ONLY_SHOTS

if TYPE_CHECKING:
    import faiss

SELECTIONS = ("rices", "random")
_SEARCH_BATCH = 1024  # query images per FAISS search call (also the "retrieve" progress step)


class ImageEncoder(Protocol):
    """Embeds images for RICES. `name` identifies the encoder and its weights (it keys the caches).
    An encoder whose weights can change under one name (the evaluated model's own tower, trained
    in place between two `evaluate` calls) also has `weights_checksum`, which keys the caches beside
    it (`cache_entry`)."""

    name: str

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        """One batch in, an (n, d) float32 array out, one row per image."""
        ...


@dataclass(frozen=True)
class ShotSettings:
    selection: str  # "rices" or "random"
    seed: int = 0  # used by random selection (and recorded)

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise UserError(f"unknown shot selection {self.selection!r}; use one of: {', '.join(SELECTIONS)}")
        if self.seed < 0:
            raise UserError(f"the seed must be 0 or more, got {self.seed}; pass a non-negative --seed")


# ----------------------------------------------------------------------------------------------
# Embeddings and their caches


def embedding_fingerprint(split: ExampleSet, encoder_name: str, n_images: int | None = None, recorded_at: str | None = None) -> str:
    """Names the cached embeddings of `split`'s distinct images under `encoder_name`: keyed by the
    images' bytes (`ExampleSet.content_fingerprint`), so an image replaced in place misses the cache.
    `recorded_at`: the value recorded before 2026-12-03 for the split at that folder (`content_fingerprint_at`)."""
    if n_images is None:
        n_images = len(split.unique_images())
    content = split.content_fingerprint if recorded_at is None else split.content_fingerprint_at(recorded_at)
    payload = "\x1f".join([split.name, content, encoder_name, str(n_images)])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_entry(fingerprint: str, encoder: ImageEncoder) -> tuple[str, dict]:
    """The name of the cache entry of embeddings `fingerprint` (see `embedding_fingerprint`) by
    `encoder`, and what its meta records of the encoder: the fingerprint itself and the encoder's
    name, or for an encoder with a `weights_checksum` a hash of both, and the checksum."""
    checksum = getattr(encoder, "weights_checksum", None)
    if checksum is None:
        return fingerprint, {"encoder": encoder.name}
    name = hashlib.sha256(f"{fingerprint}\x1f{checksum}".encode()).hexdigest()[:16]
    return name, {"encoder": encoder.name, "weights_checksum": checksum}


def embed(
    images: Sequence[tuple[str, ImageRef]],
    encoder: ImageEncoder,
    batch_size: int,
    cache_dir: Path | None,
    fingerprint: str,
    desc: str,
    progress: bool = True,
) -> np.ndarray:
    """L2-normalised float32 embeddings of `images`, one row each, in order.

    Cached as `cache_dir/embeddings/<entry>.npy` with its meta `<entry>.json` (encoder, row count,
    SHA-256) when `cache_dir` is given, the entry named by `cache_entry`; a damaged or mismatched
    entry is reported in one line and rewritten.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    folder = Path(cache_dir) / "embeddings" if cache_dir is not None else None
    if folder is not None:
        entry, encoder_meta = cache_entry(fingerprint, encoder)
        meta = {"fingerprint": fingerprint, **encoder_meta, "count": len(images)}
        cached = read_entry(folder / f"{entry}.npy", folder / f"{entry}.json", meta,
                            lambda data: _decode_npy(data, len(images)))
        if cached is not None:
            return cached
    rows = []
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            out = np.asarray(encoder.encode([ref.load() for _, ref in batch]), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != len(batch) or out.shape[1] == 0:
                raise ValueError(f"encoder {encoder.name} returned shape {out.shape} for {len(batch)} images")
            rows.append(out)
            bar.update(len(batch))
    vectors = _normalise(np.concatenate(rows)) if rows else np.zeros((0, 0), np.float32)
    if folder is not None:
        write_entry(folder / f"{entry}.npy", _encode_npy(vectors), folder / f"{entry}.json", meta)
    return vectors


def _normalise(vectors: np.ndarray) -> np.ndarray:
    """Divides float32 `vectors` (a fresh array: the caller's own) by their row norms, in place."""
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def _encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _decode_npy(data: bytes, n: int) -> np.ndarray:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if not (array.dtype == np.float32 and array.ndim == 2 and array.shape[0] == n and np.isfinite(array).all()):
        raise ValueError(f"holds {array.dtype} {array.shape}, not {n} finite float32 rows")
    return array


def load_or_build_index(
    support: ExampleSet, encoder: ImageEncoder, batch_size: int, cache_dir: Path | None, progress: bool = True
) -> tuple[faiss.IndexFlatIP, list[str], str]:
    """The support images' FAISS index, its image ids in row order, and its fingerprint.

    Loaded from `cache_dir/indexes/<entry>/` (index.faiss, and meta.json: what the index was
    built from and its SHA-256, written last; the entry named by `cache_entry`) when a complete,
    matching, intact copy is there; otherwise embedded, built and saved (a damaged copy is
    reported in one line and replaced).
    """
    images = support.unique_images()
    ids = [image_id for image_id, _ in images]
    fingerprint = embedding_fingerprint(support, encoder.name, len(images))
    folder = None
    if cache_dir is not None:
        entry, encoder_meta = cache_entry(fingerprint, encoder)
        folder = Path(cache_dir) / "indexes" / entry
        meta = {
            "image_ids": ids,
            **encoder_meta,
            "dataset_fingerprint": support.fingerprint,
            "content_fingerprint": support.content_fingerprint,
            "split": support.name,
            "count": len(ids),
        }
        index = read_entry(folder / "index.faiss", folder / "meta.json", meta, lambda data: _decode_index(data, len(ids)))
        if index is not None:
            return index, ids, fingerprint

    import faiss  # here, not at the top: a zero-shot or random-shots run searches nothing

    vectors = embed(images, encoder, batch_size, None, fingerprint, "embed support", progress)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    if folder is not None:
        shutil.rmtree(folder / "neighbours", ignore_errors=True)  # found with the index this one replaces
        write_entry(folder / "index.faiss", faiss.serialize_index(index).tobytes(), folder / "meta.json", meta)
    return index, ids, fingerprint


def _decode_index(data: bytes, count: int) -> faiss.IndexFlatIP:
    import faiss

    index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    if not isinstance(index, faiss.IndexFlatIP) or index.ntotal != count:
        raise ValueError(f"holds a {type(index).__name__} of {index.ntotal} vectors, not an IndexFlatIP of {count}")
    return index


# ----------------------------------------------------------------------------------------------
# Selectors


def _dataset_of(split: ExampleSet) -> tuple[str, str]:
    """The dataset a split belongs to: its task (the name before "/split") and where it was read from.
    Splits of one dataset (train and validation of one folder or hub id) share image and example ids."""
    return split.name.rpartition("/")[0] or split.name, split.source


class ShotSelector:
    """Chooses the shots for each query; call `.select(query, k) -> list[Example]`."""

    def __init__(self, settings: ShotSettings, support: ExampleSet, max_k: int, queries: ExampleSet):
        self.settings = settings
        self.support = support
        self.max_k = max_k
        # Ids name the same things only within one dataset. Across datasets (NoCaps queries, COCO
        # shots) only the image key says two images are one, and example ids say nothing.
        self._same_dataset = _dataset_of(queries) == _dataset_of(support)
        self._support_images = support.unique_images()  # rows of the RICES index, in this order
        self._row_of_image: dict[str, int] = {image_id: row for row, (image_id, _) in enumerate(self._support_images)}
        row_of_position = np.fromiter((self._row_of_image[e.image_id] for e in support.examples), np.int64, len(support))
        self._image_rows = _ImageRows.grouping(row_of_position, len(self._support_images))
        self._rows_of_key: dict[str, list[int]] = {}  # across datasets: image key -> the support rows showing it
        if not self._same_dataset:
            for row, (_, image) in enumerate(self._support_images):
                self._rows_of_key.setdefault(image.key, []).append(row)
        self._by_id = {e.id: position for position, e in enumerate(support.examples)} if self._same_dataset else {}

    def _own_rows(self, query: Example) -> Sequence[int]:
        """The support images (their rows) that are the query's image: within a dataset the one with
        its image id, across datasets those with its image key."""
        if not self._same_dataset:
            return self._rows_of_key.get(query.image.key, ())
        row = self._row_of_image.get(query.image_id)
        return () if row is None else (row,)

    @property
    def fingerprint(self) -> str:
        """Identifies the support index; "" when there is none (random selection)."""
        return ""

    @property
    def encoder_name(self) -> str | None:
        return None

    def describe(self) -> dict:
        """The settings to record alongside results."""
        return {
            "selection": self.settings.selection,
            "seed": self.settings.seed if self.settings.selection == "random" else None,
            "encoder": self.encoder_name,
            "index_fingerprint": self.fingerprint or None,
            "support": self.support.name,
            "support_fingerprint": self.support.fingerprint,
            "support_size": len(self.support),
        }

    def select(self, query: Example, k: int) -> list[Example]:
        """The k shots for `query`, in prompt order (for RICES, the most similar last)."""
        if not 0 <= k <= self.max_k:
            raise ValueError(f"k={k} outside 0..{self.max_k} (the max_k this selector was built for)")
        if k == 0:
            return []
        chosen = self._chosen(query)[:k]  # the max_k selection, most relevant / first drawn first
        return [self.support.examples[int(p)] for p in self._prompt_order(chosen)]

    def similarities(self, query: Example, k: int) -> list[float | None]:
        """The retrieval similarity of each of `select(query, k)`'s shots, in the same order (None: random)."""
        return [None] * k

    def _chosen(self, query: Example) -> Sequence[int]:
        raise NotImplementedError

    def _prompt_order(self, chosen: Sequence[int]) -> Sequence[int]:
        return chosen

    def _excluded(self, query: Example) -> list[int]:
        """Sorted support positions that can never be shots for `query`."""
        excluded = {int(p) for row in self._own_rows(query) for p in self._image_rows.of(row)}
        if query.id in self._by_id:
            excluded.add(self._by_id[query.id])
        return sorted(excluded)

    def _check_enough(self, queries: Sequence[Example]) -> None:
        if self.max_k == 0:
            return
        n = len(self.support)
        available = min((n - len(self._excluded(q)) for q in queries), default=n)
        if available < self.max_k:
            after = f" ({available} once a query's own image and id are left out)" if available < n else ""
            raise UserError(
                f"the support split {self.support.name} has {n} examples{after}, fewer than the "
                f"{self.max_k} shots asked for; lower --shots or use a larger support split"
            )


class RandomSelector(ShotSelector):
    """Uniform draws without replacement, seeded per query id (not by visiting order)."""

    def _chosen(self, query: Example) -> list[int]:
        self._check_enough([query])  # a query not seen at build time may still be short of shots
        excluded = self._excluded(query)
        available = len(self.support) - len(excluded)
        digest = int.from_bytes(hashlib.sha256(query.id.encode()).digest()[:8], "big")
        rng = np.random.default_rng([self.settings.seed, digest])
        # Partial Fisher-Yates over the eligible positions: the first k draws do not depend on
        # max_k, so a query's 4-shot set is the same whether or not 8 shots were also asked for.
        # (rng.random(n) is a prefix of rng.random(m) for n < m; one uniform per step.)
        swapped: dict[int, int] = {}
        draws = []
        for i, u in enumerate(rng.random(self.max_k).tolist()):
            j = i + int(u * (available - i))
            draws.append(swapped.get(j, j))
            swapped[j] = swapped.get(i, i)
        return [_nth_not_in(d, excluded) for d in draws]


def _nth_not_in(n: int, excluded: list[int]) -> int:
    """The n-th (0-based) non-negative integer not in the sorted list `excluded`."""
    position = n
    for e in excluded:
        if e > position:
            break
        position += 1
    return position


class RicesSelector(ShotSelector):
    """Most-similar support examples by image embedding; all queries retrieved at build time."""

    def __init__(self, settings: ShotSettings, support: ExampleSet, max_k: int, queries: ExampleSet,
                 encoder_name: str, fingerprint: str):
        super().__init__(settings, support, max_k, queries)
        self._encoder_name = encoder_name
        self._fingerprint = fingerprint
        self._top: dict[str, np.ndarray] = {}  # query id -> max_k support positions, most similar first
        self._similarity: dict[str, np.ndarray] = {}  # query id -> their cosine similarities, same order

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def encoder_name(self) -> str | None:
        return self._encoder_name

    def _chosen(self, query: Example) -> np.ndarray:
        try:
            return self._top[query.id]
        except KeyError:
            raise ValueError(f"query {query.id!r} was not among the queries this selector was built for") from None

    def _prompt_order(self, chosen):
        return chosen[::-1]  # most similar last, right before the query

    def similarities(self, query: Example, k: int) -> list[float]:
        """The cosine similarity of each of `select(query, k)`'s shots to the query image, in prompt order."""
        self._chosen(query)  # an unknown query fails as select does
        return [float(s) for s in self._prompt_order(self._similarity[query.id][:k])]

    def retrieve(self, index: faiss.IndexFlatIP, image_ids: list[str], queries: ExampleSet, vectors: np.ndarray,
                 cache_dir: Path | None = None, progress: bool = True):
        """Fill the top-max_k lists of all queries; `vectors` holds one row per distinct query image.

        With `cache_dir`, what the search finds is kept beside the support index
        (`indexes/<fingerprint>/neighbours/`, see `_neighbours_key`), so a later run with the same
        support, encoder, query images and max_k (every checkpoint of a training run evaluated on
        the same queries) skips the search."""
        if vectors.shape[1] != index.d:
            raise ValueError(
                f"query embeddings have {vectors.shape[1]} dimensions, the cached index {index.d}: "
                f"encoder {self._encoder_name!r} must change its name when its weights change"
            )
        if image_ids != [image_id for image_id, _ in self._support_images]:
            raise ValueError("the index's rows are not the support split's distinct images in order")
        by_query_image: dict[str, list[Example]] = {}
        for q in queries.examples:
            by_query_image.setdefault(q.image_id, []).append(q)
        query_images = list(by_query_image.values())  # each distinct query image's examples
        # (query image, index row) pairs to leave out, each as one number: query image * ntotal + row
        own_rows = np.array([c * index.ntotal + row for c, image_queries in enumerate(query_images)
                             for row in self._own_rows(image_queries[0])], dtype=np.int64)
        if cache_dir is None:
            neighbours = self._search(index, vectors, own_rows, progress)
        else:
            folder = Path(cache_dir) / "indexes" / self._fingerprint / "neighbours"
            meta = self._neighbours_key(vectors, own_rows)
            name = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
            payload, meta_path = folder / f"{name}.npz", folder / f"{name}.json"
            neighbours = read_entry(payload, meta_path, meta, lambda data: _Neighbours.decode(
                data, len(query_images), len(self.support), self.max_k + 1))
            if neighbours is None:
                neighbours = self._search(index, vectors, own_rows, progress)
                write_entry(payload, neighbours.encode(), meta_path, meta)
        for image_queries, (ranked, similarity) in zip(query_images, neighbours.per_image()):
            for q in image_queries:
                own = ranked != self._by_id.get(q.id, -1)
                self._top[q.id] = ranked[own][: self.max_k]
                self._similarity[q.id] = similarity[own][: self.max_k]

    def _neighbours_key(self, vectors: np.ndarray, own_rows: np.ndarray) -> dict:
        """Everything the search's result depends on: the support index (its fingerprint: the
        support's examples and image bytes, the encoder), the query images' embeddings (their
        values, not their names), the query images' own rows to leave out, max_k, the FAISS
        version (its sums may round differently) and this code's `_NEIGHBOURS_VERSION`."""
        import faiss

        return {
            "version": _NEIGHBOURS_VERSION,
            "index_fingerprint": self._fingerprint,
            "query_images": len(vectors),
            "query_vectors_sha256": hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest(),
            "own_rows_sha256": hashlib.sha256(own_rows.tobytes()).hexdigest(),
            "max_k": self.max_k,
            "faiss": faiss.__version__,
        }

    def _search(self, index: faiss.IndexFlatIP, vectors: np.ndarray, own_rows: np.ndarray, progress: bool) -> _Neighbours:
        """The best max_k + 1 support positions of each query image (`own_rows` left out), widening
        the search where its cut-off may hide a tie."""
        # Rank max_k + 1 per query image: enough to drop a query's own id and still have max_k.
        need = self.max_k + 1
        found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(vectors)
        pending = np.arange(len(vectors))
        k_search = min(index.ntotal, need + 1)  # + the query's own image; wider only on ties at the cut
        with tqdm(total=len(vectors), desc="retrieve", unit="img", disable=not progress) as bar:
            while len(pending):
                unresolved = []
                complete = k_search == index.ntotal
                for start in range(0, len(pending), _SEARCH_BATCH):
                    chunk = pending[start : start + _SEARCH_BATCH]
                    scores, rows = index.search(vectors[chunk], k_search)
                    skip = np.isin(chunk[:, None] * index.ntotal + rows, own_rows)
                    resolved, ranked, similarity = _rank(scores, rows, skip, self._image_rows, need, complete)
                    unresolved.append(chunk[~resolved])
                    for c, image_ranked, image_similarity in zip(chunk[resolved].tolist(), ranked, similarity):
                        found[c] = image_ranked, image_similarity
                    bar.update(int(resolved.sum()))
                pending = np.concatenate(unresolved)
                k_search = min(index.ntotal, 2 * k_search)
        return _Neighbours.of(found)


_NEIGHBOURS_VERSION = 1  # raise when what `_search` returns for the same inputs changes


@dataclass(frozen=True)
class _Neighbours:
    """What the RICES search found, query image after query image: image c's best support
    positions (most similar first, ties by support order) are `positions[starts[c] : starts[c] +
    counts[c]]`, their similarities the same slice of `similarity`."""

    positions: np.ndarray
    similarity: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, found: list[tuple[np.ndarray, np.ndarray]]) -> _Neighbours:
        counts = np.array([len(positions) for positions, _ in found], dtype=np.int64)
        if not found:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), counts)
        positions, similarity = (np.concatenate(parts) for parts in zip(*found))
        return cls(positions.astype(np.int64), similarity.astype(np.float32), counts)

    def per_image(self) -> list[tuple[np.ndarray, np.ndarray]]:
        bounds = np.cumsum(self.counts)[:-1]
        return list(zip(np.split(self.positions, bounds), np.split(self.similarity, bounds)))

    def encode(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, positions=self.positions, similarity=self.similarity, counts=self.counts)
        return buffer.getvalue()

    @classmethod
    def decode(cls, data: bytes, n_images: int, n_support: int, need: int) -> _Neighbours:
        """Raises ValueError unless `data` holds `n_images` images' lists of at most `need` support
        positions below `n_support`, with finite similarities."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                neighbours = cls(arrays["positions"], arrays["similarity"], arrays["counts"])
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"is not a neighbours file ({error})") from None
        p, s, c = neighbours.positions, neighbours.similarity, neighbours.counts
        if not (p.dtype == c.dtype == np.int64 and s.dtype == np.float32 and p.ndim == s.ndim == c.ndim == 1
                and len(c) == n_images and len(p) == len(s) == c.sum() and ((c >= 0) & (c <= need)).all()
                and ((p >= 0) & (p < n_support)).all() and np.isfinite(s).all()):
            raise ValueError(f"does not hold the neighbours of {n_images} query images among {n_support} examples")
        return neighbours


@dataclass(frozen=True)
class _ImageRows:
    """The support positions of the examples about each distinct support image (a row of the RICES
    index), as one flat array, so a search batch's rows expand to their examples in a few NumPy
    calls: row r's positions, in support order, are `positions[starts[r] : starts[r] + counts[r]]`."""

    positions: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def grouping(cls, row_of_position: np.ndarray, n_rows: int) -> _ImageRows:
        """From each support position's image row."""
        counts = np.bincount(row_of_position, minlength=n_rows)
        return cls(np.argsort(row_of_position, kind="stable"), np.cumsum(counts) - counts, counts)

    def of(self, row: int) -> np.ndarray:
        return self.positions[self.starts[row] : self.starts[row] + self.counts[row]]


def _rank(scores: np.ndarray, rows: np.ndarray, skip: np.ndarray, image_rows: _ImageRows, need: int,
          complete: bool) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """For each searched query image (a row of FAISS's `scores` and `rows`; `skip` marks the rows
    of the query's own image, left out) the `need` best support positions by (similarity desc,
    support order) and their similarities. Returns `resolved` (per query image: False where the
    search may have cut off a tie or better) and, for the resolved images in order, their positions
    and similarities. One pass over the whole batch: per-image NumPy calls cost more than the work."""
    owner, column = np.nonzero((rows >= 0) & ~skip)  # image-major, then search rank
    kept = rows[owner, column]
    lengths = image_rows.counts[kept]
    ends = np.cumsum(lengths)
    within = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)
    positions = image_rows.positions[np.repeat(image_rows.starts[kept], lengths) + within]
    owners = np.repeat(owner, lengths)
    similarity = np.repeat(scores[owner, column], lengths)
    if complete:
        resolved = np.ones(len(rows), dtype=bool)
    else:  # unsearched images score <= the last searched one: only strictly better candidates are certain
        better = np.bincount(owners[similarity > scores[owners, -1]], minlength=len(rows))
        resolved = better >= need
    order = np.lexsort((positions, -similarity, owners))
    ranked_owner = owners[order]
    first = np.searchsorted(ranked_owner, np.arange(len(rows)))  # where each image's candidates begin
    best = order[(np.arange(len(order)) - first[ranked_owner] < need) & resolved[ranked_owner]]
    bounds = np.searchsorted(owners[best], np.flatnonzero(resolved)[1:])
    return resolved, np.split(positions[best], bounds), np.split(similarity[best], bounds)


def build_selector(
    settings: ShotSettings,
    support: ExampleSet,
    queries: ExampleSet,
    max_k: int,
    encoder: ImageEncoder | None,
    cache_dir: Path | None,
    batch_size: int = 32,
    progress: bool = True,
) -> ShotSelector:
    """A selector ready to give up to `max_k` shots to each example of `queries`.

    Raises `UserError` when some query would have fewer than `max_k` eligible support examples.
    For RICES, embeds (or loads) the support index and the query images and retrieves every
    query's neighbours now, so `select` is a lookup. `encoder` may be None for random selection.
    """
    if max_k < 0:
        raise ValueError(f"max_k must be 0 or more, got {max_k}")
    if settings.selection == "random":
        selector: ShotSelector = RandomSelector(settings, support, max_k, queries)
        selector._check_enough(queries.examples)
        return selector
    if encoder is None:
        raise ValueError("RICES shot selection needs an image encoder")
    fingerprint = embedding_fingerprint(support, encoder.name)
    selector = RicesSelector(settings, support, max_k, queries, encoder.name, fingerprint)
    selector._check_enough(queries.examples)
    if max_k == 0 or len(queries) == 0:
        return selector
    index, image_ids, fingerprint = load_or_build_index(support, encoder, batch_size, cache_dir, progress)
    query_images = queries.unique_images()
    query_fingerprint = embedding_fingerprint(queries, encoder.name, len(query_images))
    if query_fingerprint == fingerprint:  # same split on both sides: reuse the index's vectors
        vectors = index.reconstruct_n(0, index.ntotal)
    else:
        vectors = embed(query_images, encoder, batch_size, cache_dir, query_fingerprint, "embed queries", progress)
    selector.retrieve(index, image_ids, queries, vectors, cache_dir, progress)
    return selector


class ZeroShot:
    """The selector of zero-shot prompts: no shots (`none`), or Flamingo's zero-shot (`text-only`):
    the first two support examples, the same for every query (as the IDEFICS authors chose them),
    shown without their images (`Example.without_image`). `describe` records which they are."""

    def __init__(self, style: str = "none", support: ExampleSet | None = None):
        self.style = style
        chosen = support.examples[:TEXT_ONLY_SHOTS] if style == "text-only" and support is not None else ()
        self.shots = [example.without_image() for example in chosen]

    def select(self, query: Example, k: int) -> list[Example]:
        return list(self.shots)

    def describe(self) -> dict:
        return {"zero_shot": self.style, "text_only_shots": [shot.id for shot in self.shots]} if self.shots else {}

    def similarities(self, query: Example, k: int) -> list[float | None]:
        return [None] * len(self.shots)
