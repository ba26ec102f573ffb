"""Planning a run: the run's settings (`RunConfig`) and everything checked and loaded before the
model loads (`Prepared`: task spec, prompt template, metric, support and query examples).

This module imports no model library (torch, transformers): `check` refuses bad settings, task
names, protocols and data locations in a fraction of a second, before the runner imports them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import formats
from .errors import UserError
from .examples import ExampleSet
from .formats import BUNDLED, demo_data
from .metrics import Metric, get_metric, refuse_undefined
from .prompts import PromptTemplate, load_template
from .protocols import DEFAULT as DEFAULT_PROTOCOL
from .protocols import TEXT_ONLY_SHOTS, Protocol, apply_protocol, load_protocol, zero_shot_style
from .results import read_results
from .splits import REPORTING, SELECTION, Drawn, load_selection_split, support_subset
from .tasks import STOP_WORDS, TaskSpec, load_task

if TYPE_CHECKING:
    from .engine import GenerationSettings

DEMO_DATA = BUNDLED
IMAGE_CACHE_MB = 1024  # image_cache.DEFAULT_MAX_BYTES in MiB, without importing torch (tests/test_startup.py checks)


@dataclass(frozen=True)
class RunConfig:
    task: str
    shots: tuple[int, ...]
    output_dir: Path
    model: str | None = None
    demo: bool = False
    demo_seed: int | None = None  # with demo: None = the trained canary, a number = the random tiny model
    data: str | None = None
    support_data: str | None = None  # data of the support task, where shots come from another task (NoCaps: COCO)
    selection: str = "rices"
    seeds: tuple[int, ...] = (0,)
    # "model" (the evaluated model's vision tower) or a CLIP hub id / folder; None: the protocol's, else "model"
    rices_encoder: str | None = None
    protocol: str = DEFAULT_PROTOCOL  # --protocol: a shipped protocol's name or a protocol file (protocols.py)
    split: str = REPORTING  # --split: the task's query split, or the selection split held out of train (splits.py)
    zero_shot: str | None = None  # --zero-shot: "none" or "text-only" (shots.ZeroShot); None: the protocol's, else "none"
    limit: int | None = None
    batch_size: int | str = 8  # a positive number, or "auto": the largest that fits on the GPU (8 off GPU)
    device: str | None = None
    device_map: str | None = None  # accelerate's device_map ("auto"): one model split over the visible GPUs
    dtype: str | None = None
    num_beams: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None
    cache_dir: Path | None = None
    image_cache_mb: int = IMAGE_CACHE_MB  # memory for image features (MiB), LRU beyond it
    image_cache_dir: Path | None = None  # where features evicted from memory go (and come back from); None: nowhere
    tasks_dirs: tuple[Path, ...] = ()
    prompts_dirs: tuple[Path, ...] = ()  # searched for the task's prompt before the tasks folders (prompts.prompt_folders)
    overwrite: bool = False
    progress: bool = True
    on_bad_example: str = "stop"  # a corrupt or missing image met during the run: "stop" or "skip" (counted)
    plain_generation: bool = False  # the reference paths: model.generate on pixels, one full forward per candidate
    allow_pickle_weights: bool = False  # .bin checkpoints unpickle code; only safetensors load unless allowed
    run_name: str | None = None  # --name: recorded in the rows and the manifest, shown by reports; not part of the identity
    log_samples: bool = True  # samples/<task>_<shots>shot.jsonl: what the model saw per query (docs/outputs.md)


@dataclass
class Prepared:
    """What a run needs before the model loads: validated settings and loaded annotations."""

    config: RunConfig
    spec: TaskSpec
    template: PromptTemplate
    metric: Metric
    support: ExampleSet
    queries: ExampleSet
    all_queries_fingerprint: str
    data: str | None
    generation: GenerationSettings
    num_queries: int  # the query split's size before --limit: what a full run scores
    references: bool = True  # False: a test split, whose answers only the evaluation server holds
    protocol: Protocol | None = None  # the protocol applied to `spec` (None only where a caller builds one by hand)
    split: dict = field(default_factory=dict)  # a selection split's record (splits.py); {}: the reporting split
    support_subset: dict = field(default_factory=dict)  # the drawn support subset's record; {}: the whole support split
    notes: tuple[str, ...] = ()  # one line each: a drawn split smaller than asked for
    truncation: str = "drop-shots"  # the protocol's: how a prompt too long is fitted (model_requests.fit_prompt)
    protocol_max_length: int | None = None  # the protocol's context limit (--max-length wins; at most the model's)
    all_queries: ExampleSet | None = None  # the query split before --limit: what `all_queries_fingerprint` hashes


@dataclass(frozen=True)
class Checked:
    """What `check` resolved: the settings with the protocol's defaults, the task as the protocol
    changes it, its prompt template and metric, and where its data comes from."""

    config: RunConfig
    protocol: Protocol
    spec: TaskSpec
    template: PromptTemplate
    metric: Metric
    data: str | None


def prepare(config: RunConfig, preloaded: bool = False, writes: bool = True) -> Prepared:
    """Validate everything that is cheap to check and load the annotations (not the images).
    `writes=False` (a dry run, `idefics-eval prompt`) leaves the output folders alone: nothing is written there."""
    checked = check(config, preloaded, writes)
    config, spec, metric = checked.config, checked.spec, checked.metric
    queries, support, drawn = _splits(config, spec, checked.data)
    if not queries.examples:
        raise UserError(f"the query split {queries.name} from {queries.source} is empty")
    references = formats.has_references(spec, queries)
    all_queries, all_queries_fingerprint, num_queries = queries, queries.fingerprint, len(queries.examples)
    if config.limit is not None:
        queries = ExampleSet(queries.name, queries.source, queries.examples[: config.limit])
    refuse_undefined(metric, queries.examples, queries.name)
    if max(config.shots) > len(support):  # (a selector also checks this per query, after exclusions)
        raise UserError(
            f"the support split {support.name} has {len(support)} examples, fewer than the "
            f"{max(config.shots)} shots asked for; lower --shots or use a larger support split"
        )
    if _text_only(config) and len(support) < TEXT_ONLY_SHOTS:
        raise UserError(f"zero-shot text-only shows {TEXT_ONLY_SHOTS} support examples, but the support split {support.name} "
                        f"has {len(support)}; use a larger support split or --zero-shot none")
    from .engine import GenerationSettings  # imports torch: only once every check has passed

    generation = GenerationSettings(
        max_new_tokens=config.max_new_tokens or spec.generation.max_new_tokens,
        num_beams=config.num_beams or spec.generation.num_beams,
        stop_words=spec.generation.stop_words if spec.generation.stop_words is not None else STOP_WORDS,
        first_line=spec.generation.first_line,
        strip_quotes=spec.generation.strip_quotes,
        length_penalty=spec.generation.length_penalty,
        early_stopping=spec.generation.early_stopping,
        banned_words=spec.generation.banned_words,
        add_start_token=spec.add_start_token,
    )
    settings = checked.protocol.overrides(spec.name)
    return Prepared(config, spec, checked.template, metric, support, queries, all_queries_fingerprint, checked.data, generation,
                    num_queries, references, checked.protocol, split=drawn[0].record if config.split == SELECTION else {},
                    support_subset=drawn[1].record if _needs_support(config) else {},
                    notes=tuple(d.note for d in drawn if d.note), truncation=settings.get("truncation", "drop-shots"),
                    protocol_max_length=settings.get("max_length"), all_queries=all_queries)


def check(config: RunConfig, preloaded: bool = False, writes: bool = True) -> Checked:
    """The settings, task, protocol, prompt, metric and data locations checked without reading the data
    and without importing a model library, except for a --model folder's check, which comes last: the
    CLI calls this before it imports the runner, so that a bad argument is reported at once."""
    _check_values(config)
    if config.demo and config.model:
        raise UserError("--demo and --model both given: --demo evaluates the embedded tiny model; drop one")
    if not config.model and not config.demo and not preloaded:
        raise UserError("no model: give --model (a hub name or checkpoint folder) or --demo")
    if writes:
        _check_writable(config.output_dir)
        _check_run_folder(config.output_dir)
        if config.image_cache_dir is not None:
            _check_writable(config.image_cache_dir, "--image-cache-dir")
    if config.cache_dir is not None:  # RICES indexes and the datasets library's files go there
        _check_writable(config.cache_dir, "--cache-dir")

    protocol = load_protocol(config.protocol, config.tasks_dirs)
    # The one place a protocol meets the task: every command and the API see the same spec.
    spec = apply_protocol(load_task(config.task, config.tasks_dirs), protocol)
    config = replace(config, rices_encoder=config.rices_encoder or protocol.rices_encoder or "model",
                     zero_shot=zero_shot_style(spec, protocol, config.zero_shot))
    if spec.zero_shot_only and max(config.shots) > 0:
        raise UserError(f"task {spec.name} is zero-shot only (it has no support set); use --shots 0")
    named_by = f"{protocol.path}: tasks.{spec.name}" if "prompt" in protocol.overrides(spec.name) else str(spec.path)
    template = load_template(spec.prompt, config.prompts_dirs, f"{named_by}: prompt {spec.prompt!r}", tasks_dirs=config.tasks_dirs)
    if protocol.overrides(spec.name).get("chat_template", False):  # an instruct checkpoint's turns (Prompt.chat)
        template = replace(template, chat=True)
    metric = get_metric(spec.metric)
    data = config.data if config.data is not None else (demo_data(spec) if config.demo else None)
    formats.check_location(spec, data)
    if spec.support_task and _needs_support(config) and config.split == REPORTING:
        support_spec = load_task(spec.support_task, config.tasks_dirs)
        support_data = config.support_data if config.support_data is not None else (demo_data(support_spec) if config.demo else None)
        formats.check_location(support_spec, support_data)
    if config.model:
        from .models import check_checkpoint  # torch and transformers

        check_checkpoint(config.model)
    return Checked(config, protocol, spec, template, metric, data)


def _check_values(config: RunConfig) -> None:
    """Each option's value on its own."""
    if not config.shots:
        raise UserError("--shots is empty; give shot counts like 0,4,8")
    for flag, counts in (("--shots", config.shots), ("--seeds", config.seeds)):  # the API passes them unparsed
        for count in counts:
            if type(count) is not int or count < 0:
                raise UserError(f"{flag} {list(counts)}: {count!r} is not a whole number of 0 or more; give counts like 0,4,8")
    if config.limit is not None and (type(config.limit) is not int or config.limit < 1):
        raise UserError(f"--limit {config.limit!r}: give a positive number of queries")
    for flag, value in (("--num-beams", config.num_beams), ("--max-new-tokens", config.max_new_tokens),
                        ("--max-length", config.max_length)):
        if value is not None and (type(value) is not int or value < 1):  # 0 would silently mean "the task's"
            raise UserError(f"{flag} {value!r}: give a positive whole number, or leave it out for the task's default")
    if config.batch_size != "auto" and (type(config.batch_size) is not int or config.batch_size < 1):
        raise UserError(f"--batch-size {config.batch_size!r}: give a positive whole number or auto")
    if type(config.image_cache_mb) is not int or config.image_cache_mb < 0:
        raise UserError(f"--image-cache-mb {config.image_cache_mb!r}: give a whole number of MiB, 0 or more")
    if config.on_bad_example not in ("stop", "skip"):
        raise UserError(f"--on-bad-example {config.on_bad_example!r}: use stop or skip")
    if config.split not in (REPORTING, SELECTION):
        raise UserError(f"--split {config.split!r}: use {REPORTING} (the task's query split) or {SELECTION} (held out of train)")
    if config.selection not in ("rices", "random"):
        raise UserError(f"--selection {config.selection!r}: use rices or random")
    if config.selection == "rices" and tuple(config.seeds) != (0,):
        raise UserError("--seeds applies to --selection random only (RICES shots do not depend on a seed)")
    if config.selection == "random" and config.rices_encoder is not None:  # checked before the protocol's encoder fills it in
        raise UserError("--rices-encoder applies to --selection rices only (random shots embed no images); leave it out")


def _splits(config: RunConfig, spec: TaskSpec, data: str | None) -> tuple[ExampleSet, ExampleSet, tuple[Drawn, Drawn]]:
    """The queries, the support set shots come from, and the draws that made them (splits.py): the
    reporting split with the support split (or its subset), or the selection split held out of train."""
    if config.split == SELECTION:
        selection, subset = load_selection_split(spec, data, config.cache_dir, spec.selection_split, spec.support_subset)
        if not _needs_support(config):
            subset = Drawn(ExampleSet(f"{spec.name}/none", "no shots asked for", ()), {})
        return selection.examples, subset.examples, (selection, subset)
    queries = formats.load_split(spec, spec.query_split, data, config.cache_dir)
    support = _load_support(config, spec, data)
    subset = support_subset(support, spec.support_subset if _needs_support(config) else None)
    return queries, subset.examples, (Drawn(queries, {}), subset)



def with_bundled_data(config: RunConfig) -> RunConfig:
    """--demo-data: the bundled sample of the task, and of the task its shots come from (NoCaps: COCO),
    wherever --data / --support-data leaves it open; the model stays whatever the run evaluates."""
    spec = load_task(config.task, config.tasks_dirs)
    data = config.data if config.data is not None else demo_data(spec)
    support = config.support_data
    if support is None and spec.support_task:
        support = demo_data(load_task(spec.support_task, config.tasks_dirs))
    return replace(config, data=data, support_data=support)


def _check_run_folder(folder: Path) -> None:
    """A damaged results.json or manifest.json in the output folder is found now, not after the run."""
    from .store import read_manifest

    read_manifest(folder / "manifest.json")
    if (folder / "results.json").exists():
        read_results(folder / "results.json")


def _load_support(config: RunConfig, spec: TaskSpec, data: str | None) -> ExampleSet:
    """The split shots come from: the task's own, or another task's (NoCaps takes COCO train)."""
    if not _needs_support(config):
        return ExampleSet(f"{spec.name}/none", "no shots asked for", ())
    if spec.support_task is None:
        return formats.load_split(spec, spec.support_split, data, config.cache_dir)
    support_spec = load_task(spec.support_task, config.tasks_dirs)
    support_data = config.support_data
    if support_data is None and config.demo:
        support_data = demo_data(support_spec)
    return formats.load_split(support_spec, support_spec.support_split, support_data, config.cache_dir)


def _text_only(config: RunConfig) -> bool:
    """Whether the run's zero-shot prompts show support examples as text (so it needs the support split)."""
    return 0 in config.shots and config.zero_shot == "text-only"


def _needs_support(config: RunConfig) -> bool:
    """Whether the run shows any shots: few-shot prompts, or zero-shot ones with text-only shots
    (the first two of the same support set, subset and all, whatever other shot counts it runs)."""
    return max(config.shots) > 0 or _text_only(config)


def _check_writable(folder: Path, flag: str = "--output-dir") -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        what = "the output folder" if flag == "--output-dir" else f"the {flag} folder"
        raise UserError(f"cannot write to {what} {folder}: {error.strerror}; choose another {flag}") from None
