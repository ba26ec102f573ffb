"""Helpers shared by the file-based readers: data files, JSON and JSON Lines, record checks, image files.

One function per job; every reader uses these rather than its own copy. Every problem is a one-line
`UserError` that names the file, and the record and key where there is one, and says how to fix it.

Record checks word a wrong value in one of two ways, kept from the readers' original messages:
with `key`, "{where}: 'label' must be int, found str '1'"; without, `where` already ends with the
value's name ("{file}: images[4].split") and the message reads "{where}: expected a string, found ...".
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


def data_file(root: Path, name: str, format_name: str, what: str = "it") -> Path:
    """`root / name`, which must be a file; `format_name` names the task's source (sources.<format_name>)."""
    path = root / name
    if not path.is_file():
        raise UserError(
            f"{name} not found in the data folder {root} (--data); download {what} into that folder "
            f"or fix the task's sources.{format_name} file names"
        )
    return path


def image_folder(root: Path, name: str, format_name: str, key: str = "images",
                 fix: str = "put the split's images there") -> Path:
    """`root / name`, which must be a folder; `fix` says how to fill it, `key` is the task-file key naming it."""
    folder = root / name
    if not folder.is_dir():
        raise UserError(
            f"image folder {name!r} not found in the data folder {root} (--data); {fix} "
            f"or fix the task's sources.{format_name} `{key}` key"
        )
    return folder


def read_json(path: Path) -> Any:
    """The JSON value in `path`, whatever its shape."""
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno} ({error.msg}); re-download the file"
        ) from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason}); re-download the file") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read; re-download the file") from None


def read_object(path: Path, key: str | None = None) -> dict[str, Any]:
    """The JSON object in `path`; with `key`, that top-level key must be there."""
    data = read_json(path)
    if not isinstance(data, dict) or (key is not None and key not in data):
        found = f"keys {', '.join(map(repr, list(data)[:5]))}" if isinstance(data, dict) else type(data).__name__
        missing = f"missing top-level key {key!r}" if key is not None else "expected a JSON object"
        raise UserError(f"{path}: {missing} (found {found}); is this the right file?")
    return data


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) for every non-blank line of a JSON Lines file."""
    found = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    found.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise UserError(
                        f"{path}: line {number}: invalid JSON at column {error.colno} ({error.msg}); "
                        "each line must hold one JSON object"
                    ) from None
                except RecursionError:
                    raise UserError(f"{path}: line {number}: nested too deeply to read; each line must hold one JSON object") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason}); re-download the file") from None
    return found


def records(data: dict[str, Any], key: str, path: Path) -> list[Any]:
    """`data[key]` (a top-level key of the file `path`), which must be a list."""
    value = data[key]
    if not isinstance(value, list):
        raise UserError(f"{path}: {key!r} must be a list, found {type(value).__name__}")
    return value


def require(record: Any, where: str, keys: Iterable[str]) -> dict[str, Any]:
    """`record`, which must be an object holding every one of `keys`."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object, found {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise UserError(f"{where}: missing key {key!r} (found: {', '.join(map(str, record)) or 'none'})")
    return record


_DESCRIBED = {(str,): "a string", (int, str): "an int or string id"}


def _wrong(value: Any, kinds: tuple[type, ...], where: str, key: str | None) -> UserError:
    found = f"{type(value).__name__} {value!r}"
    names = " or ".join(kind.__name__ for kind in kinds)
    if key is None:
        return UserError(f"{where}: expected {_DESCRIBED.get(kinds, names)}, found {found}")
    return UserError(f"{where}: {key!r} must be {names}, found {found}")


def typed(value: Any, kind: type | tuple[type, ...], where: str, key: str | None = None) -> Any:
    """`value` (the record's `key`, or the value `where` names), checked to be of `kind`; bools never pass for ints."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _wrong(value, kinds, where, key)
    return value


def identifier(value: Any, where: str, key: str | None = None, *, nonempty: bool = False) -> str:
    """An int or string id, as the string the rest of the harness uses; `nonempty` refuses ""."""
    value = typed(value, (int, str), where, key)
    if nonempty and value == "":
        raise _wrong(value, (int, str), where, key)
    return str(value)


class FileListing:
    """Whether files exist, from one directory listing per folder instead of a stat per file (COCO has 120k images)."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        names = self._names.get(path.parent)
        if names is None:
            try:
                names = self._names[path.parent] = set(os.listdir(path.parent))
            except OSError:
                names = self._names[path.parent] = set()
        return path.name in names


def check_files_exist(paths: Iterable[Path], what: str, hint: str, listing: FileListing | None = None) -> None:
    """Every one of `paths` must exist; `what` names them in the message (e.g. "images"), `hint` says what to check."""
    listing = listing or FileListing()
    missing: list[Path] = []
    total = 0
    for path in paths:
        total += 1
        if not listing.exists(path):
            missing.append(path)
    if missing:
        raise UserError(f"image not found: {missing[0]} ({len(missing)} of {total} {what} missing); {hint}")


IMAGES_HINT = "check the data folder (--data) and the task's `images` folder"


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
