"""Shared helpers of the file-format readers: JSON and JSON Lines files, record checks, image files.

Every problem becomes a one-line `UserError` that names the file, and the record and key where
there is one, so that a user can open the file at the right place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError


def data_file(root: Path, name: str, source: str) -> Path:
    """`root / name`, which must exist; `source` names the task-file source (e.g. sources.visdial_json)."""
    path = root / name
    if not path.is_file():
        raise UserError(
            f"{name} not found in the data folder {root} (--data); download it into that folder "
            f"or fix the file names in the task's {source}"
        )
    return path


def read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno} ({error.msg}); re-download the file"
        ) from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason}); re-download the file") from None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) for every non-blank line of a JSON Lines file."""
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    records.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise UserError(
                        f"{path}: line {number}: invalid JSON at column {error.colno} ({error.msg}); "
                        "each line must hold one JSON object"
                    ) from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason}); re-download the file") from None
    return records


def require(record: Any, where: str, keys: Iterable[str]) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object, found {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise UserError(f"{where}: missing key {key!r} (found: {', '.join(record) or 'none'})")
    return record


def typed(value: Any, kind: type | tuple[type, ...], where: str, key: str) -> Any:
    """`value` (the record's `key`), checked to be of `kind`; bools never pass for ints."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise UserError(f"{where}: {key!r} must be {names}, found {type(value).__name__} {value!r}")
    return value


def identifier(value: Any, where: str, key: str) -> str:
    """An int or string id, as the string the rest of the harness uses."""
    return str(typed(value, (int, str), where, key))


def check_files_exist(paths: Iterable[Path], what: str, hint: str) -> None:
    """One directory listing per folder instead of a stat per file (a split can hold 100k images).

    `what` names the files for the message (e.g. "images"), `hint` says what to check.
    """
    listings: dict[Path, set[str]] = {}
    missing: list[Path] = []
    total = 0
    for path in paths:
        total += 1
        names = listings.get(path.parent)
        if names is None:
            try:
                names = listings[path.parent] = set(os.listdir(path.parent))
            except OSError:
                names = listings[path.parent] = set()
        if path.name not in names:
            missing.append(path)
    if missing:
        raise UserError(f"image not found: {missing[0]} ({len(missing)} of {total} {what} missing); {hint}")
