"""Shared pieces of the benchmarks: the small random IDEFICS (or another family's tiny model), peak RSS, the RESULT line."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def small_config():
    """IDEFICS-9B's proportions scaled down (issue 4): language model 512 wide, 8 layers,
    intermediate 1376, 4 heads, a gated cross-attention every 4 layers; vision tower on 224-pixel
    images, patch 14, 160 wide, 8 layers, 2 heads, intermediate 640; resampler with 64 latents,
    depth 2. Vocabulary: the demo tokenizer's (512 + the 2 image tokens)."""
    from transformers import IdeficsConfig

    from idefics_eval.demo.model import VOCAB_SIZE

    return IdeficsConfig(
        vocab_size=VOCAB_SIZE, additional_vocab_size=2, hidden_size=512, intermediate_size=1376,
        num_hidden_layers=8, num_attention_heads=4, cross_layer_interval=4, max_position_embeddings=2048,
        use_resampler=True, alpha_initializer="ones",  # open gates: the images reach the logits
        vision_config={"embed_dim": 160, "image_size": 224, "patch_size": 14, "num_hidden_layers": 8,
                       "num_attention_heads": 2, "intermediate_size": 640},
        perceiver_config={"use_resampler": True, "resampler_n_latents": 64, "resampler_depth": 2,
                          "resampler_n_heads": 2, "resampler_head_dim": 80},
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


def small_model(seed: int = 0):
    """(model, processor) with random weights; nothing is downloaded."""
    from transformers import IdeficsForVisionText2Text, IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    from idefics_eval.demo.model import build_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = IdeficsForVisionText2Text(small_config()).eval()
    model.config.name_or_path = f"idefics-eval/bench-small-seed{seed}"
    processor = IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=224), tokenizer=build_tokenizer())
    return model, processor


def small_loaded(seed: int = 0):
    from idefics_eval.models import LoadedModel, weights_fingerprint

    model, processor = small_model(seed)
    return LoadedModel(model, processor, model.config.name_or_path, weights_fingerprint(model),
                       torch.device("cpu"), torch.float32)


def family_loaded(family: str, folder: Path):
    """The benchmarked model of `family` (a config.model_type): for IDEFICS the small random one
    above, for another family its tiny random checkpoint (`demo-model --family`), written to `folder`
    and loaded as `--model` loads it."""
    if family == "idefics":
        return small_loaded()
    from idefics_eval.demo.families import save_family_demo
    from idefics_eval.models import load_model

    save_family_demo(family, folder / family, seed=0)
    return load_model(str(folder / family), device="cpu", dtype="float32", progress=False)


def add_family_option(parser, idefics: str = "the small random IDEFICS") -> None:
    """--family; `idefics` says which IDEFICS model the benchmark times by default."""
    from idefics_eval.demo.families import FAMILIES

    parser.add_argument("--family", choices=FAMILIES, default="idefics",
                        help=f"model family: idefics ({idefics}) or another family's tiny random model")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start


class CpuTimer(Timer):
    """Wall time (`seconds`) and this process's CPU time (`cpu_seconds`), which other programs
    sharing the cores move less."""

    def __init__(self):
        super().__init__()
        self.cpu_seconds = 0.0

    def __enter__(self):
        self._cpu = time.process_time()
        return super().__enter__()

    def __exit__(self, *exc):
        self.cpu_seconds += time.process_time() - self._cpu
        super().__exit__(*exc)


def result_line(name: str, speedup: float, identical: bool, **extra) -> str:
    fields = " ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}" for key, value in extra.items())
    return f"RESULT name={name} speedup={speedup:.2f} identical={str(identical).lower()} {fields}".rstrip()
