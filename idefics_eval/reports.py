"""Reports: the tables printed for people (results summary, task list)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import yaml

from .results import Result, number_text


def summary_table(rows: Sequence[Result]) -> str:
    """One table per task, in the order the tasks ran: shots down, that task's own metrics across
    (tasks share no columns, so FairFace's group columns do not spill over VQA's table).
    Several seeds show mean ± std."""
    tables = []
    for task, records in summary_records(rows).items():
        tables.append(f"{task}\n{text_table(records)}")
    return "\n\n".join(tables)


def summary_records(rows: Sequence[Result]) -> dict[str, list[dict]]:
    """The summary's rows per task, in the order the tasks ran: shots, selection, counts, then the
    metrics formatted (the printed summary and the run viewer's overview show the same values)."""
    tasks = dict.fromkeys(row.task for row in rows)
    return {task: [_summary_record(row) for row in rows if row.task == task and not _stood_for(row, rows)]
            for task in tasks}


def _stood_for(row: Result, rows: Sequence[Result]) -> bool:
    """A random-selection seed row whose mean row (seed None, same task and shots) is shown instead."""
    return row.selection == "random" and row.seed is not None and any(
        r.seed is None and r.task == row.task and r.shots == row.shots for r in rows)


def _summary_record(row: Result) -> dict:
    record = {"shots": row.shots, "selection": row.selection, "n": row.num_examples, "truncated": row.num_truncated,
              "skipped": row.num_skipped}
    for name, value in row.metrics.items():
        std = (row.metrics_std or {}).get(name)
        record[name] = number_text(value) + (f" ± {number_text(std)}" if std is not None else "")
    return record


def format_metrics(metrics: dict[str, float]) -> str:
    return "\n".join(f"  {name}: {number_text(value)}" for name, value in metrics.items())


def task_table(tasks_dirs: tuple[Path, ...] = ()) -> str:
    from .tasks import parse_named_task, task_files

    records = []
    for name, path in task_files(tasks_dirs).items():
        spec = parse_named_task(path, name)  # what `run` would refuse is not listed as if it ran
        sources = [*spec.sources, *(["huggingface"] if spec.huggingface else [])]
        support = "none (zero-shot only)" if spec.zero_shot_only else (
            f"{spec.support_task}/{spec.support_split}" if spec.support_task else spec.support_split)
        records.append({"task": name, "request": spec.request, "metric": spec.metric, "support": support,
                        "query": spec.query_split, "submission": spec.submission or "-", "sources": ", ".join(sources),
                        "title": spec.title})
    from .tasks import task_groups

    groups = "\n".join(f"group {name}: {', '.join(members)}" for name, members in task_groups(tasks_dirs).items())
    return text_table(records) + ("\n\n" + groups if groups else "")


def text_table(records: Sequence[Mapping]) -> str:
    """Records as a plain-text table: a column per key (first-seen order), right-aligned, "-" where a
    record lacks the key (a metric only some rows have, e.g. a group absent at one shot count).

    Hand-written rather than pandas' `to_string`: importing pandas costs `tasks` and `score` about a
    second of start-up (benchmarks/startup.py), for a table of a few rows."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    cells = [[str(record.get(column, "-")) for column in columns] for record in records]
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join(" ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)


def task_definition(name: str, tasks_dirs: tuple[Path, ...] = (), prompts_dirs: tuple[Path, ...] = ()) -> str:
    """`tasks --show NAME`: the task's keys with every default filled in, the prompt file its `prompt`
    resolved to (through --prompts-dir and --tasks-dir, as a run finds it) and that template, as YAML."""
    from .prompts import parse_template, resolve_template
    from .tasks import STOP_WORDS, load_task

    spec = load_task(name, tasks_dirs)
    prompt_path = resolve_template(spec.prompt, prompts_dirs, f"{spec.path}: prompt {spec.prompt!r}", tasks_dirs=tasks_dirs)
    template = parse_template(prompt_path)
    task = {key: getattr(spec, key) for key in ("name", "version", "title", "request", "metric", "prompt",
                                                 "support_split", "query_split", "shot_answer", "support_task",
                                                 "zero_shot_only", "seed", "submission")}
    task["generation"] = {**asdict(spec.generation), "stop_words": spec.generation.stop_words or STOP_WORDS}
    if spec.candidates is not None:
        task["candidates"] = asdict(spec.candidates)
    task["sources"] = {**spec.sources, **({"huggingface": asdict(spec.huggingface)} if spec.huggingface else {})}
    document = {
        "task_file": str(spec.path), "task_digest": spec.digest, "task": task,
        "prompt_file": str(prompt_path), "prompt_digest": template.digest,
        "prompt": {"name": template.name, "version": template.version, "prefix": template.prefix, "example": template.example},
    }
    return yaml.dump(_plain(document), Dumper=_ReadableDumper, sort_keys=False, default_flow_style=None,
                     allow_unicode=True, width=100)


def _plain(value):
    """Mappings, tuples and config=None as the plain dicts and lists YAML writes."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class _ReadableDumper(yaml.SafeDumper):
    """Strings holding a line break are written double-quoted (`"...\\n"`), as the prompt files write them."""


_ReadableDumper.add_representer(str, lambda dumper, data: dumper.represent_scalar(
    "tag:yaml.org,2002:str", data, style='"' if "\n" in data else None))
