"""Generation: VQAv2 (the bundled sample), 32 retrieved (RICES) shots, 3 beams (the task's setting;
--beams 1 for greedy), on the small random IDEFICS (benchmarks/common.py; with --family F, family
F's tiny random model), our fast path against the model card's recipe: the processor with all 33
images as pixels + `model.generate`, one query at a time.

Also measured, on the same batches, with as many decoding steps as our loop ran:
* `lm`: the language model's own passes, as transformers runs them: the prompt once per prompt,
  then one forward pass per step over every beam as a row of its own (the prompt's cache copied to
  the beams once), on precomputed image features; no search bookkeeping, no cache reordering.
  `floor` = our time / that time.
* `replay`: our loop's own forward passes alone (the same calls, no bookkeeping);
  `loop_overhead` = our time / that time: what the loop adds around its passes.
Baseline, ours and both replays are timed batch by batch, interleaved, so a noisy shared machine
slows them alike.

Usage: python benchmarks/generate.py [--quick] [--beams 3] [--batch-size 8] [--queries N] [--family F]
Last line: RESULT name=generate speedup=<naive/ours> identical=<bool> floor=<ours/lm> loop_overhead=<ours/replay> ...
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from common import Timer, add_family_option, family_loaded, peak_rss_mib, result_line

from idefics_eval.engine import Generator, batches_by_length
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import VisionTowerEncoder
from idefics_eval.model_requests import fit_prompt
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.shots import ShotSettings, build_selector


class RecordedForward:
    """Generator.forward, recording each call's arguments (the cache aside) for a replay."""

    def __init__(self, generator: Generator):
        self.forward, self.calls = generator.forward, []

    def __call__(self, *args, **kwargs):
        kept = {key: value for key, value in kwargs.items() if key != "cache"}
        self.calls.append((args[:2], kept))  # inputs, features; the replay rebuilds the cache
        return self.forward(*args, **kwargs)


def replay(generator: Generator, forward, calls: list) -> None:
    """The recorded forward passes again, each on the cache the one before left."""
    cache = None
    with generator.adapter.decoding(*calls[0][0]):
        for args, kwargs in calls:
            out = forward(*args, cache=cache, **kwargs)
            cache = out.cache
            out.logits.float()


def model_passes(adapter, forward, inputs: dict, features, steps: int, beams: int) -> None:
    """The language model's own passes for `steps` decoding steps: the prompt once, its cache copied
    to each beam, then one pass per step on every beam's row (the token fed does not change the time)."""
    out = forward(inputs, features)
    cache = out.cache
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.repeat_interleave(beams, 0), layer.values.repeat_interleave(beams, 0)
    attention_mask = inputs["attention_mask"].repeat_interleave(beams, 0)
    extra = {key: value.repeat_interleave(beams, 0) for key, value in adapter.step_inputs(inputs).items()}
    if adapter.family == "idefics":  # every step cross-attends to its row's images; other families read them once
        features = features.view(inputs["input_ids"].shape[0], -1, *features.shape[1:]).repeat_interleave(beams, 0).flatten(0, 1)
    token = inputs["input_ids"][:, -1:].repeat_interleave(beams, 0)
    for _ in range(steps):
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=-1)
        out = forward({"input_ids": token, "attention_mask": attention_mask, **extra}, features, cache=cache)
        out.logits[:, -1].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 queries instead of all 32")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shots", type=int, default=32)
    parser.add_argument("--beams", type=int, default=3)
    add_family_option(parser)
    options = parser.parse_args()
    queries = options.queries or (16 if options.quick else 32)

    torch.manual_seed(0)
    scratch_dir = tempfile.TemporaryDirectory()
    loaded = family_loaded(options.family, Path(scratch_dir.name))
    with tempfile.TemporaryDirectory() as scratch:
        p = prepare(RunConfig(task="vqav2", shots=(options.shots,), output_dir=Path(scratch), demo=True,
                              limit=queries, progress=False), preloaded=True)
    selector = build_selector(ShotSettings("rices"), p.support, p.queries, options.shots, VisionTowerEncoder(loaded), None)
    settings = dataclasses.replace(p.generation, num_beams=options.beams)
    requests = [fit_prompt(p, loaded, selector.select(q, options.shots), q, settings.max_new_tokens) for q in p.queries.examples]
    prompts = [r[0] for r in requests]
    images = [len(prompt.images) for prompt in prompts]
    print(f"{len(prompts)} queries, {min(images)}-{max(images)} images and {min(r[2] for r in requests)}-"
          f"{max(r[2] for r in requests)} tokens a prompt; {options.beams} beam(s), max_new_tokens={settings.max_new_tokens}; "
          f"torch threads: {torch.get_num_threads()}")

    generator = Generator(loaded, settings, ImageFeatureCache())
    tokenizer = loaded.processor.tokenizer
    naive_t, ours_t, lm_t, replay_t = Timer(), Timer(), Timer(), Timer()
    naive_text, ours_text = {}, {}
    generator.generate_ids_plain(prompts[:1])  # warm-up of both paths (one-off allocations), untimed
    generator.generate_ids_fast(prompts[:1], features=generator.image_features(prompts[:1]).zero_())
    recorded = generator.forward = RecordedForward(generator)
    for indices in batches_by_length([(n, r[2]) for n, r in zip(images, requests)], options.batch_size):
        batch = [prompts[i] for i in indices]
        with naive_t:
            for i in indices:
                naive_text[i] = tokenizer.batch_decode(generator.generate_ids_plain([prompts[i]]), skip_special_tokens=True)[0]
        recorded.calls.clear()
        with ours_t:
            tokens = generator.generate_ids_fast(batch)
            texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
        ours_text.update(zip(indices, texts))
        calls = list(recorded.calls)
        inputs, features = generator.text_inputs(batch), generator.image_features(batch)  # precomputed, untimed
        with torch.no_grad(), lm_t:
            model_passes(generator.adapter, recorded.forward, inputs, features, len(calls) - 1, options.beams)
        with torch.no_grad(), replay_t:
            replay(generator, recorded.forward, calls)
        print(f"  batch of {len(batch)}: naive {naive_t.seconds:.1f} s, ours {ours_t.seconds:.1f} s, "
              f"lm {lm_t.seconds:.1f} s, replay {replay_t.seconds:.1f} s (cumulative)", flush=True)
    identical = all(naive_text[i] == ours_text[i] for i in range(len(prompts)))
    stats = generator.image_cache.stats
    n = len(prompts)
    print(f"naive {naive_t.seconds / n:.3f} s/query, ours {ours_t.seconds / n:.3f} s/query, the language model's own "
          f"passes {lm_t.seconds / n:.3f} s/query, our passes alone {replay_t.seconds / n:.3f} s/query; "
          f"image cache: {stats.misses} images encoded, {stats.hits} hits")
    print(result_line("generate", naive_t.seconds / ours_t.seconds, identical, family=options.family, floor=ours_t.seconds / lm_t.seconds,
                      loop_overhead=ours_t.seconds / replay_t.seconds, beams=options.beams,
                      naive_s_per_query=naive_t.seconds / n, ours_s_per_query=ours_t.seconds / n,
                      lm_s_per_query=lm_t.seconds / n, replay_s_per_query=replay_t.seconds / n, queries=n,
                      peak_rss_mib=peak_rss_mib()))

if __name__ == "__main__":
    main()
