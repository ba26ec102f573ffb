"""Task specs: the YAML files under `tasks/`, loaded into typed, validated objects.

A task file says where the data comes from, which split gives shots (support) and which is scored
(query), the prompt template, the kind of request and the metric. Validation is hand-written rather
than a schema library: the schema is small and every error must name the file and the key.
docs/task-files.md documents every key (tests/test_task_files_doc.py keeps it equal to the key sets here).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .paths import Confinement

REQUESTS = ("generate", "rank", "match")  # match: every caption scored with every image (Winoground)
SHOT_ANSWERS = ("most_common", "first", "random_reference", "label")
NORMALIZE = ("sum", "mean", "sequence_sum", "sequence_mean")  # ranking.Ranker.loglikelihoods says what each is
# The IDEFICS authors cut generations at the first of these (PROTOCOL.md, generation settings): the
# default of a task's generation.stop_words.
STOP_WORDS = ("Question", "Answer", "Image", "Caption", "User", "<end_of_utterance>", "\n")

# The keys of a task file, by section: the parser checks against these and docs/task-files.md
# documents each (tests/test_task_files_doc.py compares the two, so they cannot drift).
TASK_REQUIRED = frozenset({"name", "version", "request", "metric", "prompt", "support_split", "query_split", "sources"})
TASK_OPTIONAL = frozenset({"title", "generation", "candidates", "shot_answer", "support_task", "zero_shot_only", "seed",
                           "submission", "add_start_token", "support_subset", "selection_split"})
# The evaluation servers a test split's predictions go to (idefics_eval/submission.py writes each one's file).
SUBMISSIONS = ("vqa", "vizwiz", "nocaps", "textcaps")
GENERATION_KEYS = frozenset({"max_new_tokens", "num_beams", "stop_words", "first_line", "strip_quotes", "length_penalty",
                             "early_stopping", "banned_words"})
SUBSET_REQUIRED, SUBSET_OPTIONAL = frozenset({"size"}), frozenset({"seed"})  # support_subset and selection_split
CANDIDATES_REQUIRED, CANDIDATES_OPTIONAL = frozenset({"source"}), frozenset({"classes", "classes_file", "normalize"})
HUGGINGFACE_REQUIRED, HUGGINGFACE_OPTIONAL = frozenset({"path", "splits", "columns"}), frozenset({"config"})
VQA_JSON_KEYS = frozenset({"questions", "images", "image_file"})
VQA_JSON_OPTIONAL = frozenset({"annotations"})  # a test split (VQAv2 test-dev, VizWiz test) has none


@dataclass(frozen=True)
class VqaJsonSplit:
    """One split in the official VQA v2 layout: questions + annotations JSON and an image folder."""

    questions: str
    annotations: str | None  # None: a test split (no annotations key), whose answers only its evaluation server holds
    images: str
    image_file: str  # format string over the question record, e.g. "COCO_val2014_{image_id:012d}.jpg"

    @classmethod
    def of(cls, files: Mapping[str, str]) -> VqaJsonSplit:
        """From a task file's split entry, where `annotations` may be left out."""
        return cls(**{"annotations": None, **files})


@dataclass(frozen=True)
class HuggingFaceSource:
    path: str  # hub id; a local folder given with --data replaces it
    splits: Mapping[str, str]  # harness split name -> dataset split name
    columns: Mapping[str, str]  # harness field -> dataset column
    config: str | None = None  # the dataset's configuration name, where it has several


@dataclass(frozen=True)
class Generation:
    """The task file's `generation:` section (engine.GenerationSettings says what each one does)."""

    max_new_tokens: int = 15
    num_beams: int = 3
    stop_words: tuple[str, ...] | None = None  # None: the IDEFICS authors' list (STOP_WORDS)
    first_line: bool = True  # keep only the first line of the answer
    strip_quotes: bool = False  # remove quotes around the whole answer
    length_penalty: float = 1.0  # transformers' beam search: a finished beam scores sum(log p) / length ** this
    early_stopping: bool | str = False  # transformers' beam search: True, False or "never"
    banned_words: tuple[str, ...] | None = None  # None: every newline token and the image tokens


@dataclass(frozen=True)
class Subset:
    """A fixed random draw of `size` examples, seeded by `seed`: a task's `support_subset` (of its
    support split) or `selection_split` (held out of train); idefics_eval/splits.py draws both."""

    size: int
    seed: int = 0


# The selection split of a task (and protocol) that names none: 1,000 queries held out of train.
SELECTION_SPLIT = Subset(1000, 0)


@dataclass(frozen=True)
class Candidates:
    """What a ranked task chooses between: one class list for all, or each example's own."""

    source: str  # "classes" or "example"
    classes: tuple[str, ...] = ()
    normalize: str = "sum"  # log-likelihood summed over the candidate's tokens, or their mean


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
    sources: Mapping[str, Mapping[str, Mapping[str, str]]]  # file format -> split -> key -> value
    huggingface: HuggingFaceSource | None
    path: Path
    digest: str  # sha256 of the file's bytes (and of its classes file), recorded with every result
    candidates: Candidates | None = None
    shot_answer: str = "most_common"
    support_task: str | None = None  # take shots from this task's support split (NoCaps: coco)
    zero_shot_only: bool = False
    seed: int = 0  # seeds choices inside the task (e.g. which reference caption a shot shows)
    submission: str | None = None  # a test-server task: the server whose file `submission` writes
    add_start_token: bool = True  # every request (generated or ranked) starts with the tokenizer's <s>
    support_subset: Subset | None = None  # None: shots come from the whole support split
    selection_split: Subset = SELECTION_SPLIT  # the queries `--split selection` holds out of train

    @property
    def vqa_json(self) -> Mapping[str, VqaJsonSplit] | None:
        splits = self.sources.get("vqa_json")
        return None if splits is None else {split: VqaJsonSplit.of(files) for split, files in splits.items()}


def _check_keys(where: str, data: Any, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of keys, found {'nothing (it is empty)' if data is None else type(data).__name__}")
    unknown = sorted(set(data) - required - optional, key=str)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {allowed})")
    missing = sorted(required - set(data))
    if missing:
        raise UserError(f"{where}: missing required key {missing[0]!r}")
    return data


def _typed(where: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kind):  # YAML true is no number
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{where}: expected {names}, found {type(value).__name__} {value!r}")
    return value


def _str_map(where: str, data: Any) -> dict[str, str]:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping, found {type(data).__name__}")
    return {str(k): _typed(f"{where}.{k}", v, str) for k, v in data.items()}


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if _typed(where, value, str) not in choices:
        raise UserError(f"{where} must be one of {', '.join(choices)}, found {value!r}")
    return value


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: expected a list of strings")
    return tuple(value)


def _candidates(where: str, data: Any, task_dir: Path) -> tuple[Candidates, bytes]:
    here = f"{where}: candidates"
    data = _check_keys(here, data, CANDIDATES_REQUIRED, CANDIDATES_OPTIONAL)
    source = _choice(f"{here}.source", data["source"], ("classes", "example"))
    classes: tuple[str, ...] = ()
    extra = b""
    if "classes" in data and "classes_file" in data:
        raise UserError(f"{here}: give classes or classes_file, not both")
    if "classes" in data:
        classes = _str_list(f"{here}.classes", data["classes"])
    elif "classes_file" in data:
        name = _typed(f"{here}.classes_file", data["classes_file"], str)
        path = Confinement(task_dir, "the task's folder").check(
            name, f"{here}.classes_file", "put the class list beside the task file and name it there", what="file"
        )
        if not path.is_file():
            raise UserError(f"{here}.classes_file: {path} not found")
        extra = path.read_bytes()
        classes = tuple(line.strip() for line in extra.decode("utf-8").splitlines() if line.strip())
    if source == "classes" and not classes:
        raise UserError(f"{here}: source classes needs classes or classes_file")
    normalize = _choice(f"{here}.normalize", data.get("normalize", "sum"), NORMALIZE)
    return Candidates(source, classes, normalize), extra


def _positive(where: str, value: Any) -> int:
    if _typed(where, value, int) < 1:
        raise UserError(f"{where}: expected a positive whole number, found {value!r}")
    return value


def subset(where: str, data: Any) -> Subset:
    """A `support_subset:` or `selection_split:` mapping: `size` (positive) and `seed` (0 or more)."""
    section = _check_keys(where, data, SUBSET_REQUIRED, SUBSET_OPTIONAL)
    seed = _typed(f"{where}.seed", section.get("seed", 0), int)
    if seed < 0:
        raise UserError(f"{where}.seed: expected a whole number 0 or more, found {seed!r}")
    return Subset(_positive(f"{where}.size", section["size"]), seed)


def _generation(where: str, data: Any) -> Generation:
    """The `generation:` section: every key known and typed, absent keys at today's defaults."""
    section = _check_keys(f"{where}: generation", data, set(), GENERATION_KEYS)
    here = f"{where}: generation."
    found: dict[str, Any] = {}
    for key in ("max_new_tokens", "num_beams"):
        if key in section:
            found[key] = _positive(here + key, section[key])
    for key in ("stop_words", "banned_words"):
        if key in section:
            found[key] = _str_list(here + key, section[key])
    for key in ("first_line", "strip_quotes"):
        if key in section:
            found[key] = _typed(here + key, section[key], bool)
    if "length_penalty" in section:
        found["length_penalty"] = float(_typed(here + "length_penalty", section["length_penalty"], (int, float)))
    if "early_stopping" in section:
        found["early_stopping"] = _early_stopping(here + "early_stopping", section["early_stopping"])
    return Generation(**found)


def _early_stopping(where: str, value: Any) -> bool | str:
    if isinstance(value, bool) or value == "never":
        return value
    raise UserError(f"{where} must be true, false or never (transformers' beam search), found {value!r}")


# libyaml's parser reads a file about ten times faster than PyYAML's pure-Python one, and every run
# reads every task file (to tell tasks from prompts) before the model loads. Values are built by the
# same safe constructor either way; a file libyaml refuses is read again by the pure parser, so its
# errors are the ones reported, as they were before.
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def read_yaml(path: Path, raw: bytes) -> Any:
    """The YAML value in `raw` (the bytes of `path`: a task, group or prompt file); a file the parser
    cannot read, including one nested deeper than Python's recursion allows, is a `UserError`."""
    if _FAST_LOADER is not None:
        try:
            return yaml.load(raw, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError):
            pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{line} is not valid YAML ({getattr(error, 'problem', None) or error})") from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to read (lists or mappings hundreds of levels inside each other); "
                        "fix the file: its values are plain mappings, lists and strings") from None


def parse_task(path: Path) -> TaskSpec:
    """Read and validate one task file; every problem is a `UserError` naming the file and key."""
    raw = path.read_bytes()
    data = read_yaml(path, raw)
    where = str(path)
    top = _check_keys(where, data, TASK_REQUIRED, TASK_OPTIONAL)
    request = _choice(f"{where}: request", top["request"], REQUESTS)
    candidates, extra = None, b""
    if request == "rank" and "candidates" not in top:
        raise UserError(f"{where}: missing required key 'candidates' (a rank task says what it ranks)")
    if request == "generate" and "candidates" in top:
        raise UserError(f"{where}: candidates applies to rank and match tasks only (request is {request})")
    if "candidates" in top:
        candidates, extra = _candidates(where, top["candidates"], path.parent)
    sources = _check_keys(f"{where}: sources", top["sources"], set(), set(top["sources"] or {}))
    if not sources:
        raise UserError(f"{where}: sources must name at least one data source")
    file_sources: dict[str, dict[str, dict[str, str]]] = {}
    huggingface = None
    for format_name, splits in sources.items():
        here = f"{where}: sources.{format_name}"
        if format_name == "huggingface":
            hf = _check_keys(here, splits, HUGGINGFACE_REQUIRED, HUGGINGFACE_OPTIONAL)
            columns = _str_map(f"{here}.columns", hf["columns"])
            if "id" not in columns or "image" not in columns:
                raise UserError(f"{here}.columns: missing required key {'id' if 'id' not in columns else 'image'!r}")
            huggingface = HuggingFaceSource(
                path=_typed(f"{here}.path", hf["path"], str),
                splits=_str_map(f"{here}.splits", hf["splits"]),
                columns=columns,
                config=_typed(f"{here}.config", hf["config"], str) if "config" in hf else None,
            )
            continue
        if not isinstance(splits, dict) or not splits:
            raise UserError(f"{here}: expected a mapping of split names to that split's files")
        file_sources[format_name] = {split: _str_map(f"{here}.{split}", files) for split, files in splits.items()}
    if "vqa_json" in file_sources:
        for split, files in file_sources["vqa_json"].items():
            _check_keys(f"{where}: sources.vqa_json.{split}", files, VQA_JSON_KEYS, VQA_JSON_OPTIONAL)
    spec = TaskSpec(
        name=_typed(f"{where}: name", top["name"], str),
        version=_typed(f"{where}: version", top["version"], int),
        title=_typed(f"{where}: title", top.get("title", top["name"]), str),
        request=request,
        metric=_typed(f"{where}: metric", top["metric"], str),
        prompt=_typed(f"{where}: prompt", top["prompt"], str),
        support_split=_typed(f"{where}: support_split", top["support_split"], str),
        query_split=_typed(f"{where}: query_split", top["query_split"], str),
        generation=_generation(where, top.get("generation", {})),
        sources=file_sources,
        huggingface=huggingface,
        path=path,
        digest=hashlib.sha256(raw + extra).hexdigest(),
        candidates=candidates,
        shot_answer=_choice(f"{where}: shot_answer", top.get("shot_answer", "label" if request == "rank" else "most_common"), SHOT_ANSWERS),
        support_task=_typed(f"{where}: support_task", top["support_task"], str) if "support_task" in top else None,
        zero_shot_only=_typed(f"{where}: zero_shot_only", top.get("zero_shot_only", False), bool),
        seed=_typed(f"{where}: seed", top.get("seed", 0), int),
        submission=_choice(f"{where}: submission", top["submission"], SUBMISSIONS) if "submission" in top else None,
        add_start_token=_typed(f"{where}: add_start_token", top.get("add_start_token", True), bool),
        support_subset=subset(f"{where}: support_subset", top["support_subset"]) if "support_subset" in top else None,
        selection_split=subset(f"{where}: selection_split", top["selection_split"]) if "selection_split" in top else SELECTION_SPLIT,
    )
    for split in {spec.support_split, spec.query_split} - ({spec.support_split} if spec.support_task else set()):
        for source_name, splits in [*file_sources.items(), ("huggingface", huggingface and huggingface.splits)]:
            if splits is not None and split not in splits:
                raise UserError(f"{where}: sources.{source_name} has no split {split!r} (it has: {', '.join(splits)})")
    return spec


def builtin_dir(name: str) -> Path:
    """The shipped `tasks/` or `prompts/` folder: inside the installed package, or at the top of a checkout."""
    package = Path(__file__).resolve().parent
    installed = package / f"builtin_{name}"
    return installed if installed.is_dir() else package.parent / name


GROUPS_FILE = "groups.yaml"
PROMPT_KEY = "example"  # the key every prompt file has and no task file may have


def is_prompt_file(path: Path) -> bool:
    """Whether a YAML file in a tasks folder is a prompt template (a mapping with an `example` key)
    rather than a task; a file that is not valid YAML is not, so the task parser reports it."""
    return _has_prompt_key(str(path), path.read_bytes())


# Keyed on the file's bytes (reading a task file costs microseconds, parsing it a millisecond), not
# its mtime and size, which a file copied over it with `cp -p` of the same length keeps.
@functools.lru_cache(maxsize=1024)
def _has_prompt_key(path: str, raw: bytes) -> bool:
    try:
        data = read_yaml(Path(path), raw)
    except UserError:
        return False
    return isinstance(data, dict) and PROMPT_KEY in data


def task_files(tasks_dirs: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Task name -> file, built-in tasks first; a file in a later folder overrides an earlier one.

    Prompt files beside the tasks (see `is_prompt_file`) and groups.yaml are not tasks."""
    found: dict[str, Path] = {}
    for folder in (builtin_dir("tasks"), *tasks_dirs):
        if not folder.is_dir():
            raise UserError(f"tasks folder not found: {folder}")
        for path in sorted(folder.glob("*.yaml")):
            if path.name != GROUPS_FILE and not is_prompt_file(path):
                found[path.stem] = path
    return found


def task_groups(tasks_dirs: tuple[Path, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Group name -> member task names, from each tasks folder's groups.yaml (later folders override)."""
    groups: dict[str, tuple[str, ...]] = {}
    for folder in (builtin_dir("tasks"), *tasks_dirs):
        path = folder / GROUPS_FILE
        if not path.is_file():
            continue
        data = read_yaml(path, path.read_bytes()) or {}
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of group names to lists of task names")
        for name, members in data.items():
            groups[str(name)] = _str_list(f"{path}: {name}", members)
    return groups


def expand_task_names(value: str, tasks_dirs: tuple[Path, ...] = ()) -> list[str]:
    """'vqav2,fairface' -> ['vqav2', 'fairface_gender', 'fairface_race', 'fairface_age']."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise UserError("--task is empty; give a task name (see `idefics-eval tasks`)")
    files, groups = task_files(tasks_dirs), task_groups(tasks_dirs)
    expanded: list[str] = []
    for name in names:
        members = [name] if name in files else list(groups.get(name, [name]))
        expanded += [member for member in members if member not in expanded]
    for name in expanded:
        if name not in files:
            known = ", ".join(sorted(files) + [f"{g} (group)" for g in sorted(groups)])
            raise UserError(f"unknown task {name!r}; available: {known} (see `idefics-eval tasks`)")
    return expanded


def load_task(name: str, tasks_dirs: tuple[Path, ...] = ()) -> TaskSpec:
    files = task_files(tasks_dirs)
    if name not in files:
        raise UserError(f"unknown task {name!r}; available: {', '.join(sorted(files))} (see `idefics-eval tasks`)")
    return parse_named_task(files[name], name)


def parse_named_task(path: Path, name: str) -> TaskSpec:
    """`parse_task`, and the file's `name` must be its file name (the name every command looks it up by)."""
    spec = parse_task(path)
    if spec.name != name:
        raise UserError(f"{path}: name {spec.name!r} does not match the file name {name!r}")
    return spec
