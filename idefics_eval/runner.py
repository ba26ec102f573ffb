"""The runner: one evaluation from task spec to results, in the pipeline's order.

task spec -> examples (support and query splits) -> shot selection -> prompts -> generation ->
predictions -> metric -> results. The stages live in their own modules: `plan` (settings checked
and annotations loaded before the model loads), `model_requests` (prompts per query), `engine` and
`ranking` (the model's passes), `store` (the run folder's manifest and lock); this module runs them
in order and writes the results.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from .comparability import bundled_data
from .console import quiet_libraries
from .distributed import World, world as current_world
from .engine import AUTO_BATCH_OFF_GPU, Generator, generate_all, longest_first, postprocess, resolve_batch_size
from .errors import UserError
from .examples import Example, ExampleSet
from .image_cache import configure_shared_cache, forget_features
from .model_requests import (PromptTooLong, Tolerant, bad_example, check_context, fit_prompt, longest_ranking_requests,
                             matched, ranked, sample_fields)
from .metrics import refuse_undefined
from .models import ClipEncoder, LoadedModel, VisionTowerEncoder, demo_model_name, load_model
from .plan import DEMO_DATA, Prepared, RunConfig, demo_data, prepare  # noqa: F401  (re-exported)
from .predictions import (Prediction, PredictionWriter, finish_predictions, logged_ids, prediction_file, read_predictions,
                          sample_file)
from .ranking import Ranker
from .results import Result, environment, mean_over_seeds, merge_results, package_versions, utc_now
from .shots import ShotSettings, ZeroShot, build_selector
from .store import Manifest, RunFolder, folder_lock, identity_of, recorded_rows, shots_identity

def _encoder(config: RunConfig, loaded: LoadedModel):
    if config.selection != "rices":
        return None
    if config.rices_encoder == "model":
        return VisionTowerEncoder(loaded)
    return ClipEncoder(config.rices_encoder, loaded.device)


def shot_selector(p: Prepared, queries: ExampleSet, seed: int | None, max_k: int, encoder, progress: bool):
    """The run's selector of up to `max_k` shots for `queries` (`idefics-eval prompt` builds the same);
    zero-shot: no index, and the text-only shots where the run's zero-shot style asks for them."""
    if max_k == 0:
        return ZeroShot(p.config.zero_shot, p.support)
    config = p.config
    return build_selector(ShotSettings(config.selection, seed or 0), p.support, queries, max_k, encoder, config.cache_dir,
                          batch_size=4 * (AUTO_BATCH_OFF_GPU if config.batch_size == "auto" else config.batch_size),
                          progress=progress)


def _evaluate_setting(p: Prepared, loaded: LoadedModel, selector, shots: int, seed: int | None,
                      world: World, folder: RunFolder) -> tuple[list[Prediction], int | None]:
    """Predictions for every query at one shot count (on rank 0; other ranks return [] once their
    shard is written), and the batch size this process used (None when it had nothing to do).
    Each rank scores every world.size-th query not already answered."""
    path = prediction_file(p.config.output_dir, p.spec.name, shots, seed)
    samples = sample_file(path) if p.config.log_samples else None
    order = [query.id for query in p.queries.examples]
    if path.exists() and (samples is None or samples.exists()):
        finished = {pred.id: pred for pred in read_predictions(path)}
        logged = finished if samples is None else logged_ids(samples)
        if all(query_id in finished and query_id in logged for query_id in order):
            return ([finished[query_id] for query_id in order] if world.is_main else []), None
    folder.check()  # before the writer makes predictions/ again in a removed folder
    writer = PredictionWriter(path, world.rank, after_write=folder.check, samples=samples)
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
    folder.check()
    predictions = finish_predictions(path, order, samples) if world.is_main else []
    world.barrier()
    return predictions, batch_size


def _rank(p: Prepared, loaded: LoadedModel, selector, shots: int, todo: list[Example], writer: PredictionWriter, bar) -> int:
    """Ranked and matched requests, one query at a time (a query's candidates are the batch); returns the batch size."""
    ranker = Ranker(loaded, 1, add_start_token=p.generation.add_start_token)
    score = ranker.loglikelihoods_full if p.config.plain_generation else ranker.loglikelihoods

    def worst_case() -> tuple[Callable[[int], object], int]:
        requests = longest_ranking_requests(p, loaded, selector, shots, todo)

        def try_batch(size: int) -> None:
            ranker.batch_size = size
            for context, continuations in requests:  # a query whose images cannot be read is met later
                try:
                    score(context, continuations, "sum")
                    return
                except UserError:
                    continue

        return try_batch, len(requests[0][1]) if requests else 1  # every query too long: nothing to probe

    ranker.batch_size = resolve_batch_size(p.config.batch_size, loaded.device, worst_case)
    for query in todo:
        try:
            if p.spec.request == "match":
                prediction = matched(p, score, query, loaded)
            else:
                prediction = ranked(p, score, query, selector.select(query, shots), selector.similarities(query, shots), loaded)
        except UserError as error:
            prediction = bad_example(p, query, error)
        writer.write([prediction])
        bar.update(1)
    return ranker.batch_size


def _generate(p: Prepared, loaded: LoadedModel, selector, shots: int, todo: list[Example], writer: PredictionWriter, bar) -> int:
    """Generation requests in length-sorted batches; returns the batch size."""
    generator = Tolerant(Generator(loaded, p.generation, fast=not p.config.plain_generation))
    todo, requests = _fitted(p, loaded, selector, shots, todo, writer, bar)
    prompts, lengths = [r[0] for r in requests], [r[2] for r in requests]

    def worst_case() -> tuple[Callable[[int], object], int]:
        worst = [prompts[i] for i in longest_first([(len(prompt.images), n) for prompt, n in zip(prompts, lengths)])]
        return (lambda size: worst and generator.generate(worst[:size])), max(1, len(worst))  # worst empty: all skipped

    batch_size = resolve_batch_size(p.config.batch_size, loaded.device, worst_case)

    def record(indices: list[int], generations: list[str | None]) -> None:
        predictions = []
        for i, raw in zip(indices, generations):
            if raw is None:
                predictions.append(bad_example(p, todo[i], generator.errors[id(requests[i][0])]))
                continue
            prompt, dropped, length, (shown, similarities) = requests[i]
            sample = sample_fields(p, loaded, todo[i], prompt, shown, similarities, length, raw_prediction=raw)
            prediction = Prediction(id=todo[i].id, prediction=postprocess(raw, p.generation), shots=prompt.shot_ids, score=None,
                                    dropped_shots=dropped, cut_tokens=prompt.cut_tokens, sample=sample)
            predictions.append(replace(prediction, score=p.metric.score(prediction, todo[i]) if p.references else None))
        writer.write(predictions)
        bar.update(len(indices))

    generate_all(generator, prompts, lengths, batch_size, record)
    return batch_size


def _fitted(p: Prepared, loaded: LoadedModel, selector, shots: int, todo: list[Example], writer: PredictionWriter,
            bar) -> tuple[list[Example], list[tuple]]:
    """Every query's fitted prompt, the shots dropped, its length, and the shots it shows with their
    similarities, measured before anything runs; a query too long even with no shots stops the run
    here or is written as skipped and left out."""
    kept, requests = [], []
    for query in todo:
        chosen, similarities = selector.select(query, shots), selector.similarities(query, shots)
        try:
            prompt, dropped, length = fit_prompt(p, loaded, chosen, query, p.generation.max_new_tokens)
            requests.append((prompt, dropped, length, (chosen[dropped:], similarities[dropped:])))
            kept.append(query)
        except PromptTooLong as error:
            writer.write([bad_example(p, query, error)])
            bar.update(1)
    return kept, requests


def _settings(config: RunConfig) -> list[tuple[int | None, list[int]]]:
    """(seed, shot counts) in evaluation order. Zero-shot comes once and without a seed: it shows no
    shots, so every seed of random selection would give the same predictions."""
    shots = sorted(config.shots)
    settings: list[tuple[int | None, list[int]]] = [(None, [0])] if 0 in shots else []
    few = [k for k in shots if k > 0]
    if few:
        seeds = config.seeds if config.selection == "random" else (None,)
        settings += [(seed, few) for seed in seeds]
    return settings


def _zero_shot_selection(config: RunConfig) -> dict:
    """What a zero-shot row records of the selection: no seed, and the seeds it stands for."""
    seeds = {"seeds": list(config.seeds)} if config.selection == "random" else {}
    return {"selection": config.selection, "seed": None} | seeds


def _row(p: Prepared, loaded: LoadedModel, shots: int, seed: int | None, predictions: list[Prediction], identity: dict,
         batch_size: int | str) -> Result:
    """The results row of one setting's predictions; `identity` is the run's and the shots' identity."""
    config = p.config
    scored = [(pred, query) for pred, query in zip(predictions, p.queries.examples) if pred.error is None]
    refuse_undefined(p.metric, [s[1] for s in scored], f"{p.queries.name}, {shots} shots, the queries not skipped")
    metrics = p.metric.aggregate([s[0] for s in scored], [s[1] for s in scored]) if p.references else {}
    one_for_all_seeds = shots == 0 and config.selection == "random" and len(config.seeds) > 1
    return Result(
        task=p.spec.name,
        shots=shots,
        selection=config.selection,
        seed=seed,
        metrics=metrics,
        metrics_std=dict.fromkeys(metrics, 0.0) if one_for_all_seeds else None,
        num_examples=len(scored),
        num_skipped=len(predictions) - len(scored),
        num_truncated=sum(pred.dropped_shots > 0 or pred.cut_tokens > 0 for pred, _ in scored),
        predictions=str(prediction_file(Path("."), p.spec.name, shots, seed)),
        config=identity | {"limit": config.limit, "processes": current_world().size, "batch_size": batch_size,
                           "tasks_dirs": [str(Path(d).absolute()) for d in config.tasks_dirs],  # for `score RUN_DIR`
                           "plain_generation": config.plain_generation,
                           "versions": package_versions(), "command": sys.argv} | _scope(p),
        run_name=config.run_name,
        environment=environment(loaded.device),
    )


def _as_made(row: Result, earlier: Result) -> Result:
    """A row whose predictions were all read back: the batch size, times and place of the run that made
    them (unknown, None, for a row written before rows recorded them), not of the rerun that read them."""
    row.config["batch_size"] = earlier.config.get("batch_size", row.config["batch_size"])
    return replace(row, started=earlier.started, finished=earlier.finished, duration_s=earlier.duration_s,
                   environment=earlier.environment)


def _scope(p: Prepared) -> dict:
    """What a row records beside its identity so that reports can tell comparable numbers apart
    (idefics_eval/comparability.py): the full split's size, the bundled data, the options given."""
    options = {"num_beams": p.config.num_beams, "max_new_tokens": p.config.max_new_tokens, "max_length": p.config.max_length}
    scope = {"num_queries": p.num_queries, "demo_data": bundled_data(p.queries.source), "request": p.spec.request,
             "generation_options": {name: value for name, value in options.items() if value is not None}}
    scope |= {"notes": list(p.notes)} if p.notes else {}  # a drawn split smaller than asked for (splits.py)
    return scope if p.references else scope | {"metric_skipped": no_metric_note(p.queries.name)}


def no_metric_note(split: str) -> str:
    """What a row of a split without references says in place of its metric (and `run` prints)."""
    return (f"{split} has no reference answers: predictions written, metric skipped (its evaluation server scores "
            "them; write the server's file with `idefics-eval submission`)")


def run(config: RunConfig, loaded: LoadedModel | None = None) -> list[Result]:
    """Evaluate one task at every requested shot count; write predictions and results.json.

    `loaded` evaluates an already-loaded model (sweeps, training loops) instead of loading `config.model`.
    Under torchrun every process calls this; rank 0 writes the shared files and returns the rows.
    """
    world = current_world()
    with quiet_libraries(not config.progress):
        p = prepare(config, preloaded=loaded is not None)
        with folder_lock(config.output_dir, enabled=world.is_main) as folder:
            return _run(config, p, world, loaded, folder)


def _run(config: RunConfig, p: Prepared, world: World, loaded: LoadedModel | None, folder: RunFolder) -> list[Result]:
    if loaded is None:
        loaded = load_model(config.model or demo_model_name(config.demo_seed), device=world.device(config.device), dtype=config.dtype,
                            demo_seed=config.demo_seed if config.demo else None, device_map=config.device_map,
                            allow_pickle=config.allow_pickle_weights, progress=config.progress)
    check_context(p, loaded)
    configure_shared_cache(loaded, config.image_cache_mb << 20, config.image_cache_dir)
    identity = identity_of(p, loaded)
    manifest = Manifest(p, identity, config.run_name) if world.is_main else None
    world.barrier()
    encoder = _encoder(p.config, loaded) if max(config.shots) > 0 else None  # p.config: the protocol's encoder resolved
    rows: list[Result] = []
    earlier = recorded_rows(config.output_dir) if world.is_main else {}
    for seed, shot_counts in _settings(config):
        if max(shot_counts) == 0:
            selector = shot_selector(p, p.queries, seed, 0, None, False)
        else:
            if not world.is_main:
                world.barrier()  # rank 0 builds and caches the index first; the others then load it
            selector = shot_selector(p, p.queries, seed, max(shot_counts), encoder, config.progress and world.is_main)
            if world.is_main:
                world.barrier()
        selection = selector.describe() | {"seed": seed}
        for shots in shot_counts:
            files_identity = shots_identity(p, selection, shots)
            folder.check()  # the manifest would otherwise be written into a recreated, empty folder
            if manifest is not None:
                manifest.claim(prediction_file(config.output_dir, p.spec.name, shots, seed), files_identity)
            world.barrier()
            started, clock = utc_now(), time.monotonic()
            predictions, batch_size = _evaluate_setting(p, loaded, selector, shots, seed, world, folder)
            if not world.is_main:
                continue
            recorded = files_identity if shots else _zero_shot_selection(config) | files_identity  # text-only: its shots' ids
            row = _row(p, loaded, shots, seed, predictions, identity | {"shots": recorded},
                       config.batch_size if batch_size is None else batch_size)
            row = replace(row, started=started, finished=utc_now(), duration_s=round(time.monotonic() - clock, 3))
            if batch_size is None and row.key in earlier:  # every prediction was there already: what the run that made them used
                row = _as_made(row, earlier[row.key])
            rows.append(row)
    if not world.is_main:
        return []
    if config.selection == "random" and len(config.seeds) > 1:
        rows += [mean_over_seeds([r for r in rows if r.shots == k]) for k in sorted(config.shots) if k > 0]
    folder.check()  # the rows name predictions files that must still be there
    merge_results(config.output_dir / "results.json", rows)
    return rows


def run_tasks(configs: Sequence[RunConfig], loaded: LoadedModel | None = None) -> list[Result]:
    """Several tasks with one model: every task is validated before the model loads, once
    (or, given an already-loaded model, before the first task runs). The tasks share their images'
    features; an already-loaded model's from earlier runs are dropped (`forget_features`)."""
    if loaded is not None:
        forget_features(loaded)
    if len(configs) == 1:
        return run(configs[0], loaded=loaded)
    first = configs[0]
    with quiet_libraries(not first.progress):
        for config in configs:
            prepare(config, preloaded=loaded is not None)
        if loaded is None:
            loaded = load_model(first.model or demo_model_name(first.demo_seed), device=current_world().device(first.device),
                                dtype=first.dtype, demo_seed=first.demo_seed if first.demo else None,
                                device_map=first.device_map, allow_pickle=first.allow_pickle_weights, progress=first.progress)
    return [row for config in configs for row in run(config, loaded=loaded)]
