"""Data formats: turn a task's source plus the user's --data into an `ExampleSet`.

Each file format is a `FileFormat`: the keys a task file gives for one split, which of them name
files whose presence identifies the format in a --data folder, and a reader
`load(root, files, name) -> ExampleSet`. `load_split` picks the reader from what --data holds: one
of the task's file formats, a `save_to_disk` folder, or a folder of parquet/jsonl/json/csv files;
with no --data the task's hub id is used. Third-party formats register through the
`idefics_eval.formats` entry-point group (an object of type `FileFormat`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import UserError
from ..examples import ExampleSet, FileImage
from ..paths import Confinement
from ..tasks import TaskSpec, VqaJsonSplit
from .huggingface import has_data_files, is_save_to_disk_folder, load_huggingface
from .vqa_json import load_vqa_json

__all__ = ["BUNDLED", "FileFormat", "demo_data", "file_formats", "load_huggingface", "load_split", "load_vqa_json"]

BUNDLED = Path(__file__).resolve().parents[1] / "demo" / "data"  # the sample data of --demo and --demo-data

# "name" or "owner/name", as the hub spells dataset ids; anything else given to --data is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


@dataclass(frozen=True)
class FileFormat:
    name: str
    keys: tuple[str, ...]  # required keys of one split's entry in the task file
    markers: tuple[str, ...]  # keys whose values name files or folders that identify the format on disk
    load: Callable[[Path, Mapping[str, str], str], ExampleSet]  # (data folder, the split's entry, name)
    optional: tuple[str, ...] = ()


def _vqa_json(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    return load_vqa_json(root, VqaJsonSplit.of(files), name)


_BUILTIN = [FileFormat("vqa_json", ("questions", "images", "image_file"), ("questions", "annotations"), _vqa_json,
                       optional=("annotations",))]


def file_formats() -> dict[str, FileFormat]:
    """Built-in formats, then those installed packages register under `idefics_eval.formats`."""
    from . import builtin  # noqa: F401  (imports the format modules, which call register)

    found = {f.name: f for f in _BUILTIN}
    for entry in metadata.entry_points(group="idefics_eval.formats"):
        loaded = entry.load()
        if not isinstance(loaded, FileFormat):
            raise UserError(f"entry point {entry.name} ({entry.value}) is not an idefics_eval.formats.FileFormat")
        found[loaded.name] = loaded
    return found


def register(file_format: FileFormat) -> FileFormat:
    _BUILTIN.append(file_format)
    return file_format


def demo_data(spec: TaskSpec) -> str:
    """The --data value of `spec`'s bundled sample data."""
    folder = BUNDLED / spec.name
    if not folder.is_dir():
        raise UserError(f"task {spec.name} has no bundled sample data (for --demo or --demo-data); give --data")
    return str(folder)


def load_split(spec: TaskSpec, split: str, data: str | None, cache_dir: Path | None = None) -> ExampleSet:
    """Load harness split `split` (e.g. "validation") of `spec` from `data` (the --data value, or None);
    a Hugging Face dataset keeps what the datasets library prepares under `cache_dir` (--cache-dir)."""
    return _with_answers(_load_split(spec, split, data, cache_dir), spec, split)


def _with_answers(examples: ExampleSet, spec: TaskSpec, split: str) -> ExampleSet:
    """Refuse a record without answers where the task needs them, whatever format it came from: a
    generated task scores its queries against them, and shots show one unless they show the label.
    Found here, before the model loads, not in the metric or the prompt mid-run."""
    scored = split == spec.query_split and spec.request == "generate"
    shown = split == spec.support_split and spec.request != "match" and spec.shot_answer != "label"
    if not (scored or shown):
        return examples
    if scored and examples.examples and not any(example.answers for example in examples.examples):
        return _test_split(examples, spec)
    for example in examples.examples:
        if not example.answers:
            raise UserError(f"{examples.source}: example {example.id} of {examples.name} has no answers (an empty answer "
                            f"or caption list); task {spec.name} needs at least one per record: fix the record or remove it")
    return examples


def has_references(spec: TaskSpec, examples: ExampleSet) -> bool:
    """Whether a loaded query split is scored here: False for a test split (`_test_split`), whose
    evaluation server holds the answers; then a run writes predictions and no metric."""
    return spec.request != "generate" or all(example.answers for example in examples.examples)


def _test_split(examples: ExampleSet, spec: TaskSpec) -> ExampleSet:
    """A query split with no answers at all is a test split, whose evaluation server holds them: a
    test-server task (one with `submission`) runs it for predictions only; any other task is told so."""
    if spec.submission is None:
        raise UserError(
            f"{examples.source}: {examples.name} has no reference answers (a test split: its evaluation server "
            f"scores it), so task {spec.name} cannot score it; run its test-server task (the submission column of "
            "`idefics-eval tasks`) and write the server's file with `idefics-eval submission`"
        )
    return examples


def check_location(spec: TaskSpec, data: str | None) -> None:
    """Refuse, before anything is read, a `data` that names no place the task's data can come from:
    no --data for a task without a hub source, a missing folder, a file."""
    if data is None:
        if spec.huggingface is None:
            raise UserError(
                f"task {spec.name!r} has no huggingface source, so it needs its files: pass --data with the folder "
                f"holding its {_supported(spec)} files"
            )
        return
    folder = Path(data).expanduser()
    if folder.is_dir():
        return
    if folder.exists():
        raise UserError(f"--data {data}: not a folder; pass the folder holding the data files")
    if not _HUB_ID.match(data) or ".." in data:
        raise UserError(f"data folder not found: {data} (--data); check the path")
    if spec.huggingface is None:
        raise UserError(
            f"data folder not found: {data} (--data); task {spec.name!r} has no huggingface source, so --data "
            f"must be a folder holding its {_supported(spec)} files"
        )


def _load_split(spec: TaskSpec, split: str, data: str | None, cache_dir: Path | None) -> ExampleSet:
    name = f"{spec.name}/{split}"
    check_location(spec, data)
    if data is None:
        return _huggingface(spec, split, spec.huggingface.path, name, cache_dir)

    folder = Path(data).expanduser()
    if folder.is_dir():
        formats = file_formats()
        for format_name, splits in spec.sources.items():
            if format_name not in formats:
                raise UserError(f"{spec.path}: sources.{format_name} is not a known data format ({', '.join(sorted(formats))})")
            file_format = formats[format_name]
            if not _holds(file_format, splits, folder):
                continue
            if split not in splits:
                raise UserError(f"{spec.path}: sources.{format_name} has no split {split!r} (it has: {', '.join(splits)})")
            missing = [key for key in file_format.keys if key not in splits[split]]
            unknown = [key for key in splits[split] if key not in file_format.keys + file_format.optional]
            if missing or unknown:
                problem = f"missing required key {missing[0]!r}" if missing else f"unknown key {unknown[0]!r}"
                raise UserError(f"{spec.path}: sources.{format_name}.{split}: {problem} (keys: {', '.join(file_format.keys + file_format.optional)})")
            return _contained(file_format.load(folder, splits[split], name), folder, spec)
        kind = "save_to_disk" if is_save_to_disk_folder(folder) else "files" if has_data_files(folder) else None
        if kind is None:
            raise UserError(
                f"data folder {folder} (--data) holds nothing task {spec.name!r} can read; it reads "
                f"{_supported(spec)}"
            )
        if spec.huggingface is None:
            raise UserError(
                f"data folder {folder} (--data) holds a Hugging Face dataset ({kind}) but task {spec.name!r} has no "
                f"huggingface source; it reads {_supported(spec)}"
            )
        return _huggingface(spec, split, str(folder), name, cache_dir)
    return _huggingface(spec, split, data, name, cache_dir)


def _contained(examples: ExampleSet, folder: Path, spec: TaskSpec) -> ExampleSet:
    """Refuse image paths that leave the data folder, whichever reader built them ("../../etc/passwd"
    as an image id, a task's `images: /elsewhere`, a symbolic link in the folder that points out)."""
    inside = Confinement(folder, "the data folder")
    fix = f"fix the annotation or the task's file pattern ({spec.path}), or move the images into the data folder"
    for example in examples.examples:
        for image in (example.image, *example.extra_images):
            if isinstance(image, FileImage):
                inside.check(image.path, f"{examples.name} example {example.id}", fix)
    return examples


def _holds(file_format: FileFormat, splits: Mapping[str, Mapping[str, str]], folder: Path) -> bool:
    """Whether any split's marker file is in the folder (so a missing one is reported by name)."""
    return any((folder / files[key]).exists() for files in splits.values() for key in file_format.markers if key in files)


def _huggingface(spec: TaskSpec, split: str, location: str, name: str, cache_dir: Path | None) -> ExampleSet:
    assert spec.huggingface is not None
    splits = spec.huggingface.splits
    if split not in splits:
        raise UserError(f"{spec.path}: sources.huggingface has no split {split!r} (it has: {', '.join(splits)})")
    return load_huggingface(location, splits[split], spec.huggingface.columns, name, config=spec.huggingface.config,
                            cache_dir=cache_dir)


def _supported(spec: TaskSpec) -> str:
    kinds = []
    for format_name, splits in spec.sources.items():
        files = sorted({value for entry in splits.values() for key, value in entry.items() if "{" not in value})
        kinds.append(f"{format_name} ({', '.join(files)})")
    if spec.huggingface is not None:
        kinds.append(
            f"huggingface (hub id {spec.huggingface.path}, a save_to_disk folder, or parquet/jsonl/json/csv files "
            "named by split)"
        )
    return " or ".join(kinds) or "no sources"
