"""Interleaved 0-, 1- and 4-shot prompts with images of several sizes, and the same prompts as the
text a user of the Idefics2/Idefics3 processors writes by hand (one `<image>` per image)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from idefics_eval.examples import Example
from idefics_eval.prompts import load_template, most_common_answer

PREFIX = "Instruction: provide an answer to the question. Use the image to answer.\n"


@dataclass(frozen=True)
class SizedImage:
    """A solid-colour image of any size, so that batches pad pixels and images split into crops."""

    rgb: tuple[int, int, int]
    size: tuple[int, int]

    @property
    def key(self) -> str:
        return f"sized:{self.rgb}:{self.size}"

    def load(self) -> Image.Image:
        return Image.new("RGB", self.size, self.rgb)


SIZES = [(64, 64), (40, 30), (20, 50), (64, 16), (33, 47), (50, 50)]


def example(index: int) -> Example:
    image = SizedImage((40 * index % 256, 200 - 30 * index, 90), SIZES[index % len(SIZES)])
    return Example(id=f"e{index}", image_id=f"e{index}", image=image, fields={"question": f"What is shape {index}?"},
                   answers=(f"colour{index}",) * 10)


def shot_prompts():
    """A 0-, 1- and 4-shot VQA prompt (the query is example 9), and the text with one `<image>`
    per image as a user of the processor writes it by hand, and the images in order."""
    template, query = load_template("vqa"), example(9)
    prompts, texts, images = [], [], []
    for count in (0, 1, 4):
        shots = [example(i) for i in range(count)]
        prompts.append(template.render(shots, query, most_common_answer))
        text = PREFIX + "".join(f"Image:<image>Question: What is shape {i}? Answer: colour{i}\n" for i in range(count))
        texts.append(text + "Image:<image>Question: What is shape 9? Answer:")
        images.append([shot.image.load() for shot in shots] + [query.image.load()])
    return prompts, texts, images


def assert_same(ours: dict, expected) -> None:
    """The same keys, and every tensor equal."""
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert torch.equal(ours[key], value), key
