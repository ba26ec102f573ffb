"""An image folder per class, as OpenAI's Rendered SST2 release is laid out:

    rendered-sst2/test/negative/00000.png
    rendered-sst2/test/positive/00001.png
    rendered-sst2/train/...

Task-file keys of one split: `images` (the split's folder) and `classes`: the class names, comma
separated, in the order of the task's candidates (`candidates.classes`), each also the name of its
folder. One `Example` per image, ordered by class then file name: the id is `<class>/<file stem>`,
`label` the class's position in `classes` and `answers` the class name. A folder that is not a
class, or a class without a folder, is an error (a wrong path or class list, not data to skip).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import data_root, image_files, image_folder, natural_key

FORMAT = "class_folder"


def load_class_folder(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    classes = _classes(files["classes"])
    folder = image_folder(root, files["images"], FORMAT)
    present = {entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")}
    strays = sorted(present - set(classes))
    if strays:
        raise UserError(
            f"{folder / strays[0]}: folder {strays[0]!r} is not one of the task's classes ({', '.join(classes)}); "
            "fix the task's sources.class_folder `classes` or the data folder"
        )
    missing = [c for c in classes if c not in present]
    if missing:
        raise UserError(
            f"{folder}: no folder for class {missing[0]!r} (found: {', '.join(sorted(present)) or 'none'}); "
            "each class's images go in a folder named after it"
        )
    examples: list[Example] = []
    seen: set[str] = set()
    for label, class_name in enumerate(classes):
        for file_name in sorted(image_files(folder / class_name), key=natural_key):
            example_id = f"{class_name}/{Path(file_name).stem}"
            if example_id in seen:
                raise UserError(
                    f"{folder / class_name}: two images named {Path(file_name).stem}.* (different extensions); "
                    "image names must be unique within a class folder"
                )
            seen.add(example_id)
            examples.append(
                Example(
                    id=example_id,
                    image_id=example_id,
                    image=FileImage(folder / class_name / file_name),
                    fields={},
                    answers=(class_name,),
                    label=label,
                )
            )
    if not examples:
        raise UserError(f"{folder}: no images in the class folders {', '.join(classes)}")
    return ExampleSet(name=name, source=str(root), examples=examples)


def _classes(value: str) -> list[str]:
    classes = [part.strip() for part in value.split(",")]
    if len(classes) < 2 or not all(classes):
        raise UserError(
            f"sources.{FORMAT} classes {value!r}: give two or more class names separated by commas, "
            "in the order of the task's candidates (e.g. \"negative,positive\")"
        )
    if len(set(classes)) != len(classes):
        raise UserError(f"sources.{FORMAT} classes {value!r}: a class is named twice")
    bad = [c for c in classes if c.startswith(".") or "/" in c or "\\" in c]
    if bad:
        raise UserError(f"sources.{FORMAT} classes {value!r}: {bad[0]!r} is not a folder name")
    return classes


register(FileFormat(FORMAT, keys=("images", "classes"), markers=("images",), load=load_class_folder))
