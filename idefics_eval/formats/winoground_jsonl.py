"""The Winoground release layout (facebook/winoground): `examples.jsonl` and the PNG images.

    examples.jsonl, one example per line:
        {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": str, "caption_1": str,
         "tag": str, "secondary_tag": str, "num_main_preds": int, "collapsed_tag": str}
    images/{image_0}.png, images/{image_1}.png (from images.zip)

A task gives `examples` (the JSON Lines file) and `images` (the folder). Caption k describes image k;
the two captions hold the same words in a different order.

Each line becomes one `Example`: `image` is image 0 and `extra_images` holds image 1 (a match request
scores both captions with both images), `fields` hold `caption_0` and `caption_1`, `metadata` the tags
(reports break scores down by `collapsed_tag`). `image_id` is image 0's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import check_files_exist, data_file, data_root, identifier, image_folder, read_jsonl, require, typed

FORMAT = "winoground_jsonl"
KEYS = ("id", "image_0", "image_1", "caption_0", "caption_1")
TAGS = {"tag": str, "secondary_tag": str, "num_main_preds": int, "collapsed_tag": str}


def load_winoground_jsonl(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    path = data_file(root, files["examples"], FORMAT)
    images_dir = image_folder(root, files["images"], FORMAT, fix="unzip images.zip there")
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for number, record in read_jsonl(path):
        where = f"{path}: line {number}"
        require(record, where, ("id",))
        example_id = identifier(record["id"], where, "id")
        where = f"{path}: line {number} (id {example_id})"
        require(record, where, KEYS)
        if example_id in seen:
            raise UserError(f"{path}: duplicate id {example_id} (lines {seen[example_id]} and {number})")
        seen[example_id] = number
        names = [typed(record[f"image_{k}"], str, where, f"image_{k}") for k in (0, 1)]
        captions = {f"caption_{k}": typed(record[f"caption_{k}"], str, where, f"caption_{k}") for k in (0, 1)}
        metadata = {key: typed(record[key], kind, where, key) for key, kind in TAGS.items() if key in record}
        examples.append(
            Example(
                id=example_id,
                image_id=names[0],
                image=FileImage(images_dir / f"{names[0]}.png"),
                fields=captions,
                answers=(),
                metadata=metadata,
                extra_images=(FileImage(images_dir / f"{names[1]}.png"),),
            )
        )
    if not examples:
        raise UserError(f"{path}: no examples in the file; is it the right file?")
    check_files_exist(
        (ref.path for example in examples for ref in (example.image, *example.extra_images)), "images",
        f"images are read from {images_dir}/<image name>.png; check the data folder (--data) and the task's `images` key",
    )
    return ExampleSet(name=name, source=str(root), examples=examples)


register(FileFormat(FORMAT, ("examples", "images"), ("examples",), load_winoground_jsonl))
