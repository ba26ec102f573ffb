"""GPU benchmark: a randomly initialised IDEFICS-9B-shaped model in bfloat16 (nothing downloaded),
our paths against the model card's recipe in the same run, on three workloads:

* `vqav2_0shot`, `vqav2_32shot`: VQAv2-shaped generation (the bundled VQAv2 sample, RICES shots
  from the model's own vision tower, the task's 3 beams and 15 new tokens). Ours: `Generator`'s
  fast path at the `--batch-size auto` choice. Recipe: the processor on the images + `model.generate`
  (`Generator.generate_ids_plain`), in batches of --recipe-batch-size.
* `imagenet`: ImageNet-shaped ranking (the bundled sample's queries, 4 random shots, each query
  scored against the 1,000 class names). Ours: `Ranker.loglikelihoods` (prefix cache) at the
  `--batch-size auto` choice. Recipe: one full forward pass (processor pixels included) per
  candidate (`Ranker.loglikelihoods_full`), in batches of --recipe-batch-size.

Printed per workload and path: queries/s, tokens/s (generation: the answers' new tokens; ranking: the
candidates' tokens scored), peak GPU memory (torch.cuda.max_memory_allocated, reset before each
path), achieved TFLOP/s and model FLOPs utilisation (MFU = model FLOPs / seconds / the device's peak
dense bfloat16 FLOP/s: 989 TFLOP/s on an H100 or H200, 312 on an A100; --peak-tflops for others),
and the batch size. Both paths are divided by the same model FLOPs, so their MFU ratio is their
speed ratio; the recipe's repeated work (the perceiver and the cross-attention's image projections
at every step, the prefix once per candidate) is not counted as useful work.

Model FLOPs, counted from the config's shapes (`ModelFlops`): 2 x multiply-adds of the matrix
products, nothing else (norms, softmax, rotary: a few percent). With d, f, L the language model's
width, MLP width and layers, C = ceil(L / cross_layer_interval) gated cross-attention layers, V the
vocabulary (+2 image tokens), I the image tokens a row attends to (images x 64 latents), dv, fv, Lv
the vision tower's width, MLP width and layers, P = (224 / 14)^2 + 1 patches, n latents, R
resampler blocks of h x e wide attention:
  a text token at context length c:  L (8 d^2 + 6 d f + 4 c d) + C (4 d^2 + 6 d f + 4 I d)
  a position whose logits are used:  2 d V
  a prompt's image keys and values:  C x 4 I dv d  (once per prompt)
  an image:  2 (3 x 14^2) dv (P - 1) + Lv (8 dv^2 + 4 dv fv) P + Lv 4 P^2 dv          (vision tower)
           + R [2 n dv h e + 4 (P + n) dv h e + 2 n h e dv + 4 n (P + n) h e + 16 n dv^2]  (resampler)
Generation: the prompt's tokens at their positions, its images once, then for each decoding step
its batch ran, one token per beam at context prompt + step (each with its logits). Ranking: the
context's tokens and images once, then each candidate's tokens after the context, each scored.

Usage (one GPU, about 3 minutes on an H200; see docs/performance.md):
    python benchmarks/gpu.py
    python benchmarks/gpu.py --tiny          # the same code, the demo's tiny shape, on CPU in seconds
Lines: `RESULT name=gpu_<workload> speedup=<recipe s / ours s> identical=<bool> ...` (one per
workload), then `RESULT name=gpu shape=... device=... total_s=...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from pathlib import Path

import torch

from common import peak_rss_mib, result_line

from idefics_eval.engine import Generator, batches_by_length, longest_first, resolve_batch_size, token_ids
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.model_requests import candidate_reserve, candidates_of, fit_prompt, shot_answer
from idefics_eval.models import LoadedModel, VisionTowerEncoder, weights_fingerprint
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.ranking import Ranker
from idefics_eval.shots import ShotSettings, build_selector

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense, per GPU (NVIDIA's data sheets)


def nine_b_config():
    """HuggingFaceM4/idefics-9b's shapes: LLaMA-7B (4096 wide, 32 layers, 32 heads, MLP 11008,
    vocabulary 32000 + 2 image tokens) with a gated cross-attention every 4 layers; CLIP ViT-H/14 on
    224-pixel images (1280 wide, 32 layers, 16 heads, MLP 5120); a perceiver resampler of 6 blocks,
    16 heads of 96, 64 latents. Gates open (alpha 1): the images reach the logits."""
    from transformers import IdeficsConfig

    return IdeficsConfig(
        vocab_size=32000, additional_vocab_size=2, hidden_size=4096, intermediate_size=11008,
        num_hidden_layers=32, num_attention_heads=32, cross_layer_interval=4, qk_layer_norms=False,
        max_position_embeddings=2048, use_resampler=True, alpha_initializer="ones", alpha_type="float",
        vision_config={"embed_dim": 1280, "image_size": 224, "patch_size": 14, "num_hidden_layers": 32,
                       "num_attention_heads": 16, "intermediate_size": 5120},
        perceiver_config={"use_resampler": True, "resampler_n_latents": 64, "resampler_depth": 6,
                          "resampler_n_heads": 16, "resampler_head_dim": 96},
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


def build(tiny: bool, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LoadedModel:
    """The random model, built directly on `device` in `dtype`, and a processor like the demo's
    (its byte-level BPE tokenizer, padded with unused tokens to the shape's vocabulary)."""
    from transformers import IdeficsForVisionText2Text, IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    from idefics_eval.demo.model import build_config, build_tokenizer

    config = build_config() if tiny else nine_b_config()
    default = torch.get_default_dtype()
    torch.manual_seed(seed)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = IdeficsForVisionText2Text(config)
    finally:
        torch.set_default_dtype(default)
    model = model.to(device=device, dtype=dtype).eval()
    model.config.name_or_path = f"idefics-eval/gpu-bench-{'tiny' if tiny else '9b'}-seed{seed}"
    image_size = config.vision_config.image_size
    processor = IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=image_size),
                                 tokenizer=build_tokenizer(config.vocab_size))
    processor.tokenizer.padding_side = "left"
    return LoadedModel(model, processor, model.config.name_or_path, weights_fingerprint(model), device, dtype)


@dataclasses.dataclass
class ModelFlops:
    """The model FLOPs of the module docstring, from an IdeficsConfig."""

    config: object

    def __post_init__(self):
        c, v, r = self.config, self.config.vision_config, self.config.perceiver_config
        self.d, self.f, self.layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
        self.cross = math.ceil(c.num_hidden_layers / c.cross_layer_interval)
        self.vocab = c.vocab_size + c.additional_vocab_size
        self.dv, self.fv, self.vision_layers = v.embed_dim, v.intermediate_size, v.num_hidden_layers
        self.patch = v.patch_size
        self.patches = (v.image_size // v.patch_size) ** 2 + 1
        self.latents = r.resampler_n_latents if c.use_resampler else self.patches
        self.resampler = (r.resampler_depth, r.resampler_n_heads * r.resampler_head_dim) if c.use_resampler else None

    def token(self, context: int, images: int) -> float:
        d, f, kv = self.d, self.f, images * self.latents
        return self.layers * (8 * d * d + 6 * d * f + 4 * context * d) + self.cross * (4 * d * d + 6 * d * f + 4 * kv * d)

    def logits(self) -> float:
        return 2 * self.d * self.vocab

    def image_key_values(self, images: int) -> float:
        return self.cross * 4 * images * self.latents * self.dv * self.d

    def image(self) -> float:
        dv, p = self.dv, self.patches
        vision = 2 * 3 * self.patch**2 * dv * (p - 1) + self.vision_layers * ((8 * dv * dv + 4 * dv * self.fv) * p + 4 * p * p * dv)
        if self.resampler is None:
            return vision
        depth, he = self.resampler
        n = self.latents
        block = 2 * n * dv * he + 4 * (p + n) * dv * he + 2 * n * he * dv + 4 * n * (p + n) * he + 16 * n * dv * dv
        return vision + depth * block

    def prompt(self, tokens: int, images: int) -> float:
        """A prompt's tokens at positions 1..tokens, its images once, and its last position's logits."""
        per_token = self.token(0, images) * tokens + self.layers * 4 * self.d * tokens * (tokens + 1) / 2
        return per_token + images * self.image() + self.image_key_values(images) + self.logits()

    def continuation(self, start: int, tokens: int, images: int) -> float:
        """`tokens` more tokens after `start`, each with its logits."""
        return sum(self.token(start + i + 1, images) + self.logits() for i in range(tokens))


class Clock:
    """Wall seconds, waiting for the GPU's queued work at both ends; peak GPU memory in between."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds = 0.0
        self.peak_mib = 0.0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mib = max(self.peak_mib, torch.cuda.max_memory_allocated() / 2**20)
        else:
            self.peak_mib = peak_rss_mib()  # the process's, so far: no per-path figure without a GPU
        self.seconds += time.perf_counter() - self._start


@dataclasses.dataclass
class PathResult:
    queries: int
    tokens: int
    flops: float
    clock: Clock
    batch_size: int

    def fields(self, prefix: str, peak_tflops: float | None) -> dict:
        seconds = self.clock.seconds
        tflops = self.flops / seconds / 1e12
        return {f"{prefix}_queries_per_s": self.queries / seconds, f"{prefix}_tokens_per_s": self.tokens / seconds,
                f"{prefix}_peak_mib": self.clock.peak_mib, f"{prefix}_tflops": f"{tflops:.4g}",
                f"{prefix}_mfu": f"{tflops / peak_tflops:.4g}" if peak_tflops else "na",
                f"{prefix}_batch_size": self.batch_size, f"{prefix}_queries": self.queries, f"{prefix}_s": seconds}


def answer_tokens(ids: torch.Tensor, tokenizer) -> int:
    """The generated tokens that are neither padding nor end of sequence."""
    return int(((ids != tokenizer.pad_token_id) & (ids != tokenizer.eos_token_id)).sum())


def generation(loaded: LoadedModel, shots: int, options) -> tuple[PathResult, PathResult, float]:
    """(ours, recipe, agreement) on VQAv2-shaped generation at `shots` shots."""
    with tempfile.TemporaryDirectory() as scratch:
        p = prepare(RunConfig(task="vqav2", shots=(shots,), output_dir=Path(scratch), demo=True,
                              limit=options.queries, progress=False), preloaded=True)
    selection = ShotSettings("rices") if shots else ShotSettings("random")
    encoder = VisionTowerEncoder(loaded) if shots else None
    selector = build_selector(selection, p.support, p.queries, shots, encoder, None, progress=False)
    settings = p.generation
    requests = [fit_prompt(p, loaded, selector.select(q, shots), q, settings.max_new_tokens) for q in p.queries.examples]
    prompts, lengths = [r[0] for r in requests], [r[2] for r in requests]
    sizes = [(len(prompt.images), n) for prompt, n in zip(prompts, lengths)]
    flops = ModelFlops(loaded.model.config)
    tokenizer = loaded.processor.tokenizer

    ours = Generator(loaded, settings, ImageFeatureCache())
    worst = [prompts[i] for i in longest_first(sizes)]
    batch_size = resolve_batch_size("auto", loaded.device, lambda: ((lambda size: ours.generate(worst[:size])), len(worst)))
    ours.generate_ids_fast(worst[:1])  # warm-up (kernels, allocator), untimed
    ours.image_cache = ImageFeatureCache()  # the timed run encodes its images itself
    steps = CountedForward(ours)
    clock, ours_text, ours_tokens, model_flops = Clock(loaded.device), {}, 0, 0.0
    for indices in batches_by_length(sizes, batch_size):
        steps.calls = 0
        with clock:
            ids = ours.generate_ids_fast([prompts[i] for i in indices])
        ours_text.update(zip(indices, tokenizer.batch_decode(ids, skip_special_tokens=True)))
        ours_tokens += answer_tokens(ids, tokenizer)
        for i in indices:
            images = max(1, len(prompts[i].images))
            model_flops += flops.prompt(lengths[i], images) + settings.num_beams * flops.continuation(lengths[i], steps.calls - 1, images)
    ours_result = PathResult(len(prompts), ours_tokens, model_flops, clock, batch_size)

    recipe_clock, agree, recipe_tokens = Clock(loaded.device), 0, 0
    ours.generate_ids_plain(worst[:1])  # warm-up
    for indices in batches_by_length(sizes, options.recipe_batch_size):
        with recipe_clock:
            ids = ours.generate_ids_plain([prompts[i] for i in indices])
        recipe_tokens += answer_tokens(ids, tokenizer)
        agree += sum(text == ours_text[i] for i, text in zip(indices, tokenizer.batch_decode(ids, skip_special_tokens=True)))
    recipe = PathResult(len(prompts), recipe_tokens, model_flops, recipe_clock, options.recipe_batch_size)
    return ours_result, recipe, agree / len(prompts)


class CountedForward:
    """Counts a generator's forward passes (the prompt's, then one per decoding step)."""

    def __init__(self, generator: Generator):
        self.forward, self.calls = generator.forward, 0
        generator.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.forward(*args, **kwargs)


def ranking(loaded: LoadedModel, options) -> tuple[PathResult, PathResult, float, float]:
    """(ours, recipe, argmax agreement, largest log-likelihood difference) on ImageNet-shaped ranking;
    the recipe scores the first --recipe-rank-queries queries."""
    shots = options.rank_shots
    with tempfile.TemporaryDirectory() as scratch:
        p = prepare(RunConfig(task="imagenet", shots=(shots,), output_dir=Path(scratch), demo=True,
                              limit=options.rank_queries, selection="random", progress=False), preloaded=True)
    selector = build_selector(ShotSettings("random"), p.support, p.queries, shots, None, None, progress=False)
    answer, normalize = shot_answer(p.spec), p.spec.candidates.normalize
    flops = ModelFlops(loaded.model.config)
    requests = []
    for query in p.queries.examples:
        candidates = candidates_of(p.spec, query)[: options.candidates]
        context, _, length = fit_prompt(p, loaded, selector.select(query, shots), query, candidate_reserve(loaded, candidates))
        by_id = {s.id: s for s in p.support.examples}
        shown = [by_id[i] for i in context.shot_ids]
        continuations = [p.template.render(shown, query, answer, candidate=c) for c in candidates]
        added = [len(token_ids(loaded, full)) - length for full in continuations]
        images = max(1, len(context.images))
        cost = flops.prompt(length, images) + sum(flops.continuation(length, n, images) for n in added)
        requests.append((context, continuations, sum(added), cost))
    requests.sort(key=lambda r: (-len(r[0].images), -r[2]))  # the most memory first, as the run probes

    ours = Ranker(loaded, 1, image_cache=ImageFeatureCache())

    def try_batch(size: int) -> None:
        ours.batch_size = size
        ours.loglikelihoods(requests[0][0], requests[0][1], normalize)

    batch_size = resolve_batch_size("auto", loaded.device, lambda: (try_batch, len(requests[0][1])))
    ours.batch_size = batch_size
    ours.loglikelihoods(requests[0][0], requests[0][1][:batch_size], normalize)  # warm-up
    ours.image_cache = ImageFeatureCache()
    clock, scores = Clock(loaded.device), []
    for context, continuations, _, _ in requests:
        with clock:
            scores.append(ours.loglikelihoods(context, continuations, normalize))
    ours_result = PathResult(len(requests), sum(r[2] for r in requests), sum(r[3] for r in requests), clock, batch_size)

    recipe = Ranker(loaded, options.recipe_batch_size, image_cache=ImageFeatureCache(0))
    recipe.loglikelihoods_full(requests[0][0], requests[0][1][: options.recipe_batch_size], normalize)  # warm-up
    timed = requests[: options.recipe_rank_queries]
    recipe_clock, agree, max_diff = Clock(loaded.device), 0, 0.0
    for (context, continuations, _, _), ours_scores in zip(timed, scores):
        with recipe_clock:
            reference = recipe.loglikelihoods_full(context, continuations, normalize)
        max_diff = max(max_diff, max(abs(a - b) for a, b in zip(ours_scores, reference)))
        agree += max(range(len(reference)), key=lambda i: (reference[i], -i)) == max(range(len(ours_scores)), key=lambda i: (ours_scores[i], -i))
    recipe_result = PathResult(len(timed), sum(r[2] for r in timed), sum(r[3] for r in timed), recipe_clock, options.recipe_batch_size)
    return ours_result, recipe_result, agree / len(timed), max_diff


def report(name: str, ours: PathResult, recipe: PathResult, agreement: float, peak_tflops: float | None, **extra) -> None:
    speedup = (recipe.clock.seconds / recipe.queries) / (ours.clock.seconds / ours.queries)
    for label, path in (("ours", ours), ("recipe", recipe)):
        f = path.fields(label, peak_tflops)
        print(f"  {name:>13} {label:>6}: {f[f'{label}_queries_per_s']:8.2f} queries/s {f[f'{label}_tokens_per_s']:10.1f} tokens/s "
              f"peak {f[f'{label}_peak_mib']:8.0f} MiB {f[f'{label}_tflops']:>8} TFLOP/s MFU {f[f'{label}_mfu']} "
              f"batch {path.batch_size} ({path.queries} queries, {path.clock.seconds:.1f} s)", flush=True)
    print(result_line(f"gpu_{name}", speedup, agreement == 1.0, agree=agreement, **extra, **ours.fields("ours", peak_tflops),
                      **recipe.fields("recipe", peak_tflops)), flush=True)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_BF16_TFLOPS.items() if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny shape, float32, on CPU unless --device: the test's run")
    parser.add_argument("--device", default=None, help="cuda (default for the 9B shape) or cpu")
    parser.add_argument("--queries", type=int, default=None, help="VQAv2 queries a shot count (default 32, tiny 4)")
    parser.add_argument("--rank-queries", type=int, default=None, help="ImageNet queries for ours (default 8, tiny 1)")
    parser.add_argument("--recipe-rank-queries", type=int, default=None, help="of those, scored by the recipe too (default 2, tiny 1)")
    parser.add_argument("--candidates", type=int, default=None, help="class names a query (default all 1,000, tiny 100)")
    parser.add_argument("--rank-shots", type=int, default=4)
    parser.add_argument("--shots", default="0,32", help="VQAv2 shot counts (default 0,32)")
    parser.add_argument("--recipe-batch-size", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak dense FLOP/s, for MFU (known: H100, H200, A100)")
    options = parser.parse_args()
    tiny = options.tiny
    for name, full, small in (("queries", 32, 4), ("rank_queries", 8, 1), ("recipe_rank_queries", 2, 1), ("candidates", 1000, 100)):
        if getattr(options, name) is None:
            setattr(options, name, small if tiny else full)
    device = torch.device(options.device or ("cpu" if tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: run on a GPU machine, or pass --tiny for the CPU check")
    if device.type == "cpu" and not tiny:
        parser.error("the 9B shape needs a GPU; --tiny runs the tiny shape on CPU")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    started = time.perf_counter()
    loaded = build(tiny, device, dtype)
    build_s = time.perf_counter() - started
    peak = peak_tflops(device, options.peak_tflops)
    parameters = sum(t.numel() for t in loaded.model.parameters())
    print(f"{'tiny' if tiny else '9B'} shape, {parameters / 1e9:.2f}B parameters, {dtype}, on "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}; built in {build_s:.1f} s; "
          f"peak {peak if peak else 'unknown'} TFLOP/s", flush=True)
    with torch.no_grad():
        for shots in (int(s) for s in options.shots.split(",")):
            ours, recipe, agreement = generation(loaded, shots, options)
            report(f"vqav2_{shots}shot", ours, recipe, agreement, peak, shots=shots)
        ours, recipe, agreement, max_diff = ranking(loaded, options)
        report("imagenet", ours, recipe, agreement, peak, shots=options.rank_shots, candidates=options.candidates,
               max_abs_diff=f"{max_diff:.2e}")
    print(f"RESULT name=gpu shape={'tiny' if tiny else '9b'} device={device.type} parameters={parameters} "
          f"build_s={build_s:.1f} total_s={time.perf_counter() - started:.1f}")


if __name__ == "__main__":
    main()
