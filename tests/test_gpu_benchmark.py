"""benchmarks/gpu.py: its --tiny run (the same code on CPU, the demo's tiny shape) prints a RESULT
line per workload whose numbers parse and make sense, and its model-FLOPs formula agrees with
torch's FLOP counter on a real forward pass."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def gpu_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return runpy.run_path(str(BENCHMARKS / "gpu.py"))


def parse(line: str) -> dict[str, str]:
    return dict(field.split("=", 1) for field in line.split()[1:])


def test_tiny_run_prints_sane_results(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--tiny", "--queries", "2", "--candidates", "20", "--peak-tflops", "0.5"])
    runpy.run_path(str(BENCHMARKS / "gpu.py"), run_name="__main__")
    results = {fields["name"]: fields for fields in map(parse, (line for line in capsys.readouterr().out.splitlines()
                                                                   if line.startswith("RESULT ")))}
    assert set(results) == {"gpu_vqav2_0shot", "gpu_vqav2_32shot", "gpu_imagenet", "gpu"}
    assert results["gpu"]["shape"] == "tiny" and results["gpu"]["device"] == "cpu"
    for name in ("gpu_vqav2_0shot", "gpu_vqav2_32shot", "gpu_imagenet"):
        fields = results[name]
        assert fields["identical"] == "true", name  # float32 on CPU: our paths give the recipe's answers
        assert float(fields["speedup"]) > 0
        for path in ("ours", "recipe"):
            assert float(fields[f"{path}_queries_per_s"]) > 0
            assert float(fields[f"{path}_tokens_per_s"]) > 0
            assert float(fields[f"{path}_peak_mib"]) > 10
            assert 0 < float(fields[f"{path}_mfu"]) < 1
            assert float(fields[f"{path}_mfu"]) == pytest.approx(float(fields[f"{path}_tflops"]) / 0.5, rel=1e-2)
            assert int(fields[f"{path}_batch_size"]) >= 1
    assert int(results["gpu_vqav2_32shot"]["ours_batch_size"]) == 8  # --batch-size auto off a GPU
    assert int(results["gpu_vqav2_0shot"]["ours_queries"]) == 2
    assert float(results["gpu_imagenet"]["max_abs_diff"]) < 1e-4
    # 32 shots cost more FLOPs a query than none: the formula sees the images and the longer prompts
    per_query = {n: float(results[n]["ours_tflops"]) * float(results[n]["ours_s"]) / int(results[n]["ours_queries"])
                 for n in ("gpu_vqav2_0shot", "gpu_vqav2_32shot")}
    assert per_query["gpu_vqav2_32shot"] > 5 * per_query["gpu_vqav2_0shot"]


def test_model_flops_match_torchs_flop_counter(gpu_benchmark):
    """The formula against torch.utils.flop_counter on one prompt pass with images (pixels in: the
    vision tower and resampler counted too), and on a decoding step after it. Eager attention: the
    counter does not see CPU's fused attention kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    from idefics_eval.engine import Generator, GenerationSettings
    from idefics_eval.image_cache import ImageFeatureCache

    from test_engine_fast import _prompts

    loaded = gpu_benchmark["build"](True, torch.device("cpu"), torch.float32)
    loaded.model.set_attn_implementation("eager")
    flops = gpu_benchmark["ModelFlops"](loaded.model.config)
    prompt = next(p for p in _prompts(8) if len(p.images) == 3)
    generator = Generator(loaded, GenerationSettings(), ImageFeatureCache())
    inputs = generator.encode([prompt])
    tokens, images = inputs["input_ids"].shape[1], inputs["pixel_values"].shape[1]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = loaded.model(**inputs, use_cache=True, logits_to_keep=1)
    # torch counts the causal attention's full square: add the half the formula leaves out
    square = loaded.model.config.num_hidden_layers * 4 * flops.d * tokens * (tokens - 1) / 2
    assert counter.get_total_flops() == pytest.approx(flops.prompt(tokens, images) + square, rel=1e-9)

    mask = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        loaded.model(input_ids=inputs["input_ids"][:, -1:], attention_mask=mask, cache=out.cache,
                     image_attention_mask=inputs["image_attention_mask"][:, -1:], pixel_values=inputs["pixel_values"],
                     use_cache=True, logits_to_keep=1)
    # a plain decoding step re-encodes the images and re-projects their keys and values: the waste our loop skips
    waste = images * flops.image() + flops.image_key_values(images)
    assert counter.get_total_flops() == pytest.approx(flops.continuation(tokens, 1, images) + waste, rel=1e-9)
