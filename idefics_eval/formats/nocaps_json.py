"""The NoCaps validation file (`nocaps_val_4500_captions.json`, COCO-captions style) and its images.

    {"images": [{"id": 0, "open_images_id": "0013ea2087020901", "file_name": "0013ea2087020901.jpg",
                 "domain": "in-domain", "height": ..., "width": ..., "coco_url": ..., ...}, ...],
     "annotations": [{"image_id": 0, "id": 0, "caption": "A baby is standing in front of a house."}, ...]}

Task-file keys of one split: `file` (the JSON file) and `images` (the folder holding the images by
`file_name`). One `Example` per image: `answers` are its reference captions (10 per image in the
official file) in annotation-id order; `metadata["domain"]` is in-domain, near-domain or
out-domain, which the CIDEr report breaks down by. The test file (`nocaps_test_image_info.json`)
has no `annotations`: its examples have no answers (the evaluation server scores them; the task
nocaps_test runs it and `idefics-eval submission` writes the server's file).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import (
    IMAGES_HINT, check_files_exist, data_file, data_root, identifier, image_folder, read_object, records, require,
    typed,
)

FORMAT = "nocaps_json"
DOMAINS = ("in-domain", "near-domain", "out-domain")


def load_nocaps_json(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    path = data_file(root, files["file"], FORMAT)
    data = read_object(path, "images")
    images = records(data, "images", path)
    test_file = "annotations" not in data  # nocaps_test_image_info.json: the server holds its captions
    annotations = [] if test_file else records(data, "annotations", path)
    folder = image_folder(root, files["images"], FORMAT)

    captions: dict[str, list[tuple[object, str]]] = {}
    for index, annotation in enumerate(annotations):
        where = f"{path}: annotations[{index}]"
        require(annotation, where, ("image_id", "caption"))
        image_id = identifier(annotation["image_id"], f"{where}.image_id", nonempty=True)
        order = annotation.get("id", index)
        if isinstance(order, bool) or not isinstance(order, int):
            order = index
        captions.setdefault(image_id, []).append((order, typed(annotation["caption"], str, f"{where}.caption")))

    examples: list[Example] = []
    relative: list[str] = []
    seen: dict[str, int] = {}
    for index, record in enumerate(images):
        where = f"{path}: images[{index}]"
        require(record, where, ("id", "file_name", "domain"))
        image_id = identifier(record["id"], f"{where}.id", nonempty=True)
        where = f"{path}: image id {image_id} (images[{index}])"
        if image_id in seen:
            raise UserError(f"{path}: duplicate image id {image_id} (images[{seen[image_id]}] and images[{index}])")
        seen[image_id] = index
        file_name = typed(record["file_name"], str, f"{where}.file_name")
        if not file_name or "/" in file_name or "\\" in file_name or file_name.startswith("."):
            raise UserError(f"{where}: file_name {file_name!r} is not a plain file name")
        domain = typed(record["domain"], str, f"{where}.domain")
        if domain not in DOMAINS:
            raise UserError(f"{where}: domain {domain!r} is not one of {', '.join(DOMAINS)}")
        references = [caption.strip() for _, caption in sorted(captions.pop(image_id, []), key=lambda c: c[0])]
        if not references and not test_file:
            raise UserError(f"{where}: no caption in 'annotations' refers to this image")
        relative.append(file_name)
        examples.append(
            Example(
                id=image_id,
                image_id=image_id,
                image=FileImage(folder / file_name),
                fields={},
                answers=tuple(references),
                metadata={"domain": domain},
            )
        )
    if not examples:
        raise UserError(f"{path}: 'images' is empty")
    if captions:
        orphan = next(iter(captions))
        raise UserError(
            f"{path}: annotations refer to image_id {orphan}, which 'images' does not list "
            f"({len(captions)} such image ids); the file is truncated or edited"
        )
    check_files_exist((folder / name for name in relative), f"images listed in {path.name}", IMAGES_HINT)
    return ExampleSet(name=name, source=str(root), examples=examples)


register(FileFormat(FORMAT, keys=("file", "images"), markers=("file",), load=load_nocaps_json))
