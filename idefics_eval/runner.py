"""The runner: one evaluation from task spec to results, in the pipeline's order.

task spec -> examples (support and query splits) -> shot selection -> prompts -> generation ->
predictions -> metric -> results. Everything that can be checked cheaply is checked before the
model loads.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from . import formats
from .engine import GenerationSettings, Generator, count_tokens, generate_all
from .errors import UserError
from .examples import Example, ExampleSet
from .metrics import Metric, get_metric
from .models import ClipEncoder, LoadedModel, VisionTowerEncoder, check_checkpoint, load_model
from .predictions import Prediction, PredictionWriter, prediction_file, read_predictions
from .prompts import Prompt, PromptTemplate, load_template, most_common_answer
from .results import Result, merge_results, package_versions, write_json_atomic
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
    demo_seed: int = 0
    data: str | None = None
    selection: str = "rices"
    seeds: tuple[int, ...] = (0,)
    rices_encoder: str = "model"  # "model" (the evaluated model's vision tower) or a CLIP hub id / folder
    limit: int | None = None
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    num_beams: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None
    cache_dir: Path | None = None
    tasks_dirs: tuple[Path, ...] = ()
    overwrite: bool = False
    progress: bool = True


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


def prepare(config: RunConfig) -> Prepared:
    """Validate everything that is cheap to check and load the annotations (not the images)."""
    if not config.shots:
        raise UserError("--shots is empty; give shot counts like 0,4,8")
    if config.limit is not None and config.limit < 1:
        raise UserError(f"--limit {config.limit}: give a positive number of queries")
    if config.batch_size < 1:
        raise UserError(f"--batch-size {config.batch_size}: give a positive batch size")
    if config.selection not in ("rices", "random"):
        raise UserError(f"--selection {config.selection!r}: use rices or random")
    if config.selection == "rices" and tuple(config.seeds) != (0,):
        raise UserError("--seeds applies to --selection random only (RICES shots do not depend on a seed)")
    if config.demo and config.model:
        raise UserError("--demo and --model both given: --demo evaluates the embedded tiny model; drop one")
    if not config.demo and not config.model:
        raise UserError("no model: give --model (a hub name or checkpoint folder) or --demo")
    if config.model:
        check_checkpoint(config.model)
    _check_writable(config.output_dir)

    spec = load_task(config.task, config.tasks_dirs)
    if spec.request != "generate":
        raise UserError(f"task {spec.name} ranks candidates; this version of the harness evaluates generate tasks only")
    template = load_template(spec.prompt)
    metric = get_metric(spec.metric)
    data = config.data if config.data is not None else (demo_data(spec) if config.demo else None)
    support = formats.load_split(spec, spec.support_split, data)
    queries = formats.load_split(spec, spec.query_split, data)
    if not queries.examples:
        raise UserError(f"the query split {queries.name} from {queries.source} is empty")
    all_queries_fingerprint = queries.fingerprint
    if config.limit is not None:
        queries = ExampleSet(queries.name, queries.source, queries.examples[: config.limit])
    if max(config.shots) > len(support):
        raise UserError(
            f"the support split {support.name} has {len(support)} examples, fewer than the "
            f"{max(config.shots)} shots asked for; lower --shots or use a larger support split"
        )
    generation = GenerationSettings(
        max_new_tokens=config.max_new_tokens or spec.generation.max_new_tokens,
        num_beams=config.num_beams or spec.generation.num_beams,
    )
    return Prepared(config, spec, template, metric, support, queries, all_queries_fingerprint, data, generation)


def _check_writable(output_dir: Path) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to the output folder {output_dir}: {error.strerror}; choose another --output-dir") from None


def _encoder(config: RunConfig, loaded: LoadedModel):
    if config.selection != "rices":
        return None
    if config.rices_encoder == "model":
        return VisionTowerEncoder(loaded)
    return ClipEncoder(config.rices_encoder, loaded.device)


def _fit_prompt(p: Prepared, loaded: LoadedModel, shots: Sequence[Example], query: Example) -> tuple[Prompt, int, int]:
    """Render the prompt, dropping the least similar shots (the first ones) until it fits the context."""
    budget = (p.config.max_length or loaded.max_length) - p.generation.max_new_tokens
    for dropped in range(len(shots) + 1):
        prompt = p.template.render(shots[dropped:], query, most_common_answer)
        length = count_tokens(loaded, prompt)
        if length <= budget:
            break
    return prompt, dropped, length


def _identity(p: Prepared, loaded: LoadedModel, selection: dict) -> dict:
    """What determines the predictions: a rerun in the same folder must match it to resume.

    Round-tripped through JSON so that it compares equal to the copy read back from the manifest.
    """
    return json.loads(json.dumps({
        "task": {"name": p.spec.name, "version": p.spec.version, "digest": p.spec.digest},
        "prompt": {"name": p.template.name, "version": p.template.version, "digest": p.template.digest},
        "data": {
            "source": p.queries.source,
            "support_split": p.support.name,
            "support_fingerprint": p.support.fingerprint,
            "query_split": p.queries.name,
            "query_fingerprint": p.all_queries_fingerprint,
        },
        "model": {"name": loaded.name, "fingerprint": loaded.fingerprint, "dtype": str(loaded.dtype).replace("torch.", "")},
        "shots": {key: value for key, value in selection.items() if key != "seed"},
        "generation": asdict(p.generation) | {"max_length": p.config.max_length or loaded.max_length},
    }))


def _check_manifest(p: Prepared, identity: dict) -> None:
    """Refuse to mix predictions made under another configuration into the same folder."""
    path = p.config.output_dir / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    key = f"{p.spec.name}/{p.config.selection}"
    previous = manifest.get(key)
    if previous is not None and previous != identity and not p.config.overwrite:
        differing = sorted(k for k in identity if previous.get(k) != identity[k])
        raise UserError(
            f"{p.config.output_dir} already holds {key} predictions made with a different "
            f"{', '.join(differing)}; use another --output-dir, or --overwrite to replace them"
        )
    if previous != identity:
        pattern = f"{p.spec.name}_*shot_seed*.jsonl*" if p.config.selection == "random" else f"{p.spec.name}_*shot.jsonl*"
        for stale in (p.config.output_dir / "predictions").glob(pattern):
            stale.unlink()
        manifest[key] = identity
        write_json_atomic(path, manifest)


def _evaluate_setting(p: Prepared, loaded: LoadedModel, generator: Generator, selector, shots: int, seed: int | None) -> list[Prediction]:
    path = prediction_file(p.config.output_dir, p.spec.name, shots, seed)
    order = [query.id for query in p.queries.examples]
    if path.exists():
        finished = {pred.id: pred for pred in read_predictions(path)}
        if all(query_id in finished for query_id in order):
            return [finished[query_id] for query_id in order]
    writer = PredictionWriter(path)
    try:
        todo = [query for query in p.queries.examples if query.id not in writer.done]
        requests = [_fit_prompt(p, loaded, selector.select(query, shots), query) for query in todo]
        label = f"{p.spec.name} {shots}-shot" + (f" seed {seed}" if seed is not None else "")
        with tqdm(total=len(order), initial=len(order) - len(todo), desc=label, unit="query", disable=not p.config.progress) as bar:

            def record(indices: list[int], answers: list[str]) -> None:
                writer.write(
                    Prediction(
                        id=todo[i].id,
                        prediction=answer,
                        shots=requests[i][0].shot_ids,
                        score=p.metric.score(answer, todo[i]),
                        dropped_shots=requests[i][1],
                    )
                    for i, answer in zip(indices, answers)
                )
                bar.update(len(indices))

            generate_all(generator, [r[0] for r in requests], [r[2] for r in requests], p.config.batch_size, record)
        return writer.finish(order)
    finally:
        writer.close()


def _aggregate_seeds(rows: list[Result]) -> Result:
    means = {name: statistics.fmean(r.metrics[name] for r in rows) for name in rows[0].metrics}
    stds = {name: statistics.stdev([r.metrics[name] for r in rows]) for name in rows[0].metrics}
    config = dict(rows[0].config)
    config["shots"] = dict(config["shots"], seeds=[r.seed for r in rows])
    return replace(rows[0], seed=None, metrics=means, metrics_std=stds, predictions=None, config=config,
                   num_truncated=max(r.num_truncated for r in rows))


def run(config: RunConfig) -> list[Result]:
    """Evaluate one task at every requested shot count; write predictions and results.json."""
    p = prepare(config)
    loaded = load_model(config.model or "demo", device=config.device, dtype=config.dtype,
                        demo_seed=config.demo_seed if config.demo else None)
    encoder = _encoder(config, loaded)
    generator = Generator(loaded, p.generation)
    seeds = config.seeds if config.selection == "random" else (None,)
    rows: list[Result] = []
    checked = False
    for seed in seeds:
        selector = build_selector(
            ShotSettings(config.selection, seed or 0), p.support, p.queries, max(config.shots), encoder,
            config.cache_dir, batch_size=config.batch_size * 4,
        )
        selection = selector.describe() | {"seed": seed}
        identity = _identity(p, loaded, selection)
        if not checked:
            _check_manifest(p, identity)
            checked = True
        for shots in sorted(config.shots):
            predictions = _evaluate_setting(p, loaded, generator, selector, shots, seed)
            rows.append(
                Result(
                    task=p.spec.name,
                    shots=shots,
                    selection=config.selection,
                    seed=seed,
                    metrics=p.metric.aggregate([pred.score for pred in predictions], p.queries.examples),
                    num_examples=len(predictions),
                    num_truncated=sum(pred.dropped_shots > 0 for pred in predictions),
                    predictions=str(prediction_file(Path("."), p.spec.name, shots, seed)),
                    config=identity | {"shots": selection, "limit": config.limit, "versions": package_versions(),
                                       "command": sys.argv},
                )
            )
    if config.selection == "random" and len(seeds) > 1:
        rows += [_aggregate_seeds([r for r in rows if r.shots == k]) for k in sorted(config.shots)]
    merge_results(config.output_dir / "results.json", rows)
    return rows
