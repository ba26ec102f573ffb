"""ImageNet-1k as a class-folder tree plus the class-index file.

    val/n01440764/ILSVRC2012_val_00000293.JPEG        (the validation set sorted into class folders,
    train/n01440764/n01440764_10026.JPEG               as the usual valprep.sh does)
    imagenet_class_index.json   {"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], ...}

Task-file keys of one split: `images` (the split's folder of class folders) and `class_index` (the
JSON file). One `Example` per image, in file-name order (the official order for the validation
set): the id is the file's stem, `label` the class index (the position of its class among the
task's 1,000 candidates), `answers` the class-index file's name with "_" read as a space
("great_white_shark" -> "great white shark"; the task's candidates hold the CLIP-style names).
A class-index file that lists only some classes is fine (their indices stay the official ones);
a class folder that it does not list is an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import data_file, data_root, image_files, image_folder, read_object

FORMAT = "imagenet_folder"


def load_imagenet_folder(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    index_path = data_file(root, files["class_index"], FORMAT)
    classes = _class_index(index_path)
    folder = image_folder(root, files["images"], FORMAT)

    found: list[tuple[str, str, int]] = []  # (file name, class folder, label)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise UserError(
                f"{folder}: {entry.name} is not a class folder; the split's images must be sorted into one folder "
                "per class named by its WordNet id (e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)"
            )
        if entry.name not in classes:
            raise UserError(
                f"{folder / entry.name}: class folder {entry.name!r} is not in {index_path.name}; "
                "use the class-index file of the same ImageNet release"
            )
        label = classes[entry.name][0]
        found.extend((file_name, entry.name, label) for file_name in image_files(Path(entry.path)))
    if not found:
        raise UserError(f"{folder}: no images in its class folders (expected e.g. {folder.name}/n01440764/*.JPEG)")
    found.sort(key=lambda item: (item[0], item[1]))

    examples: list[Example] = []
    seen: dict[str, str] = {}
    for file_name, wnid, label in found:
        example_id = Path(file_name).stem
        if example_id in seen:
            raise UserError(
                f"{folder}: image {example_id} is in two class folders ({seen[example_id]} and {wnid}); "
                "each image must have one class"
            )
        seen[example_id] = wnid
        examples.append(
            Example(
                id=example_id,
                image_id=example_id,
                image=FileImage(folder / wnid / file_name),
                fields={},
                answers=(classes[wnid][1],),
                metadata={"wnid": wnid},
                label=label,
            )
        )
    return ExampleSet(name=name, source=str(root), examples=examples)


def _class_index(path: Path) -> dict[str, tuple[int, str]]:
    """WordNet id -> (class index, class name with "_" read as a space)."""
    data = read_object(path)
    if not data:
        raise UserError(f"{path}: the class index is empty; is this imagenet_class_index.json?")
    classes: dict[str, tuple[int, str]] = {}
    for key, value in data.items():
        where = f"{path}: entry {key!r}"
        if not (key.isascii() and key.isdigit()):
            raise UserError(f"{where}: keys must be class indices (\"0\" ... \"999\"); is this imagenet_class_index.json?")
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v for v in value)):
            raise UserError(f"{where}: expected [wordnet_id, class_name], found {value!r}")
        wnid, class_name = value
        if wnid in classes:
            raise UserError(f"{where}: WordNet id {wnid} is listed twice (also as class {classes[wnid][0]})")
        classes[wnid] = (int(key), class_name.replace("_", " "))
    return classes


register(
    FileFormat(FORMAT, keys=("images", "class_index"), markers=("class_index", "images"), load=load_imagenet_folder)
)
