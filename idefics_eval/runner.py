"""The runner: one evaluation from task spec to results, in the pipeline's order.

task spec -> examples (support and query splits) -> shot selection -> prompts -> generation ->
predictions -> metric -> results. Everything that can be checked cheaply is checked before the
model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from . import formats
from .distributed import World, world as current_world
from .engine import (AUTO_BATCH_OFF_GPU, STOP_WORDS, GenerationSettings, Generator, count_tokens, generate_all,
                     longest_first, resolve_batch_size)
from .errors import UserError
from .examples import Example, ExampleSet
from .image_cache import DEFAULT_MAX_BYTES, configure_shared_cache
from .metrics import Metric, get_metric
from .models import ClipEncoder, LoadedModel, VisionTowerEncoder, check_checkpoint, demo_model_name, load_model
from .predictions import FULL_SCORES, Prediction, PredictionWriter, finish_predictions, prediction_file, read_predictions
from .prompts import Prompt, PromptTemplate, load_template, most_common_answer
from .ranking import Ranker
from .results import Result, merge_results, package_versions, read_results, write_json_atomic
from .shots import ShotSettings, build_selector
from .tasks import TaskSpec, load_task

DEMO_DATA = Path(__file__).resolve().parent / "demo" / "data"


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
    rices_encoder: str = "model"  # "model" (the evaluated model's vision tower) or a CLIP hub id / folder
    limit: int | None = None
    batch_size: int | str = 8  # a positive number, or "auto": the largest that fits on the GPU (8 off GPU)
    device: str | None = None
    device_map: str | None = None  # accelerate's device_map ("auto"): one model split over the visible GPUs
    dtype: str | None = None
    num_beams: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None
    cache_dir: Path | None = None
    image_cache_mb: int = DEFAULT_MAX_BYTES >> 20  # memory for image features (MiB), LRU beyond it
    image_cache_dir: Path | None = None  # where features evicted from memory go (and come back from); None: nowhere
    tasks_dirs: tuple[Path, ...] = ()
    overwrite: bool = False
    progress: bool = True
    on_bad_example: str = "stop"  # a corrupt or missing image met during the run: "stop" or "skip" (counted)
    plain_generation: bool = False  # the reference paths: model.generate on pixels, one full forward per candidate
    allow_pickle_weights: bool = False  # .bin checkpoints unpickle code; only safetensors load unless allowed


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


def demo_data(spec: TaskSpec) -> str:
    folder = DEMO_DATA / spec.name
    if not folder.is_dir():
        raise UserError(f"task {spec.name} has no bundled sample data for --demo; give --data")
    return str(folder)


def prepare(config: RunConfig, preloaded: bool = False) -> Prepared:
    """Validate everything that is cheap to check and load the annotations (not the images)."""
    if not config.shots:
        raise UserError("--shots is empty; give shot counts like 0,4,8")
    if config.limit is not None and config.limit < 1:
        raise UserError(f"--limit {config.limit}: give a positive number of queries")
    if config.batch_size != "auto" and (type(config.batch_size) is not int or config.batch_size < 1):
        raise UserError(f"--batch-size {config.batch_size!r}: give a positive whole number or auto")
    if type(config.image_cache_mb) is not int or config.image_cache_mb < 0:
        raise UserError(f"--image-cache-mb {config.image_cache_mb!r}: give a whole number of MiB, 0 or more")
    if config.on_bad_example not in ("stop", "skip"):
        raise UserError(f"--on-bad-example {config.on_bad_example!r}: use stop or skip")
    if config.selection not in ("rices", "random"):
        raise UserError(f"--selection {config.selection!r}: use rices or random")
    if config.selection == "rices" and tuple(config.seeds) != (0,):
        raise UserError("--seeds applies to --selection random only (RICES shots do not depend on a seed)")
    if config.demo and config.model:
        raise UserError("--demo and --model both given: --demo evaluates the embedded tiny model; drop one")
    if config.model:
        check_checkpoint(config.model)
    elif not config.demo and not preloaded:
        raise UserError("no model: give --model (a hub name or checkpoint folder) or --demo")
    _check_writable(config.output_dir)
    if config.image_cache_dir is not None:
        _check_writable(config.image_cache_dir, "--image-cache-dir")

    spec = load_task(config.task, config.tasks_dirs)
    if spec.zero_shot_only and max(config.shots) > 0:
        raise UserError(f"task {spec.name} is zero-shot only (it has no support set); use --shots 0")
    template = load_template(spec.prompt)
    metric = get_metric(spec.metric)
    data = config.data if config.data is not None else (demo_data(spec) if config.demo else None)
    queries = formats.load_split(spec, spec.query_split, data)
    support = _load_support(config, spec, data)
    if not queries.examples:
        raise UserError(f"the query split {queries.name} from {queries.source} is empty")
    all_queries_fingerprint = queries.fingerprint
    if config.limit is not None:
        queries = ExampleSet(queries.name, queries.source, queries.examples[: config.limit])
    if max(config.shots) > len(support):  # (a selector also checks this per query, after exclusions)
        raise UserError(
            f"the support split {support.name} has {len(support)} examples, fewer than the "
            f"{max(config.shots)} shots asked for; lower --shots or use a larger support split"
        )
    generation = GenerationSettings(
        max_new_tokens=config.max_new_tokens or spec.generation.max_new_tokens,
        num_beams=config.num_beams or spec.generation.num_beams,
        stop_words=spec.generation.stop_words if spec.generation.stop_words is not None else STOP_WORDS,
        first_line=spec.generation.first_line,
        strip_quotes=spec.generation.strip_quotes,
    )
    return Prepared(config, spec, template, metric, support, queries, all_queries_fingerprint, data, generation)


def _load_support(config: RunConfig, spec: TaskSpec, data: str | None) -> ExampleSet:
    """The split shots come from: the task's own, or another task's (NoCaps takes COCO train)."""
    if max(config.shots) == 0:
        return ExampleSet(f"{spec.name}/none", "no shots asked for", ())
    if spec.support_task is None:
        return formats.load_split(spec, spec.support_split, data)
    support_spec = load_task(spec.support_task, config.tasks_dirs)
    support_data = config.support_data
    if support_data is None and config.demo:
        support_data = demo_data(support_spec)
    return formats.load_split(support_spec, support_spec.support_split, support_data)


def _check_writable(folder: Path, flag: str = "--output-dir") -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        what = "the output folder" if flag == "--output-dir" else f"the {flag} folder"
        raise UserError(f"cannot write to {what} {folder}: {error.strerror}; choose another {flag}") from None


def _encoder(config: RunConfig, loaded: LoadedModel):
    if config.selection != "rices":
        return None
    if config.rices_encoder == "model":
        return VisionTowerEncoder(loaded)
    return ClipEncoder(config.rices_encoder, loaded.device)


def stable_rng(*keys: object):
    """A numpy generator seeded by the keys' text (not Python's salted hash): same keys, same draws."""
    import numpy as np

    digest = hashlib.sha256("\x1f".join(map(str, keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def candidates_of(spec: TaskSpec, example: Example) -> tuple[str, ...]:
    assert spec.candidates is not None
    return example.candidates if spec.candidates.source == "example" else spec.candidates.classes


def shot_answer(spec: TaskSpec) -> Callable[[Example], str]:
    """How a shot shows its answer (the task's `shot_answer`)."""
    if spec.shot_answer == "most_common":
        return most_common_answer
    if spec.shot_answer == "first":
        return lambda example: example.answers[0]
    if spec.shot_answer == "random_reference":  # a seeded choice among the reference captions
        return lambda example: example.answers[stable_rng(spec.seed, example.id).integers(len(example.answers))]
    if spec.candidates is None:
        raise UserError(f"{spec.path}: shot_answer label needs candidates")
    return lambda example: candidates_of(spec, example)[example.label]


def _fit_prompt(p: Prepared, loaded: LoadedModel, shots: Sequence[Example], query: Example, reserve: int) -> tuple[Prompt, int, int]:
    """Render the prompt, dropping the least similar shots (the first ones) until it fits the
    context with `reserve` tokens left for the answer."""
    budget = (p.config.max_length or loaded.max_length) - reserve
    answer = shot_answer(p.spec)
    for dropped in range(len(shots) + 1):
        prompt = p.template.render(shots[dropped:], query, answer)
        length = count_tokens(loaded, prompt)
        if length <= budget:
            break
    return prompt, dropped, length


def _candidate_reserve(loaded: LoadedModel, candidates: Sequence[str]) -> int:
    """Tokens the longest candidate continuation needs (plus the template's closing punctuation)."""
    tokenizer = loaded.processor.tokenizer
    return max(len(ids) for ids in tokenizer([" " + c for c in candidates], add_special_tokens=False)["input_ids"]) + 4


# Ranker.loglikelihoods or Ranker.loglikelihoods_full: (context, continuations, normalize) -> scores
Scorer = Callable[[Prompt, Sequence[Prompt], str], list[float]]


def _ranked_context(p: Prepared, loaded: LoadedModel, query: Example, shots: Sequence[Example]) -> tuple[Prompt, int, int]:
    """The fitted context of a ranked query, how many shots it dropped, and its length in tokens
    with the longest candidate."""
    reserve = _candidate_reserve(loaded, candidates_of(p.spec, query))
    context, dropped, length = _fit_prompt(p, loaded, shots, query, reserve)
    return context, dropped, length + reserve


def _continuations(p: Prepared, query: Example, kept: Sequence[Example]) -> list[Prompt]:
    answer = shot_answer(p.spec)
    return [p.template.render(kept, query, answer, candidate=c) for c in candidates_of(p.spec, query)]


def _ranked(p: Prepared, score: Scorer, query: Example, shots: Sequence[Example], loaded: LoadedModel) -> Prediction:
    candidates = candidates_of(p.spec, query)
    context, dropped, _ = _ranked_context(p, loaded, query, shots)
    continuations = _continuations(p, query, shots[dropped:])  # the shots the fitted context shows
    scores = score(context, continuations, p.spec.candidates.normalize)
    ranking = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    prediction = Prediction(
        id=query.id,
        prediction=candidates[ranking[0]],
        shots=context.shot_ids,
        score=None,
        dropped_shots=dropped,
        scores=tuple(scores) if len(scores) <= FULL_SCORES else (),
        ranking=tuple(ranking[:FULL_SCORES]),
    )
    return replace(prediction, score=p.metric.score(prediction, query))


def _matched_requests(p: Prepared, query: Example) -> list[tuple[Prompt, list[Prompt]]]:
    """Winoground: per image, the zero-shot context and its two captions as continuations."""
    captions = [query.fields[f"caption_{c}"] for c in (0, 1)]
    requests = []
    for image in (query.image, *query.extra_images):
        shown = replace(query, image=image)
        context = p.template.render([], shown, most_common_answer)
        requests.append((context, [p.template.render([], shown, most_common_answer, candidate=c) for c in captions]))
    return requests


def _matched(p: Prepared, score: Scorer, query: Example) -> Prediction:
    """Winoground: every caption scored with every image; scores are [c0i0, c0i1, c1i0, c1i1]."""
    normalize = p.spec.candidates.normalize if p.spec.candidates else "mean"
    by_image = [score(context, continuations, normalize) for context, continuations in _matched_requests(p, query)]
    scores = tuple(by_image[i][c] for c in (0, 1) for i in (0, 1))
    prediction = Prediction(id=query.id, prediction="", shots=(), score=None, scores=scores)
    return replace(prediction, score=p.metric.score(prediction, query))


def _identity(p: Prepared, loaded: LoadedModel) -> dict:
    """What determines every predictions file of this task: a rerun in the same folder must match.

    Round-tripped through JSON so that it compares equal to the copy read back from the manifest.
    What the shots depend on (support data, selection, index) is recorded per file instead, since
    zero-shot files do not depend on it.
    """
    return _plain({
        "task": {"name": p.spec.name, "version": p.spec.version, "digest": p.spec.digest},
        "prompt": {"name": p.template.name, "version": p.template.version, "digest": p.template.digest},
        "data": {"source": p.queries.source, "query_split": p.queries.name, "query_fingerprint": p.all_queries_fingerprint},
        "model": {"name": loaded.name, "fingerprint": loaded.fingerprint, "dtype": str(loaded.dtype).replace("torch.", "")},
        "generation": asdict(p.generation) | {"max_length": p.config.max_length or loaded.max_length},
    })


def _plain(data: dict) -> dict:
    return json.loads(json.dumps(data))


class Manifest:
    """`manifest.json`: per task and selection, the identity of the run and of each predictions file.

    A rerun whose identity differs from what the folder holds is refused (or, with --overwrite, the
    old predictions are deleted), so predictions made under two configurations never mix.
    """

    def __init__(self, p: Prepared, identity: dict):
        self.p = p
        self.path = p.config.output_dir / "manifest.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.key = f"{p.spec.name}/{p.config.selection}"
        entry = self.data.get(self.key)
        if entry is not None and entry["identity"] != identity:
            differing = sorted(k for k in identity if entry["identity"].get(k) != identity[k])
            self._conflict(f"a different {', '.join(differing)}")
            for stale in self._files(f"{p.spec.name}_*shot*.jsonl*"):
                stale.unlink()
            entry = None
        self.entry = entry or {"identity": identity, "files": {}}
        self._save()

    def _files(self, pattern: str) -> list[Path]:
        return [f for f in (self.p.config.output_dir / "predictions").glob(pattern)
                if ("_seed" in f.name) == (self.p.config.selection == "random")]

    def _conflict(self, what: str) -> None:
        if not self.p.config.overwrite:
            raise UserError(
                f"{self.p.config.output_dir} already holds {self.key} predictions made with {what}; "
                "use another --output-dir, or --overwrite to replace them"
            )

    def claim(self, path: Path, shots_identity: dict) -> None:
        """Before a predictions file is written or reused: it must have been made with these shots."""
        shots_identity = _plain(shots_identity)
        previous = self.entry["files"].get(path.name)
        if previous is not None and previous != shots_identity:
            differing = sorted(k for k in shots_identity if previous.get(k) != shots_identity[k])
            self._conflict(f"different shots ({', '.join(differing)}) in {path.name}")
            for stale in (path, path.with_name(path.name + ".partial")):
                stale.unlink(missing_ok=True)
        self.entry["files"][path.name] = shots_identity
        self._save()

    def _save(self) -> None:
        self.data[self.key] = self.entry
        write_json_atomic(self.path, self.data)


class NoShots:
    """The selector when only zero-shot prompts are asked for: no support set, no index."""

    def select(self, query: Example, k: int) -> list[Example]:
        return []

    def describe(self) -> dict:
        return {}


def _evaluate_setting(p: Prepared, loaded: LoadedModel, selector, shots: int, seed: int | None,
                      world: World) -> tuple[list[Prediction], int | None]:
    """Predictions for every query at one shot count (on rank 0; other ranks return [] once their
    shard is written), and the batch size this process used (None when it had nothing to do).
    Each rank scores every world.size-th query not already answered."""
    path = prediction_file(p.config.output_dir, p.spec.name, shots, seed)
    order = [query.id for query in p.queries.examples]
    if path.exists():
        finished = {pred.id: pred for pred in read_predictions(path)}
        if all(query_id in finished for query_id in order):
            return ([finished[query_id] for query_id in order] if world.is_main else []), None
    writer = PredictionWriter(path, world.rank)
    world.barrier()  # every rank has read what is done before any appends
    batch_size = None
    try:
        todo = world.shard([query for query in p.queries.examples if query.id not in writer.done])
        label = f"{p.spec.name} {shots}-shot" + (f" seed {seed}" if seed is not None else "")
        with tqdm(total=len(todo), desc=label, unit="query", disable=not p.config.progress or not world.is_main) as bar:
            if todo:
                evaluate = _generate if p.spec.request == "generate" else _rank
                batch_size = evaluate(p, loaded, selector, shots, todo, writer, bar)
    finally:
        writer.close()
    world.barrier()  # every shard is written
    predictions = finish_predictions(path, order) if world.is_main else []
    world.barrier()
    return predictions, batch_size


def _rank(p: Prepared, loaded: LoadedModel, selector, shots: int, todo: list[Example], writer: PredictionWriter, bar) -> int:
    """Ranked and matched requests, one query at a time (a query's candidates are the batch); returns the batch size."""
    ranker = Ranker(loaded, 1)
    score = ranker.loglikelihoods_full if p.config.plain_generation else ranker.loglikelihoods

    def worst_case() -> tuple[Callable[[int], object], int]:
        requests = _longest_ranking_requests(p, loaded, selector, shots, todo)

        def try_batch(size: int) -> None:
            ranker.batch_size = size
            for context, continuations in requests:  # a query whose images cannot be read is met later
                try:
                    score(context, continuations, "sum")
                    return
                except UserError:
                    continue

        return try_batch, len(requests[0][1])

    ranker.batch_size = resolve_batch_size(p.config.batch_size, loaded.device, worst_case)
    for query in todo:
        try:
            if p.spec.request == "match":
                prediction = _matched(p, score, query)
            else:
                prediction = _ranked(p, score, query, selector.select(query, shots), loaded)
        except UserError as error:
            prediction = _bad_example(p, query, error)
        writer.write([prediction])
        bar.update(1)
    return ranker.batch_size


def _longest_ranking_requests(p: Prepared, loaded: LoadedModel, selector, shots: int,
                              todo: list[Example]) -> list[tuple[Prompt, list[Prompt]]]:
    """The queries' (context, continuations), the one needing the most memory first: the most
    images, then the most tokens (context and longest candidate)."""
    if p.spec.request == "match":  # zero shots, one image and two captions a request: all alike
        return [request for query in todo for request in _matched_requests(p, query)]
    contexts = []
    for query in todo:
        kept = selector.select(query, shots)
        context, dropped, length = _ranked_context(p, loaded, query, kept)
        contexts.append((query, kept[dropped:], context, length))
    order = longest_first([(len(context.images), length) for _, _, context, length in contexts])
    return [(contexts[i][2], _continuations(p, contexts[i][0], contexts[i][1])) for i in order]


def _bad_example(p: Prepared, query: Example, error: UserError) -> Prediction:
    """A query whose image (or a shot's) cannot be read: stop the run naming it, or skip it, counted."""
    if p.config.on_bad_example == "stop":
        raise UserError(f"query {query.id}: {error}; fix the data, or pass --on-bad-example skip to skip such queries") from None
    return Prediction(id=query.id, prediction="", shots=(), score=None, error=str(error))


class _Tolerant:
    """Generation that finds the bad example of a failed batch by retrying its prompts one by one."""

    def __init__(self, generator: Generator):
        self.generator = generator
        self.errors: dict[int, UserError] = {}

    def generate(self, prompts: list[Prompt]) -> list[str | None]:
        try:
            return self.generator.generate(prompts)
        except UserError:
            answers: list[str | None] = []
            for prompt in prompts:
                try:
                    answers.extend(self.generator.generate([prompt]))
                except UserError as error:
                    self.errors[id(prompt)] = error
                    answers.append(None)
            return answers


def _generate(p: Prepared, loaded: LoadedModel, selector, shots: int, todo: list[Example], writer: PredictionWriter, bar) -> int:
    """Generation requests in length-sorted batches; returns the batch size."""
    generator = _Tolerant(Generator(loaded, p.generation, fast=not p.config.plain_generation))
    requests = [_fit_prompt(p, loaded, selector.select(query, shots), query, p.generation.max_new_tokens) for query in todo]
    prompts, lengths = [r[0] for r in requests], [r[2] for r in requests]

    def worst_case() -> tuple[Callable[[int], object], int]:
        worst = [prompts[i] for i in longest_first([(len(prompt.images), n) for prompt, n in zip(prompts, lengths)])]
        return (lambda size: generator.generate(worst[:size])), len(worst)

    batch_size = resolve_batch_size(p.config.batch_size, loaded.device, worst_case)

    def record(indices: list[int], answers: list[str | None]) -> None:
        predictions = []
        for i, answer in zip(indices, answers):
            if answer is None:
                predictions.append(_bad_example(p, todo[i], generator.errors[id(requests[i][0])]))
                continue
            prediction = Prediction(id=todo[i].id, prediction=answer, shots=requests[i][0].shot_ids, score=None,
                                    dropped_shots=requests[i][1])
            predictions.append(replace(prediction, score=p.metric.score(prediction, todo[i])))
        writer.write(predictions)
        bar.update(len(indices))

    generate_all(generator, prompts, lengths, batch_size, record)
    return batch_size


def _aggregate_seeds(rows: list[Result]) -> Result:
    means = {name: statistics.fmean(r.metrics[name] for r in rows) for name in rows[0].metrics}
    stds = {name: statistics.stdev([r.metrics[name] for r in rows]) for name in rows[0].metrics}
    config = dict(rows[0].config)
    config["shots"] = dict(config["shots"], seeds=[r.seed for r in rows])
    return replace(rows[0], seed=None, metrics=means, metrics_std=stds, predictions=None, config=config,
                   num_truncated=max(r.num_truncated for r in rows))


def _shots_identity(p: Prepared, selection: dict, shots: int) -> dict:
    if shots == 0:
        return {}
    return selection | {"support_split": p.support.name, "support_source": p.support.source}


@contextmanager
def folder_lock(output_dir: Path, enabled: bool = True):
    """Hold `output_dir/.lock` for the run: a second run into the same folder is refused, not interleaved."""
    if not enabled:
        yield
        return
    import fcntl

    handle = open(output_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"another idefics-eval run ({holder}) is writing to {output_dir}; wait for it to finish or use another --output-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def run(config: RunConfig, loaded: LoadedModel | None = None) -> list[Result]:
    """Evaluate one task at every requested shot count; write predictions and results.json.

    `loaded` evaluates an already-loaded model (sweeps, training loops) instead of loading `config.model`.
    Under torchrun every process calls this; rank 0 writes the shared files and returns the rows.
    """
    world = current_world()
    p = prepare(config, preloaded=loaded is not None)
    with folder_lock(config.output_dir, enabled=world.is_main):
        return _run(config, p, world, loaded)


def _run(config: RunConfig, p: Prepared, world: World, loaded: LoadedModel | None) -> list[Result]:
    if loaded is None:
        loaded = load_model(config.model or demo_model_name(config.demo_seed), device=world.device(config.device), dtype=config.dtype,
                            demo_seed=config.demo_seed if config.demo else None, device_map=config.device_map,
                            allow_pickle=config.allow_pickle_weights)
    configure_shared_cache(loaded, config.image_cache_mb << 20, config.image_cache_dir)
    identity = _identity(p, loaded)
    manifest = Manifest(p, identity) if world.is_main else None
    world.barrier()
    encoder = _encoder(config, loaded) if max(config.shots) > 0 else None
    seeds = config.seeds if config.selection == "random" else (None,)
    rows: list[Result] = []
    earlier_batch_sizes = _recorded_batch_sizes(config.output_dir) if world.is_main else {}
    for seed in seeds:
        if max(config.shots) == 0:
            selector = NoShots()
        else:
            if not world.is_main:
                world.barrier()  # rank 0 builds and caches the index first; the others then load it
            selector = build_selector(
                ShotSettings(config.selection, seed or 0), p.support, p.queries, max(config.shots), encoder,
                config.cache_dir, batch_size=4 * (AUTO_BATCH_OFF_GPU if config.batch_size == "auto" else config.batch_size),
                progress=config.progress and world.is_main,
            )
            if world.is_main:
                world.barrier()
        selection = selector.describe() | {"seed": seed}
        for shots in sorted(config.shots):
            shots_identity = _shots_identity(p, selection, shots)
            if manifest is not None:
                manifest.claim(prediction_file(config.output_dir, p.spec.name, shots, seed), shots_identity)
            world.barrier()
            predictions, batch_size = _evaluate_setting(p, loaded, selector, shots, seed, world)
            if not world.is_main:
                continue
            if batch_size is None:  # every prediction was there already: what the run that made them used
                batch_size = earlier_batch_sizes.get((p.spec.name, shots, config.selection, seed), config.batch_size)
            scored = [(pred, query) for pred, query in zip(predictions, p.queries.examples) if pred.error is None]
            rows.append(
                Result(
                    task=p.spec.name,
                    shots=shots,
                    selection=config.selection,
                    seed=seed,
                    metrics=p.metric.aggregate([s[0] for s in scored], [s[1] for s in scored]),
                    num_examples=len(scored),
                    num_skipped=len(predictions) - len(scored),
                    num_truncated=sum(pred.dropped_shots > 0 for pred in predictions),
                    predictions=str(prediction_file(Path("."), p.spec.name, shots, seed)),
                    config=identity | {"shots": shots_identity or {"selection": config.selection, "seed": seed},
                                       "limit": config.limit, "processes": world.size, "batch_size": batch_size,
                                       "plain_generation": config.plain_generation,
                                       "versions": package_versions(), "command": sys.argv},
                )
            )
    if not world.is_main:
        return []
    if config.selection == "random" and len(seeds) > 1:
        rows += [_aggregate_seeds([r for r in rows if r.shots == k]) for k in sorted(config.shots)]
    merge_results(config.output_dir / "results.json", rows)
    return rows


def _recorded_batch_sizes(output_dir: Path) -> dict[tuple, int | str]:
    """The batch size each row of an earlier results.json in `output_dir` records, by row key."""
    path = output_dir / "results.json"
    rows = read_results(path) if path.exists() else []
    return {row.key: row.config["batch_size"] for row in rows if "batch_size" in row.config}


def run_tasks(configs: Sequence[RunConfig]) -> list[Result]:
    """Several tasks with one model: every task is validated before the model loads, once."""
    if len(configs) == 1:
        return run(configs[0])
    for config in configs:
        prepare(config)
    first = configs[0]
    loaded = load_model(first.model or demo_model_name(first.demo_seed), device=current_world().device(first.device), dtype=first.dtype,
                        demo_seed=first.demo_seed if first.demo else None, device_map=first.device_map,
                        allow_pickle=first.allow_pickle_weights)
    return [row for config in configs for row in run(config, loaded=loaded)]
