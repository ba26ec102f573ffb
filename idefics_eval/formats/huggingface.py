"""Hugging Face datasets: a `save_to_disk` folder, a folder of data files named by split, or a hub id.

Only the small columns (ids, questions, answers, ...) are read into Python when the split is loaded;
the image column stays in the Arrow table and each `Example.image` reads its own row on demand.

A dataset without an id column (e.g. HuggingFaceM4/FairFace) can use its row numbers: `columns.id`
(or `columns.image_id`) may be the special value `"@row"`, which gives the ids "0", "1", ... in the
split's row order. Metadata columns holding ClassLabel integers (e.g. FairFace's gender, race, age)
are stored by class name, as the dataset's ClassLabel feature names them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..examples import DatasetImage, Example, ExampleSet, FileImage, ImageRef
from ..paths import Confinement

REQUIRED_COLUMNS = ("id", "image")
METADATA_NAMES = frozenset(
    {"answer_type", "question_type", "multiple_choice_answer", "domain", "gender", "race", "age"}
)
ROW = "@row"  # `columns.id` / `columns.image_id` value: the row number is the id
# Harness keys with a meaning of their own; any other key in `columns` is a prompt field.
SPECIAL_KEYS = frozenset({"id", "image", "image_id", "answers", "label", "candidates", "extra_image", "relevance"})
IMAGE_KEYS = ("image", "extra_image")
DATA_FILE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".arrow")
PATH_FIX = "image paths must name files inside it: move the image there, or store its bytes in the dataset"


def is_save_to_disk_folder(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def has_data_files(folder: Path) -> bool:
    """Data files at the top of `folder` or one level down (e.g. `data/train-00000.parquet`)."""
    for pattern in ("*", "*/*"):
        for path in folder.glob(pattern):
            if path.suffix in DATA_FILE_SUFFIXES and path.is_file():
                return True
    return False


def load_huggingface(
    location: str, split: str, columns: Mapping[str, str], name: str, config: str | None = None,
    cache_dir: Path | None = None,
) -> ExampleSet:
    """Load split `split` (the dataset's own split name) of the dataset at `location`.

    `config` is the dataset's configuration name (hub ids only: `datasets.load_dataset(location, config)`;
    a local folder holds one configuration already). `columns` maps harness key -> dataset column:

    * `id`, `image` (required); `image_id` (defaults to the id); `id` and `image_id` may be `"@row"`,
      the row number ("0", "1", ...) where the dataset has no id column; `extra_image` (a second image column,
      to `Example.extra_images`). Ids may be int or str columns; images are image features or paths.
    * `answers`: a list of strings, a list of records with an "answer" or "raw" string (VQA answers,
      captioning references), or one string. Required unless `label` (or `extra_image`) is mapped.
    * `label`: an int class/candidate index (`Example.label`), or a string answer (kept as `answers`).
    * `candidates`: a list of strings, or of records with an "answer" or "text" string.
    * `relevance`: a list of numbers (VisDial dense relevance), to `metadata["relevance"]`.
    * metadata names (`answer_type`, `question_type`, `multiple_choice_answer`, `domain`, and FairFace's
      `gender`, `race`, `age`) go to `Example.metadata`, a ClassLabel integer as its class name; any
      other key (e.g. `question`, `caption`) is a prompt field (`Example.fields`).

    `cache_dir` is the run's cache folder: the datasets library keeps what it prepares under
    `cache_dir/datasets` (given to it as an argument; None: the library's own default). Image paths,
    in path columns or image features stored without their bytes, must name files inside the local
    folder (or, for a hub id, inside the library's download folders).
    """
    import datasets

    for needed in REQUIRED_COLUMNS:
        if needed not in columns:
            raise UserError(f"{name}: the task's huggingface columns have no {needed!r} entry; add it")
    if not {"answers", "label", "extra_image"} & set(columns):
        raise UserError(
            f"{name}: the task's huggingface columns have no 'answers' entry (nor 'label'); add the column "
            "holding the ground truth"
        )
    folder = Path(location).expanduser()
    cache = None if cache_dir is None else str(Path(cache_dir) / "datasets")
    if folder.is_dir():
        inside = Confinement(folder.resolve(), "the data folder")
        if is_save_to_disk_folder(folder):
            dataset = _from_disk(folder, split)
        else:
            dataset = _from_files(folder, split, cache)
        source = str(folder.resolve())
    else:
        inside = _download_folders(cache)
        shown = location if config is None else f"{location}' config '{config}"
        try:
            args = (location,) if config is None else (location, config)
            dataset = datasets.load_dataset(*args, split=split, cache_dir=cache)
        except Exception as error:  # hub errors come in many types: not found, offline, bad split
            raise UserError(
                f"cannot load Hugging Face dataset '{shown}' split {split!r} ({_describe(error)}); "
                f"no local folder {location!r} exists, so it was treated as a hub id: check the id, config and "
                "split, connect to the network or fill the cache, or pass a local folder with --data"
            ) from None
        if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            dataset = _pick_split(dataset, split, location)
        source = location if config is None else f"{location}:{config}"
    if not isinstance(dataset, datasets.Dataset):
        raise UserError(
            f"{location}: split {split!r} loaded as {type(dataset).__name__}, not an Arrow-backed Dataset; "
            "save it with save_to_disk and pass the folder with --data"
        )
    identity = location if config is None else f"{location}:{config}"  # names the data when Arrow has no fingerprint
    return _examples(dataset, columns, name, source, inside, identity, split)


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


def _download_folders(cache: str | None) -> Confinement:
    """Where a hub dataset's image files may lie: the datasets cache and the hub cache it downloads to."""
    import datasets
    from huggingface_hub import constants

    folders = (Path(cache or datasets.config.HF_DATASETS_CACHE), Path(constants.HF_HUB_CACHE))
    return Confinement(folders, "the datasets library's download folders")


def _from_files(folder: Path, split: str, cache: str | None):
    import datasets

    try:
        loaded = datasets.load_dataset(str(folder), cache_dir=cache)
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
    dataset, columns: Mapping[str, str], name: str, source: str, inside: Confinement, location: str, split: str
) -> ExampleSet:
    import datasets

    there = list(dataset.column_names)
    for key, column in columns.items():
        if column == ROW and key in ("id", "image_id"):
            continue
        if column not in there:
            raise UserError(
                f"{source} split {split!r}: no column {column!r} (for {key!r}; columns there: {', '.join(there)}); "
                "fix the task's huggingface `columns`"
            )
    fingerprint = getattr(dataset, "_fingerprint", None) or hashlib.sha256(
        f"{location}\x1f{split}".encode()
    ).hexdigest()[:16]

    # Image columns: image features stay in Arrow (read per row on demand), path strings are read here.
    feature_images: set[str] = set()
    stored_paths: dict[str, list[str | None]] = {}
    for key in IMAGE_KEYS:
        if key not in columns:
            continue
        column = columns[key]
        feature = dataset.features[column]
        if isinstance(feature, datasets.Image):
            feature_images.add(key)
            if feature.decode:
                dataset = dataset.cast_column(column, datasets.Image(decode=False))
            stored_paths[key] = _paths_without_bytes(dataset, column)
        elif not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise UserError(
                f"{source} split {split!r}: column {column!r} is {feature}, neither an image nor a path string; "
                f"fix the task's huggingface `columns` ({key})"
            )

    # Read only the small columns, column-wise, straight from Arrow: no image bytes, no row loop over them.
    wanted = sorted({column for key, column in columns.items() if key not in feature_images and column != ROW})
    table = dataset.select_columns(wanted).with_format("arrow")[:]
    values = {column: table.column(column).to_pylist() for column in wanted}
    del table

    rows = [str(index) for index in range(len(dataset))]
    if columns["id"] == ROW:
        ids = rows
    else:
        ids = [_id(v, i, columns["id"], source) for i, v in enumerate(values[columns["id"]])]
    seen: dict[str, int] = {}
    for index, example_id in enumerate(ids):
        if example_id in seen:
            raise UserError(
                f"{source} split {split!r}: duplicate id {example_id} in column {columns['id']!r} "
                f"(rows {seen[example_id]} and {index}); map `id` to a column that is unique per example"
            )
        seen[example_id] = index
    if "image_id" not in columns:
        image_ids = ids
    elif columns["image_id"] == ROW:
        image_ids = rows
    else:
        image_ids = [_id(v, i, columns["image_id"], source) for i, v in enumerate(values[columns["image_id"]])]
    other = {key: column for key, column in columns.items() if key not in SPECIAL_KEYS}
    metadata_columns = {
        key: _class_names(values[column], dataset.features[column])
        for key, column in other.items()
        if key in METADATA_NAMES
    }
    field_columns = {key: values[column] for key, column in other.items() if key not in METADATA_NAMES}
    column_of = {key: values[columns[key]] for key in ("answers", "label", "candidates", "relevance") if key in columns}

    def image_ref(key: str, index: int, where: str) -> ImageRef:
        column = columns[key]
        if key in feature_images:
            if stored_paths[key][index] is not None:  # opened from disk when loaded: refuse an escape now
                inside.check(stored_paths[key][index], where, PATH_FIX, f"image path (column {column!r})")
            # The extra image's key must differ from the main image's key of the same row.
            mark = fingerprint if key == "image" else f"{fingerprint}/{column}"
            return DatasetImage(dataset=dataset, index=index, column=column, fingerprint=mark, inside=inside)
        value = values[column][index]
        if not isinstance(value, str) or not value:
            raise UserError(f"{where}: column {column!r} holds {value!r}, not an image path")
        return FileImage(inside.check(value, where, PATH_FIX, f"image path (column {column!r})"))

    examples = []
    for index, example_id in enumerate(ids):
        where = f"{source} split {split!r} id {example_id}"
        fields = {}
        for key, column_values in field_columns.items():
            value = column_values[index]
            if value is None:
                raise UserError(f"{where}: column {columns[key]!r} ({key}) is empty")
            fields[key] = value if isinstance(value, str) else str(value)
        metadata = {key: column_values[index] for key, column_values in metadata_columns.items()}
        answers: tuple[str, ...] = ()
        if "answers" in column_of:
            answers = _answers(column_of["answers"][index], where, columns["answers"])
        label = None
        if "label" in column_of:
            label = _label(column_of["label"][index], where, columns["label"])
            if isinstance(label, str):
                answers = answers or (label,)
                label = None
        candidates: tuple[str, ...] = ()
        if "candidates" in column_of:
            candidates = _texts(column_of["candidates"][index], where, columns["candidates"], ("answer", "text"), "candidates")
        if "relevance" in column_of:
            metadata["relevance"] = _relevance(column_of["relevance"][index], where, columns["relevance"])
        examples.append(
            Example(
                id=example_id,
                image_id=image_ids[index],
                image=image_ref("image", index, where),
                fields=fields,
                answers=answers,
                metadata=metadata,
                candidates=candidates,
                label=label,
                extra_images=(image_ref("extra_image", index, where),) if "extra_image" in columns else (),
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


def _class_names(values: list[Any], feature: Any) -> list[Any]:
    """A ClassLabel column's integers as their class names (None, or -1 for "no label", as None); others as they are."""
    import datasets

    if not isinstance(feature, datasets.ClassLabel):
        return values
    return [None if value is None or value < 0 else feature.int2str(value) for value in values]


def _paths_without_bytes(dataset, column: str) -> list[str | None]:
    """Per row of an image feature column, the path of an image stored without its bytes (read from
    disk when loaded), else None. Reads the paths and the bytes' null mask only, not the bytes."""
    table = dataset.select_columns([column]).with_format("arrow")[:]
    found: list[str | None] = []
    for chunk in table.column(column).chunks:
        missing = chunk.field("bytes").is_null().to_pylist()
        found += [path if absent else None for path, absent in zip(chunk.field("path").to_pylist(), missing)]
    return found


def _records(value: Any) -> Any:
    """`Sequence({...})` columns come back as a dict of lists: turn them into a list of dicts."""
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        return [dict(zip(value, row)) for row in zip(*value.values())]
    return value


def _texts(value: Any, where: str, column: str, keys: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A list of strings, or of records holding the text under one of `keys` (the first found wins)."""
    value = _records(value)
    expected = f"a list of strings or of {{{', '.join(repr(k) for k in keys)}: ...}} records"
    if not isinstance(value, list):
        raise UserError(f"{where}: column {column!r} holds {type(value).__name__}, not {what}; expected {expected}")
    if all(isinstance(item, str) for item in value):
        return tuple(value)
    if all(isinstance(item, dict) for item in value):
        for key in keys:
            if all(isinstance(item.get(key), str) for item in value):
                if all(item.get("answer_id") is not None for item in value):
                    value = sorted(value, key=lambda item: item["answer_id"])
                return tuple(item[key] for item in value)
    raise UserError(f"{where}: column {column!r} mixes kinds of {what} or lacks their text; expected {expected}")


def _answers(value: Any, where: str, column: str) -> tuple[str, ...]:
    """One string, a list of strings, or a list of {"answer" | "raw", "answer_id"?} records (or a dict of lists)."""
    if isinstance(value, str):
        return (value,)
    return _texts(value, where, column, ("answer", "raw"), "answers")


def _label(value: Any, where: str, column: str) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if value < 0:
            raise UserError(
                f"{where}: column {column!r} holds label {value}, which marks an unlabelled example "
                "(a test split?); evaluate a split with labels"
            )
        return value
    raise UserError(f"{where}: column {column!r} holds {type(value).__name__} {value!r}, not an int or string label")


def _relevance(value: Any, where: str, column: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value
    ):
        raise UserError(f"{where}: column {column!r} holds {value!r}, not a list of relevance numbers")
    return [float(item) for item in value]
