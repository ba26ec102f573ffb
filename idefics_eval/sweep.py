"""Checkpoint sweeps: every checkpoint x task x shot count, a table, the best checkpoint, a plot.

Each checkpoint is loaded once and evaluated on every task through the runner, into its own results
folder `OUTPUT/<checkpoint folder name>/`, so a rerun resumes cell by cell exactly as `run` does (a
finished cell is read back, a killed one continues from its partial predictions). Checkpoints are
ordered by the training step in their names (`step-65000`, `checkpoint-37500`, `global_step1200`,
`65000`); those without one come after, by name.

Selection: `--select-by METRIC` takes the mean of that metric key over the sweep's cells (tasks x
shots) that report it, `--select-by TASK:METRIC` one task's; `mean-normalised` (the default) takes,
for each task and shot count, the task's headline metric divided by the best checkpoint's value in
that cell (so the best checkpoint there scores 1.0), averages over shot counts, then over tasks:
every task weighs the same whatever its scale (CIDEr near 100, accuracies near 50), and a task on
which the checkpoints barely differ cannot swing the choice (as it could after min-max scaling).
Ties go to the earlier checkpoint. Checkpoints are compared on each task's selection split (`--split
selection`, the default: queries held out of train, disjoint from the support set and the reporting
split; idefics_eval/splits.py), so that the checkpoint chosen was never scored on the numbers it is
then reported with; `--split reporting` compares them on the reporting split instead.

A checkpoint that cannot be evaluated (its files are corrupt, its config is of another architecture,
its results folder is damaged) is recorded as failed, with the reason, in the table, sweep.csv and
sweep.json, and the sweep goes on with the others; the best checkpoint is chosen among those that
finished. Nothing marks a failed checkpoint as done, so a rerun tries it again and resumes the rest.
"""

from __future__ import annotations

import csv
import gc
import glob
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UserError
from .export import headline_metric
from .results import Result, atomic_file, number_text, write_json_atomic

MEAN_NORMALISED = "mean-normalised"
STEP = re.compile(r"(?:global_step|step|checkpoint|ckpt|iteration|iter)[-_]?(\d+)", re.IGNORECASE)
TABLE_HEADER = ("checkpoint", "step", "task", "shots", "metric", "value", "n", "results", "error")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    name: str
    step: int | None


def training_step(name: str) -> int | None:
    """The step a checkpoint folder's name carries: step-65000, checkpoint-37500, global_step1200, 65000."""
    if name.isdigit():
        return int(name)
    found = STEP.findall(name)
    return int(found[-1]) if found else None


def find_checkpoints(pattern: str) -> list[Checkpoint]:
    """Checkpoint folders (holding config.json) matching a glob pattern, in training order."""
    matches = [Path(p) for p in sorted(glob.glob(str(Path(pattern).expanduser())))]
    found = [Checkpoint(p, p.name, training_step(p.name)) for p in matches if (p / "config.json").is_file()]
    if not found:
        skipped = f" ({len(matches)} matches, none holding config.json)" if matches else ""
        raise UserError(f"--checkpoints {pattern!r} matches no checkpoint folder{skipped}; quote the pattern, e.g. 'ckpts/step-*'")
    names = [c.name for c in found]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"several checkpoints are named {repeated[0]}; their results folders would collide, sweep them separately")
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.name))


@dataclass(frozen=True)
class SweepConfig:
    checkpoints: str
    tasks: tuple[str, ...]
    shots: tuple[int, ...]
    output_dir: Path
    limit: int | None = None
    data: Mapping[str, str] = field(default_factory=dict)  # task -> --data value
    support_data: Mapping[str, str] = field(default_factory=dict)
    demo_data: bool = False
    select_by: str = MEAN_NORMALISED
    selection: str = "rices"  # as run's --selection, --seeds and --rices-encoder
    seeds: tuple[int, ...] = (0,)
    rices_encoder: str | None = None  # None: the protocol's, else the model's vision tower
    protocol: str = "default"
    split: str = "selection"  # the queries checkpoints are compared on: "selection" or "reporting" (run's --split)
    zero_shot: str | None = None  # as run's --zero-shot: None, the protocol's style
    batch_size: int | str = 8  # or "auto"
    num_beams: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None
    device: str | None = None
    dtype: str | None = None
    cache_dir: Path | None = None
    tasks_dirs: tuple[Path, ...] = ()
    prompts_dirs: tuple[Path, ...] = ()
    overwrite: bool = False
    progress: bool = True
    run_name: str | None = None  # --name, recorded in every checkpoint's rows
    log_samples: bool = True
    threads: int | None = None  # --threads: torch's CPU threads while checkpoints are evaluated (distributed.torch_threads)


@dataclass
class SweepResult:
    checkpoints: list[Checkpoint]
    table: list[dict]  # one record per checkpoint x task x shots x metric
    scores: dict[str, float]  # checkpoint name -> selection score, for those that finished
    best: Checkpoint | None  # None when every checkpoint failed
    files: list[Path]
    failed: dict[str, str] = field(default_factory=dict)  # checkpoint name -> why it could not be evaluated


def _run_config(config: SweepConfig, checkpoint: Checkpoint, task: str):
    from .plan import RunConfig, with_bundled_data

    run_config = RunConfig(
        task=task, shots=config.shots, output_dir=config.output_dir / checkpoint.name, model=str(checkpoint.path),
        data=config.data.get(task), support_data=config.support_data.get(task), selection=config.selection, seeds=config.seeds,
        rices_encoder=config.rices_encoder, protocol=config.protocol, split=config.split, zero_shot=config.zero_shot, limit=config.limit, batch_size=config.batch_size, device=config.device,
        dtype=config.dtype, num_beams=config.num_beams, max_new_tokens=config.max_new_tokens, max_length=config.max_length,
        cache_dir=config.cache_dir, tasks_dirs=config.tasks_dirs, prompts_dirs=config.prompts_dirs, overwrite=config.overwrite,
        progress=config.progress, run_name=config.run_name, log_samples=config.log_samples)
    return with_bundled_data(run_config) if config.demo_data else run_config


def split_line(split: str) -> str:
    """The line a sweep starts with: which queries it compares the checkpoints on."""
    if split == "selection":
        return ("sweep: checkpoints are compared on each task's selection split, held out of train (apart from the "
                "support set and the reporting split); --split reporting compares them on the reporting split")
    return "sweep: checkpoints are compared on each task's reporting split (--split reporting), the split results are reported on"


def _refuse_test_split(task: str, tasks_dirs: tuple[Path, ...]) -> None:
    from .tasks import load_task

    if load_task(task, tasks_dirs).submission is not None:
        raise UserError(f"task {task}: a test split, scored only by its evaluation server, cannot select a checkpoint; "
                        "sweep on validation tasks and run the chosen checkpoint on the test split")


def run_sweep(config: SweepConfig) -> SweepResult:
    """Evaluate every cell (resuming finished ones), then write sweep.csv, sweep.json and sweep.png."""
    from .console import quiet_libraries
    from .plan import prepare

    if not config.tasks:
        raise UserError("--task is empty; give task names like vqav2,okvqa or a group")
    checkpoints = find_checkpoints(config.checkpoints)
    _check_select_by(config.select_by, config.tasks)
    with quiet_libraries(not config.progress):
        for task in config.tasks:  # every task's data and settings checked before the first load; the
            # checkpoints and their folders are each checked in their turn, so that one bad one fails alone
            _refuse_test_split(task, config.tasks_dirs)
            prepare(replace(_run_config(config, checkpoints[0], task), model=None, output_dir=config.output_dir), preloaded=True)
    from .distributed import torch_threads  # torch: once the sweep's arguments are checked

    rows: dict[str, list[Result]] = {}
    failed: dict[str, str] = {}
    with torch_threads(config.threads):
        for checkpoint in checkpoints:
            outcome = _evaluate_checkpoint(config, checkpoint)
            if isinstance(outcome, str):
                failed[checkpoint.name] = outcome
            else:
                rows[checkpoint.name] = outcome
            _free_memory()
    finished = [c for c in checkpoints if c.name in rows]
    table = sweep_table(finished, rows, config.output_dir)
    table_file = write_table(table, failed, checkpoints, config.output_dir / "sweep.csv")  # first: a bad --select-by loses nothing
    scores = selection_scores(table, config.select_by) if finished else {}
    best = max(finished, key=lambda c: (scores[c.name], -finished.index(c))) if finished else None
    files = [table_file, *write_selection(config, checkpoints, table, scores, best, failed)]
    return SweepResult(checkpoints, table, scores, best, files, failed)


def _evaluate_checkpoint(config: SweepConfig, checkpoint: Checkpoint) -> list[Result] | str:
    """The checkpoint's rows on every task, or one line saying why it could not be evaluated."""
    from .models import load_model
    from .runner import run

    try:
        loaded = load_model(str(checkpoint.path), device=config.device, dtype=config.dtype, progress=config.progress)
    except Exception as error:  # noqa: BLE001  (whatever breaks while reading this checkpoint's files is its own fault)
        return _reason(error)
    try:
        return [row for task in config.tasks for row in run(_run_config(config, checkpoint, task), loaded=loaded)]
    except UserError as error:  # e.g. its results folder is damaged; an internal error still stops the sweep
        return _reason(error)


def _reason(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    return first if isinstance(error, UserError) else f"{type(error).__name__}: {first}".rstrip(": ")


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_select_by(select_by: str, tasks: Sequence[str]) -> None:
    task, _, metric = select_by.rpartition(":")
    if select_by != MEAN_NORMALISED and task and task not in tasks:
        raise UserError(f"--select-by {select_by}: task {task} is not among --task ({', '.join(tasks)})")
    if not metric:
        raise UserError(f"--select-by {select_by!r}: give {MEAN_NORMALISED}, a metric key (vqa_accuracy) or TASK:METRIC")


def sweep_table(checkpoints: Sequence[Checkpoint], rows: Mapping[str, Sequence[Result]], output_dir: Path) -> list[dict]:
    table = []
    for checkpoint in checkpoints:
        for row in rows[checkpoint.name]:
            for name, value in row.metrics.items():
                table.append({"checkpoint": checkpoint.name, "step": checkpoint.step, "task": row.task, "shots": row.shots,
                              "metric": name, "value": value, "n": row.num_examples,
                              "results": str(output_dir / checkpoint.name)})
    return table


def headline_cells(table: Sequence[dict]) -> dict[tuple[str, int], dict[str, float]]:
    """(task, shots) -> checkpoint -> the task's headline metric."""
    by_task: dict[str, dict[str, float]] = {}
    for record in table:
        by_task.setdefault(record["task"], {})[record["metric"]] = record["value"]
    headline = {task: headline_metric(task, metrics) for task, metrics in by_task.items()}
    cells: dict[tuple[str, int], dict[str, float]] = {}
    for record in table:
        if record["metric"] == headline[record["task"]]:
            cells.setdefault((record["task"], record["shots"]), {})[record["checkpoint"]] = record["value"]
    return cells


def selection_scores(table: Sequence[dict], select_by: str = MEAN_NORMALISED) -> dict[str, float]:
    """Checkpoint -> its selection score (higher is better); see the module docstring."""
    checkpoints = list(dict.fromkeys(record["checkpoint"] for record in table))
    if select_by == MEAN_NORMALISED:
        per_task: dict[str, dict[str, list[float]]] = {}
        for (task, _), values in headline_cells(table).items():
            best = max(values.values())
            for checkpoint, value in values.items():
                normalised = value / best if best > 0 else 1.0  # all zero: the cell tells the checkpoints apart nowhere
                per_task.setdefault(task, {}).setdefault(checkpoint, []).append(normalised)
        return {c: _mean([_mean(per_task[task].get(c, [math.nan])) for task in per_task]) for c in checkpoints}
    task, _, metric = select_by.rpartition(":")
    chosen = [r for r in table if r["metric"] == metric and (not task or r["task"] == task)]
    if not chosen:
        known = sorted({f"{r['task']}:{r['metric']}" for r in table})
        raise UserError(f"--select-by {select_by}: no such metric in the sweep (known: {', '.join(known[:12])}); the table "
                        "is in sweep.csv, and a rerun with another --select-by reuses every finished cell")
    return {c: _mean([r["value"] for r in chosen if r["checkpoint"] == c]) for c in checkpoints}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values and not any(math.isnan(v) for v in values) else -math.inf


def write_table(table: Sequence[dict], failed: Mapping[str, str], checkpoints: Sequence[Checkpoint], path: Path) -> Path:
    """sweep.csv: the metric records, and one line with its reason for each failed checkpoint, in checkpoint order."""
    order = {c.name: index for index, c in enumerate(checkpoints)}
    failures = [{"checkpoint": c.name, "step": c.step, "error": failed[c.name]} for c in checkpoints if c.name in failed]
    records = sorted([*table, *failures], key=lambda record: order[record["checkpoint"]])  # stable: cells keep their order
    with atomic_file(path, newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLE_HEADER), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: "" if record.get(key) is None else record[key] for key in TABLE_HEADER} for record in records)
    return path


def write_selection(config: SweepConfig, checkpoints: Sequence[Checkpoint], table: Sequence[dict], scores: Mapping[str, float],
                    best: Checkpoint | None, failed: Mapping[str, str]) -> list[Path]:
    """sweep.json (every checkpoint's selection score or why it failed, the best one) and sweep.png
    (only when a checkpoint finished: there is nothing to plot otherwise)."""
    out = config.output_dir

    def entry(c: Checkpoint) -> dict:
        return {"checkpoint": c.name, "path": str(c.path), "step": c.step, "score": scores.get(c.name)} | (
            {"error": failed[c.name]} if c.name in failed else {})

    summary = {
        "select_by": config.select_by,
        "best": None if best is None else entry(best),
        "checkpoints": [entry(c) for c in checkpoints],
        "failed": [entry(c) for c in checkpoints if c.name in failed],
        "tasks": list(config.tasks), "shots": list(config.shots), "limit": config.limit, "split": config.split,
    }
    json_path = out / "sweep.json"
    write_json_atomic(json_path, summary)
    if best is None:
        (out / "sweep.png").unlink(missing_ok=True)  # an earlier sweep's plot would show checkpoints that now fail
        return [json_path]
    finished = [c for c in checkpoints if c.name not in failed]
    return [json_path, plot_sweep(finished, table, scores, best, config.select_by, out / "sweep.png")]


def plot_sweep(checkpoints: Sequence[Checkpoint], table: Sequence[dict], scores: Mapping[str, float], best: Checkpoint,
               select_by: str, path: Path) -> Path:
    from .plots import Series, save, sweep_figure

    steps = all(c.step is not None for c in checkpoints)
    x_of = {c.name: (c.step if steps else c.name) for c in checkpoints}
    cells = headline_cells(table)
    metrics = {task: headline_metric(task, {r["metric"]: 0 for r in table if r["task"] == task}) for (task, _) in cells}
    series = []
    for (task, shots), values in sorted(cells.items(), key=lambda item: (item[0][1], item[0][0])):
        ordered = [c.name for c in checkpoints if c.name in values]
        series.append(Series(f"{shots}-shot", task, [x_of[n] for n in ordered], [values[n] for n in ordered]))
    selection = Series(select_by, "", [x_of[c.name] for c in checkpoints], [scores[c.name] for c in checkpoints])
    return save(sweep_figure(series, metrics, x_of[best.name], best.name, steps, selection), path)


def summary_lines(result: SweepResult, select_by: str) -> list[str]:
    """The checkpoints' headline metrics by task and shots, their selection score, and the best one."""
    import pandas as pd

    cells = headline_cells(result.table)
    records = []
    for checkpoint in result.checkpoints:
        record = {"checkpoint": checkpoint.name, "step": "" if checkpoint.step is None else checkpoint.step}
        for (task, shots), values in sorted(cells.items()):
            record[f"{task} {shots}-shot"] = number_text(values[checkpoint.name]) if checkpoint.name in values else "-"
        score = result.scores.get(checkpoint.name)
        record[select_by] = "failed" if score is None else f"{score:.4f}"
        if result.failed:
            record["error"] = result.failed.get(checkpoint.name, "")
        records.append(record)
    width = max((len(reason) for reason in result.failed.values()), default=0)
    left = {"error": lambda reason: reason.ljust(width)}  # reasons read from their start
    table = pd.DataFrame.from_records(records).to_string(index=False, formatters=left if result.failed else None)
    return [table, "", _best_line(result, select_by), *(f"wrote {path}" for path in result.files)]


def _best_line(result: SweepResult, select_by: str) -> str:
    best = result.best
    if best is None:
        return f"no checkpoint finished: all {len(result.checkpoints)} failed (reasons above); fix them and rerun the same command"
    line = f"best checkpoint by {select_by}: {best.name}" + (f" (step {best.step})" if best.step is not None else "")
    line += f", score {result.scores[best.name]:.4f}"
    if result.failed:
        line += f", among the {len(result.checkpoints) - len(result.failed)} that finished ({len(result.failed)} failed)"
    return line


def parse_task_values(values: Sequence[str], tasks: Sequence[str], flag: str) -> dict[str, str]:
    """--data TASK=PATH (one task) or --data PATH (every task) -> task -> value."""
    found: dict[str, str] = {}
    every: list[str] = []
    for value in values:
        task, sep, rest = value.partition("=")
        if sep and task in tasks:
            found[task] = rest
        elif sep and re.fullmatch(r"[a-z0-9_]+", task):
            raise UserError(f"{flag} {value}: {task} is not among --task ({', '.join(tasks)})")
        else:
            every.append(value)
    if len(every) > 1:
        raise UserError(f"{flag} given {len(every)} times without TASK=; give one folder for every task or TASK=PATH each")
    return {task: found.get(task, every[0] if every else None) for task in tasks if task in found or every}
