"""The Hateful Memes release layout (Facebook AI): one JSON Lines file per split, PNG memes under `img/`.

    train.jsonl, dev_seen.jsonl, test_seen.jsonl (and the *_unseen files), one meme per line:
        {"id": 42953, "img": "img/42953.png", "label": 0, "text": "the text written on the meme"}

`img` is relative to the data folder; `label` is 1 for hateful, 0 for not hateful. The first release's
test.jsonl has no labels and cannot be scored (the Phase 2 test_seen.jsonl has them).

A task gives each split's file under the key `annotations`. Each line becomes one `Example`:
`fields["text"]`, `label` (0/1, the index into the task's classes `[no, yes]`) and `answers` = the
class name; `image_id` is the image's file stem (e.g. "01235"; the id itself has no leading zeros).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import check_files_exist, data_file, data_root, identifier, read_jsonl, require, typed

CLASSES = ("no", "yes")  # label 0 (not hateful) and 1 (hateful), named as the IDEFICS prompt asks
FORMAT = "hatefulmemes_jsonl"


def load_hatefulmemes_jsonl(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    path = data_file(root, files["annotations"], FORMAT)
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for number, record in read_jsonl(path):
        where = f"{path}: line {number}"
        require(record, where, ("id",))
        meme_id = identifier(record["id"], where, "id")
        where = f"{path}: line {number} (id {meme_id})"
        if "label" not in record:
            raise UserError(
                f"{where}: missing key 'label'; this file has no labels (the first release's unlabelled test "
                "set?): score dev_seen.jsonl or the labelled test_seen.jsonl"
            )
        require(record, where, ("img", "text"))
        if meme_id in seen:
            raise UserError(f"{path}: duplicate id {meme_id} (lines {seen[meme_id]} and {number}); ids must be unique")
        seen[meme_id] = number
        label = typed(record["label"], int, where, "label")
        if label not in (0, 1):
            raise UserError(f"{where}: 'label' must be 0 (not hateful) or 1 (hateful), found {label}")
        image = Path(typed(record["img"], str, where, "img"))
        examples.append(
            Example(
                id=meme_id,
                image_id=image.stem,
                image=FileImage(root / image),
                fields={"text": typed(record["text"], str, where, "text")},
                answers=(CLASSES[label],),
                label=label,
            )
        )
    if not examples:
        raise UserError(f"{path}: no memes in the file; is it the right file?")
    check_files_exist(
        (example.image.path for example in examples), "images",
        f"the memes' 'img' paths are relative to the data folder {root} (--data): put the img/ folder there",
    )
    return ExampleSet(name=name, source=str(root), examples=examples)


register(FileFormat(FORMAT, ("annotations",), ("annotations",), load_hatefulmemes_jsonl))
