"""Data formats: turn a task's source plus the user's --data into an `ExampleSet`.

`load_split` picks the reader from what --data holds: the task's VQA JSON files, a `save_to_disk`
folder, or a folder of parquet/jsonl/json/csv files; with no --data the task's hub id is used.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from ..examples import ExampleSet
from ..tasks import TaskSpec
from .huggingface import has_data_files, is_save_to_disk_folder, load_huggingface
from .vqa_json import load_vqa_json

__all__ = ["load_split", "load_vqa_json", "load_huggingface"]

# "name" or "owner/name", as the hub spells dataset ids; anything else given to --data is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def load_split(spec: TaskSpec, split: str, data: str | None) -> ExampleSet:
    """Load harness split `split` (e.g. "validation") of `spec` from `data` (the --data value, or None)."""
    name = f"{spec.name}/{split}"
    if data is None:
        if spec.huggingface is None:
            raise UserError(
                f"task {spec.name!r} has no huggingface source, so it needs its files: pass --data with the folder "
                f"holding its {_supported(spec)} files"
            )
        return _huggingface(spec, split, spec.huggingface.path, name)

    folder = Path(data).expanduser()
    if folder.is_dir():
        if spec.vqa_json is not None and _holds_vqa_json(spec, folder):
            if split not in spec.vqa_json:
                raise UserError(
                    f"{spec.path}: sources.vqa_json has no split {split!r} (it has: {', '.join(spec.vqa_json)})"
                )
            return load_vqa_json(folder, spec.vqa_json[split], name)
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
        return _huggingface(spec, split, str(folder), name)
    if folder.exists():
        raise UserError(f"--data {data}: not a folder; pass the folder holding the data files")
    if not _HUB_ID.match(data) or ".." in data:
        raise UserError(f"data folder not found: {data} (--data); check the path")
    if spec.huggingface is None:
        raise UserError(
            f"data folder not found: {data} (--data); task {spec.name!r} has no huggingface source, so --data "
            f"must be a folder holding its {_supported(spec)} files"
        )
    return _huggingface(spec, split, data, name)


def _holds_vqa_json(spec: TaskSpec, folder: Path) -> bool:
    """Whether any of the task's VQA JSON files is there (so a missing one is reported by name)."""
    assert spec.vqa_json is not None
    return any(
        (folder / file_name).is_file()
        for files in spec.vqa_json.values()
        for file_name in (files.questions, files.annotations)
    )


def _huggingface(spec: TaskSpec, split: str, location: str, name: str) -> ExampleSet:
    assert spec.huggingface is not None
    splits = spec.huggingface.splits
    if split not in splits:
        raise UserError(f"{spec.path}: sources.huggingface has no split {split!r} (it has: {', '.join(splits)})")
    return load_huggingface(location, splits[split], spec.huggingface.columns, name)


def _supported(spec: TaskSpec) -> str:
    kinds = []
    if spec.vqa_json is not None:
        files = sorted({f.questions for f in spec.vqa_json.values()} | {f.annotations for f in spec.vqa_json.values()})
        kinds.append(f"vqa_json ({', '.join(files)})")
    if spec.huggingface is not None:
        kinds.append(
            f"huggingface (hub id {spec.huggingface.path}, a save_to_disk folder, or parquet/jsonl/json/csv files "
            "named by split)"
        )
    return " or ".join(kinds) or "no sources"
