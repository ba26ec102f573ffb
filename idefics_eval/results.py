"""Results: one row per task x shots x seed, with everything needed to reproduce it.

`results.json` in the output folder is a list of rows. A rerun replaces the rows with the same
(task, shots, selection, seed) and keeps the others, so several tasks can share one folder.
Files are written to a temporary name and renamed into place: an interrupted write leaves the
previous file intact.
"""

from __future__ import annotations

import json
import os
import platform
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import UserError

PACKAGES = ("idefics-eval", "torch", "transformers", "datasets", "faiss-cpu", "numpy", "pillow", "pycocoevalcap")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Result:
    task: str
    shots: int
    selection: str
    seed: int | None  # None for RICES (deterministic) and for the mean over seeds
    metrics: dict[str, float]  # e.g. {"vqa_accuracy": 51.2, "vqa_accuracy/yes/no": 70.1}
    num_examples: int
    num_truncated: int  # scored queries whose prompt lost shots to fit the context limit
    predictions: str | None  # path of the predictions file, relative to the output folder
    config: dict[str, Any] = field(default_factory=dict)  # task/prompt versions, model, shots, data, versions
    metrics_std: dict[str, float] | None = None  # over seeds, on aggregate rows only
    num_skipped: int = 0  # queries skipped (--on-bad-example skip), not in the metrics: an unreadable image, or a prompt too long even with no shots

    @property
    def key(self) -> tuple:
        return (self.task, self.shots, self.selection, self.seed)


@contextmanager
def atomic_file(path: Path, mode: str = "w", **open_args):
    """Write to a temporary file beside `path` and rename it into place only when the writing
    finished: an interrupted or failed write leaves the previous file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_file(path, encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path, encoding="utf-8") as handle:
        handle.write(text)


def read_results(path: Path) -> list[Result]:
    """The rows of a results.json; anything else there (invalid JSON, wrong shapes) is a `UserError`."""
    data = read_json_file(path, "results file")
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise _not_ours(path, "results file", "expected a list of result rows")
    try:
        return [Result(**row) for row in data]
    except TypeError as error:
        raise _not_ours(path, "results file", str(error)) from None


def read_json_file(path: Path, what: str):
    """JSON that idefics-eval wrote into a run folder, or one clear `UserError` naming the file."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _not_ours(path, what, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _not_ours(path, what, f"invalid JSON: {error}") from None


def _not_ours(path: Path, what: str, reason: str) -> UserError:
    reason = " ".join(reason.split())
    return UserError(f"{path} is not a {what} written by idefics-eval ({reason}); restore it, or move it away and rerun")


def merge_results(path: Path, rows: list[Result]) -> list[Result]:
    """Replace rows with the same key in `path`'s results.json and keep the rest; return all rows."""
    merged = {row.key: row for row in (read_results(path) if path.exists() else [])}
    merged.update({row.key: row for row in rows})
    ordered = sorted(merged.values(), key=lambda r: (r.task, r.selection, r.shots, r.seed is None, r.seed or 0))
    write_json_atomic(path, [asdict(row) for row in ordered])
    return ordered
