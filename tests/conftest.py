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
