"""Retrieval: RICES shots for 10,000 queries from 100,000 support images, k=32. Our path (shots.py:
embed via the encoder, normalise, build the FAISS index, search, expand images to examples, drop
each query's own image and id, break ties by support order) against a plain FAISS flat
inner-product search of the same normalised vectors. Recall@32 of our shots against exact
search (the default index is exact: must be 1.0). Then the second run: the saved index is loaded
from the cache folder, the support set is not embedded again.

Embeddings are random unit vectors (512-d, CLIP ViT-B/32's width) handed out by a stand-in encoder,
so the benchmark measures retrieval, not an image encoder.

Usage: python benchmarks/retrieval.py [--quick] [--support N] [--queries N] [--dim D]
Last line: RESULT name=retrieval speedup=<faiss/ours> identical=<bool> recall_at_32=... reuse=...
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from common import Timer, peak_rss_mib, result_line

from idefics_eval.examples import Example, ExampleSet
from idefics_eval.shots import ShotSettings, build_selector

K = 32


@dataclass(frozen=True)
class RowImage:
    """An 'image' that is a row of the embedding table (loading it is free; its bytes are the row's)."""

    table: str
    row: int
    vector: np.ndarray = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.table}:{self.row}"

    def load(self):
        return self

    def digest(self) -> str:  # what keys the RICES caches (a file's bytes, for a real image)
        return hashlib.sha256(self.vector.tobytes()).hexdigest()


class TableEncoder:
    def __init__(self, tables: dict[str, np.ndarray]):
        self.tables = tables
        self.name = "table-encoder"
        self.calls = 0

    def encode(self, images):
        self.calls += len(images)
        return np.stack([self.tables[image.table][image.row] for image in images])


def split(name: str, table: str, vectors: np.ndarray) -> ExampleSet:
    return ExampleSet(name, "synthetic", [Example(id=f"{table}{i}", image_id=f"{table}{i}", image=RowImage(table, i, row),
                                                  fields={"question": "?"}, answers=("a",)) for i, row in enumerate(vectors)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="same sizes (the run takes about a minute)")
    parser.add_argument("--support", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    support_vectors = rng.standard_normal((options.support, options.dim), dtype=np.float32)
    query_vectors = rng.standard_normal((options.queries, options.dim), dtype=np.float32)
    encoder = TableEncoder({"s": support_vectors, "q": query_vectors})
    support, queries = split("support", "s", support_vectors), split("queries", "q", query_vectors)

    base_t = Timer()
    with base_t:  # plain FAISS: normalise, flat index, search
        s = support_vectors / np.linalg.norm(support_vectors, axis=1, keepdims=True)
        q = query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(options.dim)
        index.add(s)
        _, exact = index.search(q, K)

    with tempfile.TemporaryDirectory() as cache:
        ours_t = Timer()
        with ours_t:
            selector = build_selector(ShotSettings("rices"), support, queries, K, encoder, Path(cache), batch_size=4096)
            shots = [selector.select(query, K) for query in queries.examples]
        first_calls = encoder.calls
        encoder.calls = 0
        second_t = Timer()
        with second_t:
            again = build_selector(ShotSettings("rices"), support, queries, K, encoder, Path(cache), batch_size=4096)
            shots_again = [again.select(query, K) for query in queries.examples]
        second_calls = encoder.calls

    hits = sum(len({int(e.image_id[1:]) for e in chosen} & set(row.tolist())) for chosen, row in zip(shots, exact))
    recall = hits / (K * options.queries)
    same_again = all([e.id for e in a] == [e.id for e in b] for a, b in zip(shots, shots_again))
    # support images embedded on the second run: only the queries' (their .npy cache keys on the split)
    reuse = second_calls < first_calls and second_calls <= options.queries
    print(f"{options.support} support, {options.queries} queries, {options.dim}-d, k={K}: plain FAISS {base_t.seconds:.2f} s, "
          f"ours {ours_t.seconds:.2f} s (second run, saved index: {second_t.seconds:.2f} s); "
          f"images embedded: first run {first_calls}, second run {second_calls}")
    print(result_line("retrieval", base_t.seconds / ours_t.seconds, recall == 1.0 and same_again,
                      recall_at_32=recall, second_run_speedup=base_t.seconds / second_t.seconds,
                      reuse=str(reuse and same_again).lower(), embedded_second_run=second_calls,
                      peak_rss_mib=peak_rss_mib()))


if __name__ == "__main__":
    main()
