"""The task files and prompts of COCO, Flickr30k, NoCaps, ImageNet-1k and Rendered SST2 validate and say
what PROTOCOL.md says: splits, metric, request, candidates, prompt text, and file-format keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from idefics_eval.formats import file_formats
from idefics_eval.prompts import load_template
from idefics_eval.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {  # task: (request, metric, prompt, support split, query split, shot answer)
    "coco": ("generate", "cider", "captioning", "train", "test", "random_reference"),
    "flickr30k": ("generate", "cider", "captioning", "train", "test", "random_reference"),
    "nocaps": ("generate", "cider", "captioning", "train", "validation", "random_reference"),
    "imagenet": ("rank", "accuracy", "imagenet", "train", "validation", "label"),
    "renderedsst2": ("rank", "accuracy", "renderedsst2", "train", "test", "label"),
}
PROMPTS = {  # PROTOCOL.md's templates
    "captioning": ("", "Image:<image>Caption: {answer}\n"),
    "imagenet": ("", "<image>a photo of a {class_name}."),
    "renderedsst2": (
        "Instruction: A movie review is written on an image. Say if it is positive or negative.\n",
        "Image:<image>Sentiment: {class_name}.\n",
    ),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_task_declares_protocol_splits_metric_and_prompt(name):
    spec = load_task(name)
    assert (spec.request, spec.metric, spec.prompt, spec.support_split, spec.query_split, spec.shot_answer) == EXPECTED[name]
    template = load_template(spec.prompt)
    assert (template.prefix, template.example) == PROMPTS[spec.prompt]
    assert spec.huggingface is not None and {"id", "image"} <= set(spec.huggingface.columns)
    assert set(spec.huggingface.splits) == {spec.query_split} | ({spec.support_split} if not spec.support_task else set())
    formats = file_formats()
    for format_name, splits in spec.sources.items():
        file_format = formats[format_name]
        for split, keys in splits.items():
            assert set(file_format.keys) <= set(keys) <= set(file_format.keys + file_format.optional), (format_name, split)
    if spec.request == "generate":
        assert (spec.generation.max_new_tokens, spec.generation.num_beams) == (20, 3)


def test_nocaps_takes_shots_from_coco_train():
    spec = load_task("nocaps")
    assert spec.support_task == "coco" and spec.support_split == load_task("coco").support_split
    assert set(spec.sources["nocaps_json"]) == {"validation"}


def test_imagenet_ranks_the_1000_clip_class_names_in_index_order():
    spec = load_task("imagenet")
    raw = (ROOT / "tasks" / "imagenet_classes.txt").read_text().split("\n")
    assert raw[-1] == "" and len(raw) == 1001 and all(line == line.strip() and line for line in raw[:-1])
    classes = spec.candidates.classes
    assert classes == tuple(raw[:-1])
    assert (spec.candidates.source, spec.candidates.normalize) == ("classes", "sum")
    assert classes[:3] == ("tench", "goldfish", "great white shark") and classes[-1] == "toilet paper"
    assert (classes[409], classes[530], classes[920]) == ("analog clock", "digital clock", "traffic light")
    duplicates = {c for c in classes if classes.count(c) > 1}
    assert duplicates == {"missile", "sunglasses"}  # as in CLIP's list; indices stay the official ones


def test_renderedsst2_classes_follow_the_released_label_order():
    spec = load_task("renderedsst2")
    assert spec.candidates.classes == ("negative", "positive")
    for keys in spec.sources["class_folder"].values():
        assert tuple(keys["classes"].split(",")) == spec.candidates.classes
