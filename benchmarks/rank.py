"""Ranking: ImageNet-1k (the bundled sample), 1,000 class names as candidates, 4 random shots, on
the small random IDEFICS (benchmarks/common.py; with --family F, family F's tiny random model):
the prefix-cached ranker (`Ranker.loglikelihoods`: images once through the image cache, the
shared prefix once with the KV cache, candidates' own tokens in batches) against one full forward
pass per candidate (`Ranker.loglikelihoods_full`, batch size 1).

With --quick the baseline runs on every 20th candidate (50 of 1,000) and its time is scaled by
20 (each candidate is an independent forward pass of about the same length); log-likelihoods are
compared on those candidates, and argmax among them. Without --quick the baseline scores all 1,000.

Usage: python benchmarks/rank.py [--quick] [--queries N] [--family F]
`cpu_speedup` is the same ratio in CPU time, which other programs sharing the cores move less.

Last line: RESULT name=rank speedup=<baseline/ours> identical=<bool> cpu_speedup=... max_abs_diff=... peak_rss_mib=...
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import CpuTimer, add_family_option, family_loaded, peak_rss_mib, result_line

from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.ranking import Ranker
from idefics_eval.model_requests import candidate_reserve, candidates_of, fit_prompt, shot_answer
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.shots import ShotSettings, build_selector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--shots", type=int, default=4)
    add_family_option(parser)
    options = parser.parse_args()
    queries = options.queries or (1 if options.quick else 2)
    stride = 20 if options.quick else 1

    scratch_dir = tempfile.TemporaryDirectory()
    loaded = family_loaded(options.family, Path(scratch_dir.name))
    with tempfile.TemporaryDirectory() as scratch:
        p = prepare(RunConfig(task="imagenet", shots=(options.shots,), output_dir=Path(scratch), demo=True,
                              limit=queries, selection="random", progress=False), preloaded=True)
    selector = build_selector(ShotSettings("random"), p.support, p.queries, options.shots, None, None)
    ours = Ranker(loaded, batch_size=64, image_cache=ImageFeatureCache())
    baseline = Ranker(loaded, batch_size=1, image_cache=ImageFeatureCache(0))
    answer = shot_answer(p.spec)
    ours_t, base_t = CpuTimer(), CpuTimer()
    max_diff, identical = 0.0, True
    for query in p.queries.examples:
        candidates = candidates_of(p.spec, query)
        context, _, length = fit_prompt(p, loaded, selector.select(query, options.shots), query,
                                         candidate_reserve(loaded, candidates))
        shots = sorted((s for s in p.support.examples if s.id in set(context.shot_ids)), key=lambda s: context.shot_ids.index(s.id))
        continuations = [p.template.render(shots, query, answer, candidate=c) for c in candidates]
        normalize = p.spec.candidates.normalize
        with ours_t:
            scores = ours.loglikelihoods(context, continuations, normalize)
        subset = list(range(0, len(candidates), stride))
        with base_t:
            reference = baseline.loglikelihoods_full(context, [continuations[i] for i in subset], normalize)
        diffs = [abs(scores[i] - r) for i, r in zip(subset, reference)]
        max_diff = max(max_diff, max(diffs))
        best_ours = max(subset, key=lambda i: (scores[i], -i))
        best_ref = subset[max(range(len(subset)), key=lambda j: (reference[j], -j))]
        identical &= best_ours == best_ref and max(diffs) <= 1e-4
        print(f"  query {query.id}: {len(candidates)} candidates, {len(context.images)} images, {length} context tokens; "
              f"ours {ours_t.seconds:.1f} s, baseline {base_t.seconds:.1f} s on {len(subset)} (cumulative)", flush=True)
    base_full = base_t.seconds * stride
    print(f"ours {ours_t.seconds / queries:.2f} s/query; one forward per candidate {base_full / queries:.1f} s/query"
          + (f" (measured on every {stride}th candidate, scaled by {stride})" if stride > 1 else ""))
    print(result_line("rank", base_full / ours_t.seconds, identical, family=options.family,
                      cpu_speedup=base_t.cpu_seconds * stride / ours_t.cpu_seconds, max_abs_diff=f"{max_diff:.2e}",
                      ours_s_per_query=ours_t.seconds / queries, baseline_s_per_query=base_full / queries,
                      baseline_sampled_every=stride, queries=queries, peak_rss_mib=peak_rss_mib()))


if __name__ == "__main__":
    main()
