"""Generation: VQAv2 (the bundled sample), 32 retrieved (RICES) shots, greedy, on the small random
IDEFICS (benchmarks/common.py), our fast path against the model card's recipe: the processor with
all 33 images as pixels + `model.generate`, one query at a time.

Also measured, on the same batches: the language-model forward passes alone (prefill + the same
decoding steps on precomputed image features); `floor` = our time / that time, the limit on this
hardware. Baseline, ours and floor are timed batch by batch, interleaved, so a noisy shared
machine slows all three alike.

Usage: python benchmarks/generate.py [--quick] [--batch-size 8] [--queries N]
Last line: RESULT name=generate speedup=<naive/ours> identical=<bool> floor=<ours/lm> ...
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from common import Timer, peak_rss_mib, result_line, small_loaded

from idefics_eval.engine import Generator, batches_by_length
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import VisionTowerEncoder
from idefics_eval.model_requests import fit_prompt
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.shots import ShotSettings, build_selector


def lm_alone(generator: Generator, inputs: dict, features: torch.Tensor, tokens: torch.Tensor) -> None:
    """The forward passes of a greedy run that produced `tokens`, nothing else: prefill, then one
    step per generated token but the last."""
    attention_mask = inputs["attention_mask"]
    out = generator.forward(inputs["input_ids"], attention_mask, features, inputs["image_attention_mask"])
    last_mask = inputs["image_attention_mask"][:, -1:]
    for step in range(tokens.shape[1] - 1):
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=-1)
        out = generator.forward(tokens[:, step : step + 1], attention_mask, features, last_mask, out.cache)
        out.logits[:, -1].float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 queries instead of all 32")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shots", type=int, default=32)
    options = parser.parse_args()
    queries = options.queries or (16 if options.quick else 32)

    torch.manual_seed(0)
    loaded = small_loaded()
    with tempfile.TemporaryDirectory() as scratch:
        p = prepare(RunConfig(task="vqav2", shots=(options.shots,), output_dir=Path(scratch), demo=True,
                              limit=queries, progress=False), preloaded=True)
    selector = build_selector(ShotSettings("rices"), p.support, p.queries, options.shots, VisionTowerEncoder(loaded), None)
    settings = dataclasses.replace(p.generation, num_beams=1)
    requests = [fit_prompt(p, loaded, selector.select(q, options.shots), q, settings.max_new_tokens) for q in p.queries.examples]
    prompts = [r[0] for r in requests]
    images = [len(prompt.images) for prompt in prompts]
    print(f"{len(prompts)} queries, {min(images)}-{max(images)} images and {min(r[2] for r in requests)}-"
          f"{max(r[2] for r in requests)} tokens a prompt; greedy, max_new_tokens={settings.max_new_tokens}; "
          f"torch threads: {torch.get_num_threads()}")

    generator = Generator(loaded, settings, ImageFeatureCache())
    tokenizer = loaded.processor.tokenizer
    naive_t, ours_t, floor_t = Timer(), Timer(), Timer()
    naive_text, ours_text = {}, {}
    generator.generate_ids_plain(prompts[:1])  # warm-up of both paths (one-off allocations), untimed
    generator.generate_ids_fast(prompts[:1], features=generator.image_features(prompts[:1]).zero_())
    for indices in batches_by_length([(n, r[2]) for n, r in zip(images, requests)], options.batch_size):
        batch = [prompts[i] for i in indices]
        with naive_t:
            for i in indices:
                naive_text[i] = tokenizer.batch_decode(generator.generate_ids_plain([prompts[i]]), skip_special_tokens=True)[0]
        with ours_t:
            tokens = generator.generate_ids_fast(batch)
            texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
        ours_text.update(zip(indices, texts))
        inputs, features = generator.text_inputs(batch), generator.image_features(batch)  # precomputed, untimed
        with torch.no_grad(), floor_t:
            lm_alone(generator, inputs, features, tokens)
        print(f"  batch of {len(batch)}: naive {naive_t.seconds:.1f} s, ours {ours_t.seconds:.1f} s, "
              f"lm alone {floor_t.seconds:.1f} s (cumulative)", flush=True)
    identical = all(naive_text[i] == ours_text[i] for i in range(len(prompts)))
    stats = generator.image_cache.stats
    n = len(prompts)
    print(f"naive {naive_t.seconds / n:.3f} s/query, ours {ours_t.seconds / n:.3f} s/query, language model alone "
          f"{floor_t.seconds / n:.3f} s/query; image cache: {stats.misses} images encoded, {stats.hits} hits")
    print(result_line("generate", naive_t.seconds / ours_t.seconds, identical, floor=ours_t.seconds / floor_t.seconds,
                      naive_s_per_query=naive_t.seconds / n, ours_s_per_query=ours_t.seconds / n,
                      lm_s_per_query=floor_t.seconds / n, queries=n, peak_rss_mib=peak_rss_mib()))


if __name__ == "__main__":
    main()
