"""Overhead: the fraction of a run's wall time spent outside model forward passes, on the small
random IDEFICS (benchmarks/common.py): a whole `idefics_eval.api.evaluate` run of VQAv2 (bundled
sample) at 32 RICES shots with the task's settings (3 beams) - data loading, preprocessing,
retrieval, prompt building, decoding bookkeeping, metric and writing included. Forward time is the
time inside the model's forward, its vision tower's and its resampler's (outermost call counted).

The same run with the plain path (`model.generate` on pixels) is timed too, on the first 4 queries
with --quick (it is ~10x slower): speedup = plain seconds a query / ours, and identical = the plain
run's predictions equal ours on the queries it ran.

Usage: python benchmarks/overhead.py [--quick]
Last line: RESULT name=overhead speedup=<plain/ours> identical=<bool> outside_forward=<fraction> ...
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from unittest import mock

from common import peak_rss_mib, result_line, small_model

from idefics_eval import engine
from idefics_eval.api import evaluate
from idefics_eval.predictions import read_predictions


class ForwardClock:
    def __init__(self, modules):
        self.depth, self.seconds, self._start = 0, 0.0, 0.0
        for module in modules:
            module.register_forward_pre_hook(self.enter)
            module.register_forward_hook(self.leave)

    def enter(self, *args):
        if self.depth == 0:
            self._start = time.perf_counter()
        self.depth += 1

    def leave(self, *args):
        self.depth -= 1
        if self.depth == 0:
            self.seconds += time.perf_counter() - self._start


def run(model, processor, limit: int, folder: Path, profile: bool = False):
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    rows = evaluate(model, processor, ["vqav2"], shots=[32], limit=limit, demo_data=True, output_dir=folder, batch_size=8)
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - start
    predictions = {p.id: p.prediction for path in folder.rglob("*.jsonl") for p in read_predictions(path)}
    return wall, predictions, rows, profiler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 queries instead of 32")
    parser.add_argument("--profile", action="store_true", help="print the top functions of our run by cumulative time")
    options = parser.parse_args()
    limit = 16 if options.quick else 32
    plain_limit = 4 if options.quick else limit
    model, processor = small_model()
    clock = ForwardClock([model, model.model.vision_model, model.model.perceiver_resampler])
    with tempfile.TemporaryDirectory() as scratch:
        clock.seconds = 0.0
        ours_wall, ours, rows, profiler = run(model, processor, limit, Path(scratch) / "ours", options.profile)
        ours_forward = clock.seconds
        clock.seconds = 0.0
        with mock.patch.object(engine.Generator, "generate", engine.Generator.generate_plain):
            plain_wall, plain, _, _ = run(model, processor, plain_limit, Path(scratch) / "plain")
        plain_forward = clock.seconds
    outside = 1 - ours_forward / ours_wall
    print(f"{limit} queries, 32 shots, 3 beams: ours {ours_wall:.1f} s wall, {ours_forward:.1f} s in forward passes "
          f"({outside:.1%} outside); plain path on {plain_limit} queries {plain_wall:.1f} s wall, {plain_forward:.1f} s in forward passes")
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        print(text.getvalue())
    identical = len(ours) == limit and len(plain) == plain_limit and all(ours[key] == value for key, value in plain.items())
    print(result_line("overhead", (plain_wall / plain_limit) / (ours_wall / limit), identical, outside_forward=outside,
                      ours_wall_s=ours_wall, forward_s=ours_forward, queries=limit, peak_rss_mib=peak_rss_mib()))


if __name__ == "__main__":
    main()
