"""Cache files that cannot lie: every payload is written with its SHA-256 and checked before use.

A cache entry on disk is a payload file and a small JSON meta file beside it, written last: the
meta holds what the payload was computed from (fields chosen by the caller, compared whole) and
the payload's SHA-256. `read_entry` returns the decoded payload only when the meta parses, says
exactly what the caller expects, and the payload's bytes hash to the recorded digest; otherwise it
logs ONE warning line naming the file ("cache entry X failed its checksum; rebuilding") and
returns None, and the caller rebuilds the entry in place. A payload without a meta (a write that
was interrupted) is simply absent. Both files are written atomically (a temporary file in the
same folder, renamed into place), and the old meta is removed before a new payload goes in, so a
stale meta never vouches for a new payload. The bytes are read once, hashed and decoded from
memory, so a file replaced between the check and the use cannot slip through.

`write_checked` and `read_checked` are the two halves without a meta, for a caller that keeps the
digest in memory (the image-feature spill, whose files live for one run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checked(path: Path, data: bytes) -> str:
    """Write `data` to `path` atomically (never a half file under the name); returns its SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256(data)


def read_checked(path: Path, digest: str, action: str = "rebuilding") -> bytes | None:
    """The bytes of `path` if they hash to `digest`; else None, after one warning line."""
    data = _verified(path, digest)
    return _reject(path, data, action) if isinstance(data, str) else data


def _verified(path: Path, digest: str) -> bytes | str:
    """The bytes of `path` if they hash to `digest`, else what is wrong with them."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    return data if sha256(data) == digest else "failed its checksum"


def write_entry(payload: Path, data: bytes, meta_path: Path, meta: dict) -> None:
    """Write `data` to `payload`, then `meta` with the payload's SHA-256 to `meta_path` (last: it
    marks the entry complete)."""
    Path(meta_path).unlink(missing_ok=True)  # the old meta must not vouch for the new payload
    digest = write_checked(payload, data)
    write_checked(meta_path, json.dumps({**meta, "sha256": digest}, indent=1).encode())


def read_entry(payload: Path, meta_path: Path, meta: dict, decode: Callable[[bytes], T]) -> T | None:
    """The entry decoded by `decode` if `meta_path` records exactly `meta` and the payload's digest,
    and `decode` accepts the bytes (it raises ValueError for a well-formed payload of the wrong
    shape; FAISS raises RuntimeError); None if there is no entry, or after one warning line naming
    the file if the entry is bad."""
    try:
        text = Path(meta_path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        return _reject(meta_path, f"cannot be read ({error.strerror})")
    try:
        recorded = json.loads(text)
    except ValueError:  # also not UTF-8
        return _reject(meta_path, "is not valid JSON")
    digest = recorded.pop("sha256", None) if isinstance(recorded, dict) else None
    if recorded != meta or not isinstance(digest, str):
        return _reject(meta_path, "does not match what it is used for (damaged, or from another version)")
    data = _verified(payload, digest)
    if isinstance(data, str):  # the damage may be in the recorded digest: name both files
        return _reject(payload, f"{data} (recorded in {meta_path})")
    try:
        return decode(data)
    except (ValueError, RuntimeError, EOFError) as error:  # checksum good but unusable: another library version
        return _reject(payload, f"cannot be decoded ({error})")


def _reject(path: Path, problem: str, action: str = "rebuilding") -> None:
    problem = " ".join(problem.split())  # library errors can span lines; the warning is one
    log.warning("cache entry %s %s; %s", path, problem, action)
