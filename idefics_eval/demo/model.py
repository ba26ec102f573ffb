"""The embedded default model: a tiny IDEFICS with random weights from a fixed seed.

It has the real model's structure (CLIP-style vision tower, perceiver resampler, gated
cross-attention every other layer, decoupled embeddings for the two image tokens) at a size that
runs a full 32-shot evaluation on two CPU cores in seconds. Its answers are noise; it exists so
that every code path, from loading a checkpoint folder to scoring, runs without downloads.

The tokenizer is a byte-level BPE trained here on a fixed corpus, so any text can be encoded,
and it knows `<image>` and `<fake_token_around_image>` as the real IDEFICS tokenizer does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsProcessor, PreTrainedTokenizerFast
from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

DEMO_NAME = "idefics-eval/demo-tiny-random"
VOCAB_SIZE = 512  # base vocabulary; the two image tokens are appended as "additional" ids

_WORDS = (
    "red green blue yellow purple orange white black gray brown pink color colour shape shapes circle "
    "square triangle left right top bottom middle center background one two three four five six seven "
    "eight nine ten zero yes no none how many what which where is are there the a an of on in this "
    "image picture photo question answer unanswerable"
)
_CORPUS = [
    "Instruction: provide an answer to the question. Use the image to answer.\n",
    "Task: Answer the questions based on the image when possible, otherwise say unanswerable.\n",
    "Image:Question: What color is the circle? Answer: red\n",
    "Image:Question: How many shapes are there? Answer: 2\n",
    "Image:Question: Is there a blue square? Answer: yes\n",
    "Image:Caption: a red circle on the left of a green square.\n",
    _WORDS,
    " ".join(w.capitalize() for w in _WORDS.split()),
    "0 1 2 3 4 5 6 7 8 9 10 . , ? ! : ; ' \" ( ) -",
]


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `corpus` with LLaMA's special-token layout (<unk>=0, <s>=1, </s>=2),
    padding on the left; the base vocabulary is filled to exactly `vocab_size`, so the two image
    tokens get ids `vocab_size` and `vocab_size + 1`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    missing = vocab_size - tokenizer.get_vocab_size()
    tokenizer.add_tokens([f"<unused_{i}>" for i in range(missing)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": ["<fake_token_around_image>", "<image>"]})
    return fast


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """The demo tokenizer; a larger `vocab_size` pads the same merges with unused tokens (the GPU
    benchmark's IDEFICS-9B shape puts the image tokens at 32000 and 32001, as the real one does)."""
    return train_tokenizer(_CORPUS * 20, vocab_size)


def build_processor() -> IdeficsProcessor:
    return IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=32), tokenizer=build_tokenizer())


def build_config() -> IdeficsConfig:
    return IdeficsConfig(
        vocab_size=VOCAB_SIZE,
        additional_vocab_size=2,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=4,
        num_attention_heads=4,
        cross_layer_interval=2,
        max_position_embeddings=2048,
        use_resampler=True,
        # Non-zero gates: with the real model's zero init the images would have no effect at all.
        alpha_initializer="ones",
        vision_config={
            "embed_dim": 32,
            "image_size": 32,
            "patch_size": 8,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
        },
        perceiver_config={
            "use_resampler": True,
            "resampler_n_latents": 4,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 16,
        },
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_model(seed: int = 0) -> IdeficsForVisionText2Text:
    """The tiny model with weights drawn from `seed` (same seed, same torch version: same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = IdeficsForVisionText2Text(build_config())
    model.config.name_or_path = f"{DEMO_NAME}-seed{seed}"
    return model.eval()


def save_demo_model(directory: Path, seed: int = 0) -> None:
    """Write the tiny model and its processor as an ordinary checkpoint folder (`--model DIR` loads it)."""
    save_checkpoint(build_model(seed), build_processor(), directory)


def save_checkpoint(model, processor, directory: Path) -> None:
    """`model` and `processor` saved into `directory` (created), as any tiny family's maker writes them."""
    from transformers.utils import logging as hf_logging

    directory.mkdir(parents=True, exist_ok=True)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one 3 MB shard: a "Writing model shards" bar is only noise
    try:
        model.save_pretrained(directory)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    processor.save_pretrained(directory)
