"""Retrieval: RICES shots for 10,000 queries from 100,000 support images, k=32. Our path (shots.py:
embed via the encoder, normalise, build the FAISS index, search, expand images to examples, drop
each query's own image and id, break ties by support order) against a plain FAISS flat
inner-product search of the same normalised vectors. Recall@32 of our shots against exact
search (the default index is exact: must be 1.0), and `identical`: every query's shots, most
similar first, are the bare search's 32 rows in its order (exact ties by support order), on both runs. Then the second run, as
evaluating the next checkpoint on the same queries: the saved index and query embeddings are read
from the cache folder, nothing is embedded, and the saved neighbours spare the search
(`searches_second_run=0`).

Embeddings are random unit vectors (512-d, CLIP ViT-B/32's width) handed out by a stand-in encoder,
so the benchmark measures retrieval, not an image encoder.

Usage: python benchmarks/retrieval.py [--quick] [--support N] [--queries N] [--dim D]
Last line: RESULT name=retrieval speedup=<faiss/ours, first run> identical=<bool> recall_at_32=...
second_run_speedup=<faiss/ours, second run> reuse=... searches_second_run=...
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
        scores, exact = index.search(q, K)

    searches = counting_searches()
    with tempfile.TemporaryDirectory() as cache:
        ours_t = Timer()
        with ours_t:
            selector = build_selector(ShotSettings("rices"), support, queries, K, encoder, Path(cache), batch_size=4096)
            shots = [selector.select(query, K) for query in queries.examples]
        first_calls, first_searches = encoder.calls, len(searches)
        encoder.calls = 0
        second_t = Timer()
        with second_t:
            again = build_selector(ShotSettings("rices"), support, queries, K, encoder, Path(cache), batch_size=4096)
            shots_again = [again.select(query, K) for query in queries.examples]
        second_calls, second_searches = encoder.calls, len(searches) - first_searches

    # Exact float ties (one query in 2,000 here) come back in FAISS's heap order; RICES breaks them by
    # support order, so the bare search's rows are compared in that order.
    bare = [row.tolist() for row in np.take_along_axis(exact, np.lexsort((exact, -scores)), axis=1)]
    hits = sum(len({int(e.image_id[1:]) for e in chosen} & set(row)) for chosen, row in zip(shots, bare))
    recall = hits / (K * options.queries)
    # Shots come most similar last; each support image has one question, the queries none of the support's images.
    identical = all([int(e.image_id[1:]) for e in chosen[::-1]] == row for run in (shots, shots_again)
                    for chosen, row in zip(run, bare))
    reuse = second_calls == 0 and second_searches == 0
    print(f"{options.support} support, {options.queries} queries, {options.dim}-d, k={K}: plain FAISS {base_t.seconds:.2f} s; "
          f"ours: first run {ours_t.seconds:.2f} s (ratio {base_t.seconds / ours_t.seconds:.2f}), second run, saved index "
          f"and neighbours, {second_t.seconds:.2f} s (ratio {base_t.seconds / second_t.seconds:.2f}); images embedded: "
          f"first run {first_calls}, second run {second_calls}; FAISS searches: first run {first_searches}, second run "
          f"{second_searches}")
    print(result_line("retrieval", base_t.seconds / ours_t.seconds, identical and recall == 1.0,
                      recall_at_32=recall, second_run_speedup=base_t.seconds / second_t.seconds,
                      reuse=str(reuse).lower(), embedded_second_run=second_calls, searches_second_run=second_searches,
                      peak_rss_mib=peak_rss_mib()))


def counting_searches() -> list[int]:
    """Counts `faiss.IndexFlatIP.search` calls from here on (one entry per call)."""
    calls: list[int] = []
    search = faiss.IndexFlatIP.search

    def counted(index, *args, **kwargs):
        calls.append(1)
        return search(index, *args, **kwargs)

    faiss.IndexFlatIP.search = counted
    return calls


if __name__ == "__main__":
    main()
