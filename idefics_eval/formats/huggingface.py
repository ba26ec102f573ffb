"""Hugging Face datasets: a `save_to_disk` folder, a folder of data files named by split, or a hub id.

Only the small columns (ids, questions, answers, ...) are read into Python when the split is loaded;
the image column stays in the Arrow table and each `Example.image` reads its own row on demand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..examples import DatasetImage, Example, ExampleSet, FileImage, ImageRef

REQUIRED_COLUMNS = ("id", "image", "answers")
METADATA_NAMES = frozenset({"answer_type", "question_type", "multiple_choice_answer"})
DATA_FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".arrow")


def is_save_to_disk_folder(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def has_data_files(folder: Path) -> bool:
    """Data files at the top of `folder` or one level down (e.g. `data/train-00000.parquet`)."""
    for pattern in ("*", "*/*"):
        for path in folder.glob(pattern):
            if path.suffix in DATA_FILE_SUFFIXES and path.is_file():
                return True
    return False


def load_huggingface(location: str, split: str, columns: Mapping[str, str], name: str) -> ExampleSet:
    """Load split `split` (the dataset's own split name) of the dataset at `location`.

    `columns` maps harness field -> dataset column: `id`, `image` and `answers` are required,
    `image_id` defaults to the id, metadata names (`answer_type`, ...) go to `Example.metadata` and any
    other name (e.g. `question`) to `Example.fields`.
    """
    import datasets

    for needed in REQUIRED_COLUMNS:
        if needed not in columns:
            raise UserError(f"{name}: the task's huggingface columns have no {needed!r} entry; add it")
    folder = Path(location).expanduser()
    base: Path | None = None
    if folder.is_dir():
        base = folder.resolve()
        if is_save_to_disk_folder(folder):
            dataset = _from_disk(folder, split)
        else:
            dataset = _from_files(folder, split)
        source = str(base)
    else:
        try:
            dataset = datasets.load_dataset(location, split=split)
        except Exception as error:  # hub errors come in many types: not found, offline, bad split
            raise UserError(
                f"cannot load Hugging Face dataset {location!r} split {split!r} ({_describe(error)}); "
                f"no local folder {location!r} exists, so it was treated as a hub id: check the id and split, "
                "connect to the network or fill the cache, or pass a local folder with --data"
            ) from None
        if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            dataset = _pick_split(dataset, split, location)
        source = location
    if not isinstance(dataset, datasets.Dataset):
        raise UserError(
            f"{location}: split {split!r} loaded as {type(dataset).__name__}, not an Arrow-backed Dataset; "
            "save it with save_to_disk and pass the folder with --data"
        )
    return _examples(dataset, columns, name, source, base, location, split)


def _from_disk(folder: Path, split: str):
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as error:
        raise UserError(f"{folder}: cannot read the save_to_disk dataset ({_describe(error)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        return _pick_split(loaded, split, str(folder))
    if loaded.split is not None and str(loaded.split) != split:
        raise UserError(
            f"{folder}: holds only split {str(loaded.split)!r}, not {split!r}; save a DatasetDict with all "
            "the task's splits, or point --data at the folder of the right split"
        )
    return loaded


def _from_files(folder: Path, split: str):
    import datasets

    try:
        loaded = datasets.load_dataset(str(folder))
    except Exception as error:
        raise UserError(
            f"{folder}: cannot load the data files ({_describe(error)}); name them by split "
            "(e.g. train-00000.parquet, validation.jsonl) and use one format per folder"
        ) from None
    return _pick_split(loaded, split, str(folder))


def _describe(error: BaseException) -> str:
    """`Type: first line` of an error and of its cause (datasets wraps the useful one)."""
    parts = []
    while error is not None and len(parts) < 2:
        first_line = (str(error).strip().splitlines() or [""])[0]
        parts.append(f"{type(error).__name__}: {first_line}")
        error = error.__cause__
    return "; caused by ".join(parts)


def _pick_split(loaded: Mapping[str, Any], split: str, where: str):
    if split not in loaded:
        raise UserError(
            f"{where}: no split {split!r} (it has: {', '.join(loaded) or 'none'}); name the data files by split "
            "or fix the task's huggingface splits"
        )
    return loaded[split]


def _examples(
    dataset, columns: Mapping[str, str], name: str, source: str, base: Path | None, location: str, split: str
) -> ExampleSet:
    import datasets

    there = list(dataset.column_names)
    for field, column in columns.items():
        if column not in there:
            raise UserError(
                f"{source} split {split!r}: no column {column!r} (for {field!r}; columns there: {', '.join(there)}); "
                "fix the task's huggingface `columns`"
            )
    image_column = columns["image"]
    fingerprint = getattr(dataset, "_fingerprint", None) or hashlib.sha256(
        f"{location}\x1f{split}".encode()
    ).hexdigest()[:16]
    feature = dataset.features[image_column]
    image_is_feature = isinstance(feature, datasets.Image)
    if image_is_feature:
        if feature.decode:
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    elif not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise UserError(
            f"{source} split {split!r}: column {image_column!r} is {feature}, neither an image nor a path string; "
            "fix the task's huggingface `columns` (image)"
        )

    # Read only the small columns, column-wise, straight from Arrow: no image bytes, no row loop over them.
    wanted = sorted({column for field, column in columns.items() if not (field == "image" and image_is_feature)})
    table = dataset.select_columns(wanted).with_format("arrow")[:]
    values = {column: table.column(column).to_pylist() for column in wanted}
    del table

    ids = [_id(value, i, columns["id"], source) for i, value in enumerate(values[columns["id"]])]
    seen: dict[str, int] = {}
    for index, example_id in enumerate(ids):
        if example_id in seen:
            raise UserError(
                f"{source} split {split!r}: duplicate id {example_id} in column {columns['id']!r} "
                f"(rows {seen[example_id]} and {index}); map `id` to a column that is unique per example"
            )
        seen[example_id] = index
    image_ids = (
        [_id(value, i, columns["image_id"], source) for i, value in enumerate(values[columns["image_id"]])]
        if "image_id" in columns
        else ids
    )
    extra = {field: column for field, column in columns.items() if field not in ("id", "image", "image_id", "answers")}
    metadata_columns = {field: values[column] for field, column in extra.items() if field in METADATA_NAMES}
    field_columns = {field: values[column] for field, column in extra.items() if field not in METADATA_NAMES}
    answers_column = values[columns["answers"]]
    paths = None if image_is_feature else values[image_column]

    examples = []
    for index, example_id in enumerate(ids):
        where = f"{source} split {split!r} id {example_id}"
        image: ImageRef
        if paths is None:
            image = DatasetImage(dataset=dataset, index=index, column=image_column, fingerprint=fingerprint)
        else:
            image = FileImage(_resolve(paths[index], base, where, image_column))
        fields = {}
        for field, column_values in field_columns.items():
            value = column_values[index]
            if value is None:
                raise UserError(f"{where}: column {columns[field]!r} ({field}) is empty")
            fields[field] = value if isinstance(value, str) else str(value)
        examples.append(
            Example(
                id=example_id,
                image_id=image_ids[index],
                image=image,
                fields=fields,
                answers=_answers(answers_column[index], where, columns["answers"]),
                metadata={field: column_values[index] for field, column_values in metadata_columns.items()},
            )
        )
    return ExampleSet(name=name, source=source, examples=examples)


def _id(value: Any, index: int, column: str, source: str) -> str:
    if value is None or isinstance(value, (bool, float, list, dict)):
        raise UserError(
            f"{source}: row {index}: column {column!r} holds {value!r}, not an id; "
            "map `id`/`image_id` in the task's columns to an int or string column"
        )
    return str(value)


def _resolve(value: Any, base: Path | None, where: str, column: str) -> Path:
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: column {column!r} holds {value!r}, not an image path")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def _answers(value: Any, where: str, column: str) -> tuple[str, ...]:
    """A list of strings, a list of {"answer", "answer_id"?} dicts, a dict of lists, or one string."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, dict) and isinstance(value.get("answer"), list):  # Sequence({...}) columns
        value = [dict(zip(value, row)) for row in zip(*value.values())]
    if not isinstance(value, list):
        raise UserError(
            f"{where}: column {column!r} holds {type(value).__name__}, not answers; expected a string, a list of "
            "strings or a list of {'answer': ...} records"
        )
    if all(isinstance(item, str) for item in value):
        return tuple(value)
    if all(isinstance(item, dict) and isinstance(item.get("answer"), str) for item in value):
        if all(item.get("answer_id") is not None for item in value):
            value = sorted(value, key=lambda item: item["answer_id"])
        return tuple(item["answer"] for item in value)
    raise UserError(
        f"{where}: column {column!r} mixes answer kinds; expected a list of strings or of {{'answer': ...}} records"
    )
