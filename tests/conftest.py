"""Shared fixtures: the embedded tiny model (built once per session) and tiny in-memory images."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from idefics_eval.cli import main
from idefics_eval.examples import Example


# The tiny models run as fast on one thread, and several threads thrash when other processes share
# the two cores (10-30x slower then). Subprocess tests (torchrun, kill) keep torch's default.
torch.set_num_threads(1)


def invoke(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in-process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@dataclass(frozen=True)
class ColourImage:
    """An in-memory solid-colour image; `key` doubles as its identity."""

    rgb: tuple[int, int, int]

    @property
    def key(self) -> str:
        return "colour:%d,%d,%d" % self.rgb

    def load(self) -> Image.Image:
        return Image.new("RGB", (64, 64), self.rgb)


def make_example(qid: str, image_id: str, question: str, answers: list[str], rgb=(200, 30, 30), **metadata) -> Example:
    return Example(id=qid, image_id=image_id, image=ColourImage(rgb), fields={"question": question},
                   answers=tuple(answers), metadata=metadata)


@pytest.fixture(scope="session")
def demo_loaded():
    from idefics_eval.models import load_model

    return load_model("demo", device="cpu", dtype="float32", demo_seed=0)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP checkpoint folder: a RICES encoder named by --rices-encoder."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    model = CLIPModel(CLIPConfig(text_config=small | {"vocab_size": 100, "eos_token_id": 2},
                                 vision_config=small | {"image_size": 32, "patch_size": 8}, projection_dim=8))
    model.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture
def trie_calls(monkeypatch) -> list:
    """The query shapes of every self-attention call that took the packed passes' blocked attention
    (`trie_attention.TrieAttention.attend`), which every pass takes here, however small (`SAVING`):
    a family whose layers fell back to sdpa leaves it empty."""
    from idefics_eval import trie_attention
    from idefics_eval.trie_attention import TrieAttention

    monkeypatch.setattr(trie_attention, "SAVING", 0)

    calls, attend = [], TrieAttention.attend
    monkeypatch.setattr(TrieAttention, "attend", lambda self, query, *rest: calls.append(query.shape) or attend(self, query, *rest))
    return calls
