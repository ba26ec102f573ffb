"""The official FairFace release (github.com/joojs/fairface): a label CSV per split and the face images.

    fairface_label_train.csv, fairface_label_val.csv:
        file,age,gender,race,service_test
        val/1.jpg,3-9,Male,East Asian,False
        val/2.jpg,50-59,Female,East Asian,True
        ...
    train/1.jpg, train/2.jpg, ...; val/1.jpg, ...   (fairface-img-margin025-trainval.zip or the
                                                     margin125 zip, unpacked)

`file` is relative to the image folder; the values are gender `Male`/`Female`, race `White`,
`Black`, `Latino_Hispanic`, `East Asian`, `Southeast Asian`, `Indian`, `Middle Eastern`, and age
`0-2`, `3-9`, `10-19`, `20-29`, `30-39`, `40-49`, `50-59`, `60-69`, `more than 70`.

Task-file keys of one split: `labels` (the CSV), `attribute` (the column the task classifies: gender,
race or age), `classes` (that column's values, comma-separated, in the order of the task's
candidates, so that a value's position is its label) and the optional `images` (the folder `file` is
relative to; default: the data folder itself, as the release unpacks).

One `Example` per row, in file order: the id is `file` without its extension (`val/1`), `label` the
position of the row's `attribute` value in `classes` and `answers` that value; `metadata` holds all
three attributes (`gender`, `race`, `age`, the CSV's values) and `service_test` (True/False), so that
the fairface_accuracy metric can break any task's accuracy down by every demographic group. A value
outside `classes` is an error naming the file, line and column (a wrong file or class list, not data
to skip).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import IMAGES_HINT, check_files_exist, data_file, data_root, image_folder

FORMAT = "fairface_csv"
ATTRIBUTES = ("gender", "race", "age")
COLUMNS = ("file", *ATTRIBUTES)


def load_fairface_csv(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    attribute = files["attribute"].strip()
    if attribute not in ATTRIBUTES:
        raise UserError(f"sources.{FORMAT} attribute {files['attribute']!r}: use one of {', '.join(ATTRIBUTES)}")
    classes = _classes(files["classes"], attribute)
    path = data_file(root, files["labels"], FORMAT, what="FairFace's label CSVs")
    folder = image_folder(root, files.get("images") or ".", FORMAT)

    examples: list[Example] = []
    seen: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [column.strip() for column in reader.fieldnames or []]
            missing = [column for column in COLUMNS if column not in header]
            if missing:
                raise UserError(
                    f"{path}: no column {missing[0]!r} (header: {', '.join(header) or 'empty'}); expected FairFace's "
                    "file,age,gender,race,service_test"
                )
            reader.fieldnames = header
            for row in reader:
                line = reader.line_num
                where = f"{path}: line {line}"
                if None in row or any(row.get(column) is None for column in COLUMNS):
                    raise UserError(f"{where}: expected {len(header)} comma-separated values ({', '.join(header)})")
                values = {column: row[column].strip() for column in COLUMNS}
                file_name = values["file"]
                relative = Path(file_name)
                if not file_name:  # (a path leaving the data folder is refused for every format by load_split)
                    raise UserError(f"{where}: empty 'file'; name the image file relative to the data folder")
                example_id = relative.with_suffix("").as_posix()
                where = f"{path}: line {line} ({file_name})"
                if example_id in seen:
                    raise UserError(f"{path}: {file_name} is listed twice (lines {seen[example_id]} and {line})")
                seen[example_id] = line
                for column in ATTRIBUTES:
                    if not values[column]:
                        raise UserError(f"{where}: empty {column!r}")
                value = values[attribute]
                if value not in classes:
                    raise UserError(
                        f"{where}: {attribute} {value!r} is not one of the task's classes ({', '.join(classes)}); "
                        f"fix the task's sources.{FORMAT} `classes`"
                    )
                metadata: dict[str, object] = {column: values[column] for column in ATTRIBUTES}
                service = (row.get("service_test") or "").strip()
                if service:
                    metadata["service_test"] = {"True": True, "False": False}.get(service, service)
                examples.append(
                    Example(
                        id=example_id,
                        image_id=example_id,
                        image=FileImage(folder / relative),
                        fields={},
                        answers=(value,),
                        metadata=metadata,
                        label=classes.index(value),
                    )
                )
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason}); re-download the file") from None
    except csv.Error as error:
        raise UserError(f"{path}: not a readable CSV file ({error})") from None
    if not examples:
        raise UserError(f"{path}: no rows under the header; is it the right file?")
    check_files_exist((e.image.path for e in examples), f"images listed in {path.name}", IMAGES_HINT)
    return ExampleSet(name=name, source=str(root), examples=examples)


def _classes(value: str, attribute: str) -> list[str]:
    classes = [part.strip() for part in value.split(",")]
    if len(classes) < 2 or not all(classes):
        raise UserError(
            f"sources.{FORMAT} classes {value!r}: give the {attribute} values of the CSV, comma-separated, in the "
            "order of the task's candidates"
        )
    if len(set(classes)) != len(classes):
        raise UserError(f"sources.{FORMAT} classes {value!r}: a class is named twice")
    return classes


register(FileFormat(FORMAT, keys=("labels", "attribute", "classes"), markers=("labels",), load=load_fairface_csv,
                    optional=("images",)))
