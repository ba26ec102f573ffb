"""The ImageNet demo's ranking: the canary (`--demo`), the bundled ImageNet sample, 4 random shots, the
1,000 class names as candidates, the run's default batch size (8), each query through the runner's
`ranked` (prompts, tokenisation, scoring, the sample log's fields). Ours (`Ranker.loglikelihoods`:
the candidates as a trie packed into a few passes on the prefix's cache, their tokens reused from
query to query) against the previous path kept as the reference (`Ranker.loglikelihoods_batched`:
the same prefix pass, then the candidates in padded batches of 8 rows).

Per query, interleaved: the reference at one thread, ours at one thread, ours at the default thread
count (`distributed.default_threads`: OMP_NUM_THREADS, else the cores the load average leaves free).
`speedup` is the reference's time over ours, both at one thread (`cpu_speedup`: the same in CPU
time, which a loaded machine moves less); `default_threads_ratio` is ours at one thread over ours
at the default count (>= 1: the default is no slower); `identical` says every
query ranked the same class first with every score within 1e-4. Run it as the demo runs, without
OMP_NUM_THREADS, to see the default at work.

With --family F (not idefics) the model is family F's tiny random checkpoint (benchmarks/common.py
`family_loaded`) in place of the canary, on the same data and shots: the canary is IDEFICS only. The
RESULT line names what ran: family=F model=canary|tiny-random.

Usage: python benchmarks/rank_demo.py [--queries N] [--shots K] [--family F]
Last line: RESULT name=rank_demo speedup=<reference/ours> identical=<bool> default_threads_ratio=... family=... model=... ...
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from common import CpuTimer, add_family_option, family_loaded, peak_rss_mib, result_line

from idefics_eval.distributed import default_threads
from idefics_eval.model_requests import ranked
from idefics_eval.models import CANARY_DIR, load_model
from idefics_eval.plan import RunConfig, prepare, with_bundled_data
from idefics_eval.ranking import Ranker
from idefics_eval.shots import ShotSettings, build_selector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--shots", type=int, default=4)
    add_family_option(parser, idefics="the trained canary, as --demo runs it")
    options = parser.parse_args()

    threads = default_threads()
    with tempfile.TemporaryDirectory() as scratch:
        canary = options.family == "idefics"
        loaded = load_model(str(CANARY_DIR)) if canary else family_loaded(options.family, Path(scratch))
        config = RunConfig(task="imagenet", shots=(options.shots,), output_dir=Path(scratch) / "run", demo=canary,
                           model=None if canary else loaded.name, limit=options.queries + 1, selection="random",
                           progress=False)
        p = prepare(with_bundled_data(config), preloaded=True)
    selector = build_selector(ShotSettings("random"), p.support, p.queries, options.shots, None, None)
    reference, ours = Ranker(loaded, batch_size=8), Ranker(loaded, batch_size=8)
    paths = {"reference": (reference.loglikelihoods_batched, 1), "ours": (ours.loglikelihoods, 1),
             "ours_default_threads": (ours.loglikelihoods, threads)}
    timers = {name: CpuTimer() for name in paths}
    identical, max_diff = True, 0.0
    warm, *queries = p.queries.examples
    for index, query in enumerate([warm, *queries]):
        shots = selector.select(query, options.shots)
        predictions = {}
        for name, (score, count) in paths.items():
            torch.set_num_threads(count)
            if index == 0:  # the first query warms both paths up (and fills ours' reuse) and is not timed
                predictions[name] = ranked(p, score, query, shots, [None] * len(shots), loaded)
                continue
            with timers[name]:
                predictions[name] = ranked(p, score, query, shots, [None] * len(shots), loaded)
        if index == 0:
            continue
        plain = predictions["reference"]
        for name in ("ours", "ours_default_threads"):
            diff = max(abs(a - b) for a, b in zip(plain.sample["scores"], predictions[name].sample["scores"]))
            max_diff = max(max_diff, diff)
            identical &= predictions[name].prediction == plain.prediction and diff <= 1e-4
        print(f"  query {query.id}: {plain.prediction!r}; " + ", ".join(f"{name} {t.seconds / index:.2f} s/query"
                                                                    for name, t in timers.items()), flush=True)
    n = len(queries)
    per_query = {name: t.seconds / n for name, t in timers.items()}
    cpu = {name: t.cpu_seconds / n for name, t in timers.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"reference {per_query['reference']:.3f} s/query, ours {per_query['ours']:.3f} s/query at one thread, "
          f"{per_query['ours_default_threads']:.3f} s/query at the default {threads} thread(s); load average {load:.1f}")
    print(result_line("rank_demo", per_query["reference"] / per_query["ours"], identical, family=options.family,
                      model="canary" if canary else "tiny-random",
                      cpu_speedup=cpu["reference"] / cpu["ours"],
                      default_threads_ratio=per_query["ours"] / per_query["ours_default_threads"], default_threads=threads,
                      max_abs_diff=f"{max_diff:.2e}", reference_s_per_query=per_query["reference"],
                      ours_s_per_query=per_query["ours"], ours_default_threads_s_per_query=per_query["ours_default_threads"],
                      reference_cpu_s_per_query=cpu["reference"], ours_cpu_s_per_query=cpu["ours"],
                      queries=n, load=load, peak_rss_mib=peak_rss_mib()))


if __name__ == "__main__":
    main()
