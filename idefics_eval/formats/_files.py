"""Helpers shared by the file-based readers: JSON files, image folders, the checks every reader makes.

Every problem is a one-line `UserError` that names the file (and the record or folder) and says how
to fix it, as in `vqa_json`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})


def data_root(root: Path) -> Path:
    """The --data folder, absolute: image keys (and so fingerprints) must not depend on the cwd."""
    return Path(root).expanduser().resolve()


def read_json(path: Path, root: Path, format_name: str, key: str | None) -> Any:
    """The JSON object in `path` (a file of the data folder `root`); its top-level `key` must be there."""
    if not path.is_file():
        raise UserError(
            f"{path.name} not found in the data folder {root} (--data); download it into that folder "
            f"or fix the task's sources.{format_name} file names"
        )
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno} ({error.msg}); re-download the file"
        ) from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason}); re-download the file") from None
    if not isinstance(data, dict) or (key is not None and key not in data):
        found = f"keys {', '.join(map(repr, list(data)[:5]))}" if isinstance(data, dict) else type(data).__name__
        missing = f"missing top-level key {key!r}" if key is not None else "expected a JSON object"
        raise UserError(f"{path}: {missing} (found {found}); is this the right file?")
    return data


def records(data: dict, key: str, path: Path) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise UserError(f"{path}: {key!r} must be a list, found {type(value).__name__}")
    return value


def require(record: Any, where: str, keys: Iterable[str]) -> dict:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object, found {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise UserError(f"{where}: missing key {key!r} (found: {', '.join(map(str, record)) or 'none'})")
    return record


def typed_id(value: Any, where: str) -> str:
    """An int or string id, as text."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise UserError(f"{where}: expected an int or string id, found {type(value).__name__} {value!r}")
    return str(value)


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: expected a string, found {type(value).__name__} {value!r}")
    return value


def image_folder(root: Path, name: str, format_name: str, key: str = "images") -> Path:
    folder = root / name
    if not folder.is_dir():
        raise UserError(
            f"image folder {name!r} not found in the data folder {root} (--data); put the split's images "
            f"there or fix the task's sources.{format_name} `{key}` key"
        )
    return folder


def check_images_exist(folder: Path, relative: list[str], where: str) -> None:
    """One directory listing per folder instead of a stat per image (COCO has 120k images)."""
    listings: dict[Path, set[str]] = {}
    missing: list[str] = []
    for name in relative:
        path = folder / name
        names = listings.get(path.parent)
        if names is None:
            try:
                names = listings[path.parent] = set(os.listdir(path.parent))
            except OSError:
                names = listings[path.parent] = set()
        if path.name not in names:
            missing.append(name)
    if missing:
        raise UserError(
            f"image not found: {folder / missing[0]} ({len(missing)} of {len(relative)} images {where} missing); "
            "check the data folder (--data) and the task's `images` folder"
        )


def natural_key(name: str) -> tuple:
    """Sort key that puts "9.png" before "10.png"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def image_files(folder: Path) -> list[str]:
    """The image file names directly in `folder` (hidden files and other files are skipped)."""
    return [
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".") and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
    ]
