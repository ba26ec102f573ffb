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
import statistics
import subprocess
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .console import one_line
from .errors import UserError

PACKAGES = ("idefics-eval", "torch", "transformers", "datasets", "faiss-cpu", "numpy", "pillow", "pycocoevalcap")


def number_text(value: float, decimals: int = 2) -> str:
    """The one rounding rule for every number printed for people (run and sweep tables, export's
    markdown, compare): `decimals` places, halves rounded away from zero on the number as it reads
    (6.25 -> "6.3" at one place, where Python's format rounds the binary value and gives "6.2").
    JSON and CSV keep the raw value."""
    from decimal import ROUND_HALF_UP, Decimal

    if value != value or value in (float("inf"), float("-inf")):
        return str(float(value))  # nan, inf
    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def utc_now() -> str:
    """The time as UTC ISO 8601, to the second: what a row records of when it ran."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment(device) -> dict[str, str | int | None]:
    """Where a row ran, beside `package_versions` (torch's and idefics-eval's versions are there): the
    device's name, the CUDA version torch was built with, the checkout's commit and torch's CPU
    threads (`--threads`' default follows the machine's load, and float sums may round differently
    with another count). Recorded, never compared: a rerun elsewhere resumes the same folder."""
    import torch

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}: {cpu_model()}"
    return {"device": name, "cuda": torch.version.cuda, "commit": project_commit(), "threads": torch.get_num_threads()}


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The processor's model name ("AMD EPYC 7763 64-Core Processor"); platform.processor() is empty on Linux."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def project_commit() -> str | None:
    """The commit of the checkout idefics-eval runs from, with "-dirty" when the package's files
    differ from it; None when it is not run from a git checkout (installed from a wheel) or git is
    missing. Only the package folder counts toward "dirty": run outputs beside it do not."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=package, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != package.parent:
            return None  # a site-packages folder inside some other repository: that commit is not ours
        commit = git("rev-parse", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class Result:
    task: str
    shots: int
    selection: str
    seed: int | None  # None for RICES (deterministic) and for the mean over seeds
    metrics: dict[str, float]  # e.g. {"vqa_accuracy": 51.2, "vqa_accuracy/yes/no": 70.1}
    num_examples: int
    num_truncated: int  # scored queries whose prompt lost shots (or, truncation "left", tokens) to fit the context limit
    predictions: str | None  # path of the predictions file, relative to the output folder
    config: dict[str, Any] = field(default_factory=dict)  # task/prompt versions, model, shots, data, versions
    metrics_std: dict[str, float] | None = None  # over seeds, on aggregate rows only
    num_skipped: int = 0  # queries skipped (--on-bad-example skip), not in the metrics: an unreadable image, or a prompt too long even with no shots
    # When, where and under which name the row was made; outside `config`, so that neither the
    # manifest's identity nor the config hash depends on them (files written before have None / {}).
    run_name: str | None = None  # --name
    started: str | None = None  # UTC ISO 8601, when the evaluation of this row's predictions began
    finished: str | None = None
    duration_s: float | None = None  # seconds of evaluation; a resumed run counts only the part it did
    environment: dict[str, str | int | None] = field(default_factory=dict)  # device, cuda, commit, threads (see `environment`)

    @property
    def key(self) -> tuple:
        return (self.task, self.shots, self.selection, self.seed)


def mean_over_seeds(rows: list[Result]) -> Result:
    """The row of one task and shot count that stands for its random-selection seeds: mean and std."""
    means = {name: statistics.fmean(r.metrics[name] for r in rows) for name in rows[0].metrics}
    stds = {name: statistics.stdev([r.metrics[name] for r in rows]) for name in rows[0].metrics}
    config = dict(rows[0].config)
    config["shots"] = dict(config["shots"], seeds=[r.seed for r in rows])
    durations = [r.duration_s for r in rows]
    return replace(rows[0], seed=None, metrics=means, metrics_std=stds, predictions=None, config=config,
                   num_truncated=max(r.num_truncated for r in rows), started=min(r.started or "" for r in rows) or None,
                   finished=max(r.finished or "" for r in rows) or None,
                   duration_s=None if None in durations else round(sum(durations), 3))


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


RUN_FOLDER_FILES = ("results.json", "manifest.json", "config.yaml")  # and every file of its predictions/ and samples/


def check_not_a_run_file(output: Path) -> None:
    """Refuse `-o` naming a file of a run folder (its results, manifest, config, predictions or sample
    logs): a report, comparison or submission written there would destroy the run it was made from."""
    output = Path(output)
    for folder, inside in ((output.parent, output.name in RUN_FOLDER_FILES),
                           (output.parent.parent, output.parent.name in ("predictions", "samples"))):
        if inside and any((folder / name).is_file() for name in RUN_FOLDER_FILES[:2]):
            raise UserError(f"{output} is a file of the run folder {folder}; writing there would destroy the run; choose another -o")


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_file(path, encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path, encoding="utf-8") as handle:
        handle.write(text)


def read_results(path: Path) -> list[Result]:
    """The rows of a results.json; anything else there (invalid JSON, wrong shapes or types) is a
    `UserError`, so that run, export, plot and compare never meet a row they cannot read."""
    data = read_json_file(path, "results file")
    if not isinstance(data, list):
        raise _not_ours(path, "results file", f"expected a list of result rows, found {_kind(data)}")
    rows = []
    for index, row in enumerate(data):
        problem = _row_problem(row)
        if problem:
            raise _not_ours(path, "results file", f"row {index}: {problem}")
        rows.append(Result(**row))
    return rows


_NUMBER = (int, float)
_MISSING = object()
# What run, export, plot and compare read from a row, by dotted path: the JSON types each may hold
# where present ("numbers": an object of numbers, as metric name -> value). Parents come first.
ROW_SCHEMA: dict[str, tuple] = {
    "task": (str,), "shots": (int,), "selection": (str,), "seed": (int, None), "metrics": ("numbers",),
    "num_examples": (int,), "num_truncated": (int,), "predictions": (str, None), "config": (dict,),
    "metrics_std": ("numbers", None), "num_skipped": (int,),
    "run_name": (str, None), "started": (str, None), "finished": (str, None), "duration_s": (int, float, None),
    "environment": (dict,),
    "config.model": (dict,), "config.model.name": (str,), "config.model.fingerprint": (str,),
    "config.data": (dict,), "config.data.source": (str, None), "config.data.query_fingerprint": (str, None),
    "config.shots": (dict,), "config.limit": (int, None), "config.batch_size": (int, str),
}
REQUIRED_FIELDS = ("task", "shots", "selection", "seed", "metrics", "num_examples", "num_truncated", "predictions")


def _row_problem(row: Any) -> str | None:
    """What is wrong with one row of a results.json, or None."""
    if not isinstance(row, dict):
        return f"expected an object, found {_kind(row)}"
    unknown = sorted((name for name in row if name not in ROW_SCHEMA), key=str)
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if unknown or missing:
        return f"unknown field {unknown[0]!r}" if unknown else f"missing field {missing[0]!r}"
    for path, kinds in ROW_SCHEMA.items():
        value = _lookup(row, path)
        if value is _MISSING:
            continue
        if not any(_is(value, kind) for kind in kinds):
            return f"{path} holds {_kind(value)}"
        if "numbers" in kinds and isinstance(value, dict):
            wrong = next((key for key, number in value.items() if not _is(number, _NUMBER)), None)
            if wrong is not None:
                return f"{path}[{wrong!r}] holds {_kind(value[wrong])}, not a number"
    return None


def _lookup(row: dict, path: str) -> Any:
    value: Any = row
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            return _MISSING
        value = value[name]
    return value


def _is(value: Any, kind) -> bool:
    if kind is None:
        return value is None
    if kind == "numbers":
        return isinstance(value, dict)
    return isinstance(value, kind) and not isinstance(value, bool)  # JSON true is not a count


def _kind(value: Any) -> str:
    """A JSON value as the user would name it: 'a string', 'a list', 'the number 5'."""
    if isinstance(value, bool) or value is None or isinstance(value, _NUMBER):
        return f"the value {json.dumps(value)}"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def read_json_file(path: Path, what: str):
    """JSON that idefics-eval wrote into a run folder, or one clear `UserError` naming the file."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _not_ours(path, what, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _not_ours(path, what, f"invalid JSON: {error}") from None
    except RecursionError:
        raise _not_ours(path, what, "nested too deeply to read") from None


def _not_ours(path: Path, what: str, reason: str) -> UserError:
    reason = one_line(reason)
    return UserError(f"{path} is not a {what} written by idefics-eval ({reason}); restore it, or move it away and rerun")


def merge_results(path: Path, rows: list[Result]) -> list[Result]:
    """Replace rows with the same key in `path`'s results.json and keep the rest; return all rows."""
    merged = {row.key: row for row in (read_results(path) if path.exists() else [])}
    merged.update({row.key: row for row in rows})
    ordered = sorted(merged.values(), key=lambda r: (r.task, r.selection, r.shots, r.seed is None, r.seed or 0))
    write_json_atomic(path, [asdict(row) for row in ordered])
    return ordered
