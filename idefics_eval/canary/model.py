"""The canary model: a small IdeficsForVisionText2Text trained here (idefics_eval/canary/train.py).

Same structure as the real IDEFICS (CLIP-style vision tower, perceiver resampler, gated
cross-attention, decoupled embeddings for the two image tokens) at a size that trains on two CPU
cores in minutes. Its tokenizer is a byte-level BPE trained on the canary world's own text, so the
prompt words, the answers and every made-up word of the naming game are single tokens.

The trained weights ship in `weights/` (safetensors, float16) and are what `--demo` evaluates.
"""

from __future__ import annotations

import random
from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsProcessor, PreTrainedTokenizerFast
from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

from ..demo import make_captioning, make_classification, make_data
from ..demo.model import train_tokenizer
from ..models import CANARY_NAME
from ..prompts import parse_template
from ..tasks import builtin_dir
from .world import COLOR_QUESTION, WORDS, WORDS_QUESTION

VOCAB_SIZE = 1024
IMAGE_SIZE = 64


def corpus() -> list[str]:
    """The text the tokenizer is trained on: every prompt template, the world's questions, answers,
    captions and class names, and the made-up words (each many times, so each becomes one token)."""
    texts = []
    for path in sorted(builtin_dir("prompts").glob("*.yaml")):
        template = parse_template(path)
        texts += [template.prefix, template.example.replace("<image>", " ")]
    rng = random.Random(0)
    for image_id in range(20_000_000, 20_000_400):
        scene = make_data.make_scene(image_id)
        for questions in make_data._candidates(scene, rng).values():
            texts += [f"Question: {q.question} Answer: {q.answer}\n" for q in questions]
        texts += [f"Caption: {c}\n" for c in make_captioning.captions(scene, 5)]
    classes = (builtin_dir("tasks") / "imagenet_classes.txt").read_text().splitlines()
    texts += [f"a photo of a {classes[i]}." for i in make_classification.IMAGENET_CLASSES] * 20
    texts += [f"Question: {WORDS_QUESTION} Answer: {w}\n" for w in WORDS] * 40
    texts += [f"Question: {COLOR_QUESTION} Answer: red\n"] * 10
    texts += ["0 1 2 3 4 5 6 7 8 9 10 . , ? ! : ; ' \" ( ) - yes no"] * 5
    return texts


def build_tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(corpus(), VOCAB_SIZE)


def build_processor() -> IdeficsProcessor:
    return IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=IMAGE_SIZE), tokenizer=build_tokenizer())


def build_config(heads: int = 4, tie: bool = True) -> IdeficsConfig:
    return IdeficsConfig(
        vocab_size=VOCAB_SIZE,
        additional_vocab_size=2,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=4,
        num_attention_heads=heads,
        cross_layer_interval=1,
        max_position_embeddings=2048,
        use_resampler=True,
        # The real model starts its gates at zero (a pretrained language model must not be disturbed);
        # trained from scratch, open gates let the images shape the text from the first step.
        alpha_initializer="ones",
        # IdeficsConfig freezes the language and vision layers by default (the real model was trained on
        # top of a frozen LLaMA and CLIP); from scratch, everything learns.
        freeze_text_layers=False,
        freeze_vision_layers=False,
        # One matrix embeds and reads out each token: copying a word seen in the context (what the
        # naming game asks) is then an identity map, which a small model finds quickly.
        tie_word_embeddings=tie,
        vision_config={
            "embed_dim": 64,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
        },
        perceiver_config={
            "use_resampler": True,
            "resampler_n_latents": 8,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 32,
        },
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_model(seed: int = 0, heads: int = 4, tie: bool = True) -> IdeficsForVisionText2Text:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = IdeficsForVisionText2Text(build_config(heads, tie))
    model.config.name_or_path = CANARY_NAME
    return model
