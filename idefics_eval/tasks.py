"""Task specs: the YAML files under `tasks/`, loaded into typed, validated objects.

A task file says where the data comes from, which split gives shots (support) and which is scored
(query), the prompt template, the kind of request and the metric. Validation is hand-written rather
than a schema library: the schema is small and every error must name the file and the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

REQUESTS = ("generate", "rank")


@dataclass(frozen=True)
class VqaJsonSplit:
    """One split in the official VQA v2 layout: questions + annotations JSON and an image folder."""

    questions: str
    annotations: str
    images: str
    image_file: str  # format string over the question record, e.g. "COCO_val2014_{image_id:012d}.jpg"


@dataclass(frozen=True)
class HuggingFaceSource:
    path: str  # hub id; a local folder given with --data replaces it
    splits: Mapping[str, str]  # harness split name -> dataset split name
    columns: Mapping[str, str]  # harness field -> dataset column


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = 15
    num_beams: int = 3


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
    title: str
    request: str
    metric: str
    prompt: str
    support_split: str
    query_split: str
    generation: Generation
    vqa_json: Mapping[str, VqaJsonSplit] | None
    huggingface: HuggingFaceSource | None
    path: Path
    digest: str  # sha256 of the file's bytes, recorded with every result


def _check_keys(where: str, data: Any, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, found {type(data).__name__}")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {allowed})")
    missing = sorted(required - set(data))
    if missing:
        raise UserError(f"{where}: missing required key {missing[0]!r}")
    return data


def _typed(where: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{where}: expected {names}, found {type(value).__name__} {value!r}")
    return value


def _str_map(where: str, data: Any) -> dict[str, str]:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, found {type(data).__name__}")
    return {str(k): _typed(f"{where}.{k}", v, str) for k, v in data.items()}


def parse_task(path: Path) -> TaskSpec:
    """Read and validate one task file; every problem is a `UserError` naming the file and key."""
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{line} is not valid YAML ({getattr(error, 'problem', error)})") from None
    where = str(path)
    top = _check_keys(
        where,
        data,
        {"name", "version", "request", "metric", "prompt", "support_split", "query_split", "sources"},
        {"title", "generation"},
    )
    request = _typed(f"{where}: request", top["request"], str)
    if request not in REQUESTS:
        raise UserError(f"{where}: request must be one of {', '.join(REQUESTS)}, found {request!r}")
    generation = _check_keys(f"{where}: generation", top.get("generation", {}), set(), {"max_new_tokens", "num_beams"})
    sources = _check_keys(f"{where}: sources", top["sources"], set(), {"vqa_json", "huggingface"})
    if not sources:
        raise UserError(f"{where}: sources must name at least one data source (vqa_json or huggingface)")
    vqa_json = None
    if "vqa_json" in sources:
        vqa_json = {}
        for split, files in _check_keys(f"{where}: sources.vqa_json", sources["vqa_json"], set(), set(sources["vqa_json"] or {})).items():
            here = f"{where}: sources.vqa_json.{split}"
            files = _check_keys(here, files, {"questions", "annotations", "images", "image_file"})
            vqa_json[split] = VqaJsonSplit(**{k: _typed(f"{here}.{k}", v, str) for k, v in files.items()})
    huggingface = None
    if "huggingface" in sources:
        here = f"{where}: sources.huggingface"
        hf = _check_keys(here, sources["huggingface"], {"path", "splits", "columns"})
        columns = _str_map(f"{here}.columns", hf["columns"])
        for needed in ("id", "image", "answers"):
            if needed not in columns:
                raise UserError(f"{here}.columns: missing required key {needed!r}")
        huggingface = HuggingFaceSource(
            path=_typed(f"{here}.path", hf["path"], str), splits=_str_map(f"{here}.splits", hf["splits"]), columns=columns
        )
    spec = TaskSpec(
        name=_typed(f"{where}: name", top["name"], str),
        version=_typed(f"{where}: version", top["version"], int),
        title=_typed(f"{where}: title", top.get("title", top["name"]), str),
        request=request,
        metric=_typed(f"{where}: metric", top["metric"], str),
        prompt=_typed(f"{where}: prompt", top["prompt"], str),
        support_split=_typed(f"{where}: support_split", top["support_split"], str),
        query_split=_typed(f"{where}: query_split", top["query_split"], str),
        generation=Generation(
            max_new_tokens=_typed(f"{where}: generation.max_new_tokens", generation.get("max_new_tokens", 15), int),
            num_beams=_typed(f"{where}: generation.num_beams", generation.get("num_beams", 3), int),
        ),
        vqa_json=vqa_json,
        huggingface=huggingface,
        path=path,
        digest=hashlib.sha256(raw).hexdigest(),
    )
    for split in (spec.support_split, spec.query_split):
        for source_name, splits in (("vqa_json", vqa_json), ("huggingface", huggingface and huggingface.splits)):
            if splits is not None and split not in splits:
                raise UserError(f"{where}: sources.{source_name} has no split {split!r} (it has: {', '.join(splits)})")
    return spec


def builtin_dir(name: str) -> Path:
    """The shipped `tasks/` or `prompts/` folder: inside the installed package, or at the top of a checkout."""
    package = Path(__file__).resolve().parent
    installed = package / f"builtin_{name}"
    return installed if installed.is_dir() else package.parent / name


def task_files(tasks_dirs: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Task name -> file, built-in tasks first; a file in a later folder overrides an earlier one."""
    found: dict[str, Path] = {}
    for folder in (builtin_dir("tasks"), *tasks_dirs):
        if not folder.is_dir():
            raise UserError(f"tasks folder not found: {folder}")
        for path in sorted(folder.glob("*.yaml")):
            found[path.stem] = path
    return found


def load_task(name: str, tasks_dirs: tuple[Path, ...] = ()) -> TaskSpec:
    files = task_files(tasks_dirs)
    if name not in files:
        raise UserError(f"unknown task {name!r}; available: {', '.join(sorted(files))} (see `idefics-eval tasks`)")
    spec = parse_task(files[name])
    if spec.name != name:
        raise UserError(f"{files[name]}: name {spec.name!r} does not match the file name {name!r}")
    return spec
