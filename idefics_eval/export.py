"""Leaderboard export: results folders -> the model card's table, or a long table with intervals.

Two layouts:

* `card`: the IDEFICS model card's evaluation table (see results/published/README.md): one row per
  model and shot count, the card's columns in the card's order and named as the card names them.
  Rows come from RICES shots (`--selection random` takes the mean over seeds). The markdown is the
  card as printed: "-" where a task was not run at that shot count, values with `decimals`
  decimals, Winoground as "group (text/image)". CSV and JSON are for programs: one raw number per
  cell, empty (null) where not run, Winoground's three scores in three columns.
  The card puts numbers side by side, so it refuses what would mislead there (comparability.py):
  a model's cells made with different settings or n, and partial cells (--limit, the bundled demo
  data, skipped queries) unless `allow_partial`, which marks them (PARTIAL_MARK and a footnote in
  markdown, the `Partial` column in CSV and JSON). Rows of a selection split (`--split selection`)
  never reach a cell: they chose the checkpoint, so their numbers are not held out.
* `long`: one row per model x task x shots x selection x seed x metric, with its split (`reporting`,
  or `selection (SIZE, seed SEED)`), the 95% bootstrap interval (idefics_eval/bootstrap.py), the number of queries, a hash of the row's configuration
  and why the row is partial (empty for a full run).

The model of a row is the name its results record (`config.model.name`); two different weights under
one name (same folder retrained) are told apart by their fingerprint, and a run given `--name` is
labelled "NAME (model)", so two named runs of one model are reported apart.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .comparability import PARTIAL_SETTINGS, differences, is_selection, partial, split_of
from .errors import UserError
from .results import Result, number_text, read_results


@dataclass(frozen=True)
class CardColumn:
    title: str  # exactly as the model card names the column
    task: str  # our task name
    metric: str  # our metric key


CARD_COLUMNS = (
    CardColumn("VQAv2 (OE VQA acc)", "vqav2", "vqa_accuracy"),
    CardColumn("OKVQA (OE VQA acc)", "okvqa", "vqa_accuracy"),
    CardColumn("TextVQA (OE VQA acc)", "textvqa", "textvqa_accuracy"),
    CardColumn("VizWiz (OE VQA acc)", "vizwiz", "vizwiz_accuracy"),
    CardColumn("TextCaps (CIDEr)", "textcaps", "cider"),
    CardColumn("Coco (CIDEr)", "coco", "cider"),
    CardColumn("NoCaps (CIDEr)", "nocaps", "cider"),
    CardColumn("Flickr (CIDEr)", "flickr30k", "cider"),
    CardColumn("ImageNet1k (accuracy)", "imagenet", "accuracy"),
    CardColumn("VisDial (NDCG)", "visdial", "ndcg"),
    CardColumn("HatefulMemes (ROC AUC)", "hatefulmemes", "roc_auc"),
    CardColumn("ScienceQA (accuracy)", "scienceqa", "accuracy"),
    CardColumn("RenderedSST2 (accuracy)", "renderedsst2", "accuracy"),
    CardColumn("Winoground (group (text/image))", "winoground", "group"),
)
CARD_HEADER = ("Model", "Shots", *(column.title for column in CARD_COLUMNS))
CARD_BY_TASK = {column.task: column for column in CARD_COLUMNS}
WINOGROUND_SCORES = ("group", "text", "image")
# CSV and JSON: one number per cell (so that pandas reads float columns), Winoground's scores apart.
NUMERIC_COLUMNS = tuple(
    part for column in CARD_COLUMNS
    for part in ([CardColumn(f"Winoground ({score} score)", column.task, score) for score in WINOGROUND_SCORES]
                 if column.task == "winoground" else [column])
)
PARTIAL_COLUMN = "Partial"  # CSV and JSON: the row's partial cells and why (--allow-partial), empty when none
NUMERIC_HEADER = ("Model", "Shots", *(column.title for column in NUMERIC_COLUMNS), PARTIAL_COLUMN)
NOT_RUN = "-"
PARTIAL_MARK = "†"  # markdown: after a partial cell's number, explained in a footnote under the table

LONG_HEADER = ("model", "task", "shots", "selection", "seed", "split", "metric", "value", "ci_low", "ci_high", "n", "std",
               "config_hash", "results", "partial")


def headline_metric(task: str, metrics: dict[str, float]) -> str:
    """The metric a task is reported by: the card's for the card's tasks, else the row's first."""
    column = CARD_BY_TASK.get(task)
    if column is not None and column.metric in metrics:
        return column.metric
    return next(iter(metrics))


def task_title(task: str) -> str:
    """The card's name of a task and its metric ("VQAv2 (OE VQA acc)"), or the task's own name."""
    column = CARD_BY_TASK.get(task)
    return column.title if column else task


@dataclass(frozen=True)
class Entry:
    """One results row, with the folder it came from and the label it is reported under (model, run name)."""

    model: str
    folder: Path
    row: Result


def load_entries(folders: Sequence[Path]) -> list[Entry]:
    """Every row of every folder's results.json, in the order given."""
    loaded: list[tuple[Path, Result]] = []
    for folder in folders:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise UserError(f"{folder} holds no results.json; give folders written by `idefics-eval run` or `sweep`")
        loaded += [(Path(folder), row) for row in read_results(path)]  # a damaged file: read_results' UserError
    if not loaded:
        raise UserError(f"no result rows in {', '.join(map(str, folders))}")
    # A test split's rows have no metric (its server scores them): nothing to tabulate, plot or compare.
    unscored = [row for _, row in loaded if "metric_skipped" in row.config]
    loaded = [(folder, row) for folder, row in loaded if "metric_skipped" not in row.config]
    if not loaded:
        raise UserError(f"{', '.join(map(str, folders))} holds only rows of test splits ({unscored[0].task}), which have no "
                        "metric here; write their server's file with `idefics-eval submission`")
    fingerprints: dict[str, set[str]] = {}
    for _, row in loaded:
        model = row.config.get("model", {})
        fingerprints.setdefault(model.get("name", "unknown"), set()).add(model.get("fingerprint", ""))
    entries = []
    for folder, row in loaded:
        model = row.config.get("model", {})
        name = model.get("name", "unknown")
        label = name if len(fingerprints[name]) == 1 else f"{name} @{model.get('fingerprint', '')[:8]}"
        entries.append(Entry(f"{row.run_name} ({label})" if row.run_name else label, folder, row))
    return entries


def config_hash(row: Result) -> str:
    """12 hex digits of the sha256 of the row's configuration (sorted-key JSON), without the command
    line that started it, so that the same configuration run from another folder hashes the same."""
    config = {key: value for key, value in row.config.items() if key != "command"}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def reported_entries(entries: Iterable[Entry], selection: str) -> dict[str, dict[tuple[str, int], Entry]]:
    """model -> (task, shots) -> the one entry reported for it: the seed-free row (RICES, or the mean
    over random seeds), else the only seed's row. Rows of a selection split (`--split selection`)
    are never reported: they chose the checkpoint or prompt, so their numbers are not held out."""
    table: dict[str, dict[tuple[str, int], Entry]] = {}
    candidates: dict[tuple[str, str, int], list[Entry]] = {}
    for entry in entries:
        if entry.row.selection == selection and not is_selection(entry.row):  # a selection split is never reported
            candidates.setdefault((entry.model, entry.row.task, entry.row.shots), []).append(entry)
    for (model, task, shots), found in candidates.items():
        folders = {e.folder for e in found}
        if len(folders) > 1:
            raise UserError(f"{model} {task} {shots}-shot is in several folders ({', '.join(sorted(map(str, folders)))}); "
                            "export one of them")
        seedless = [e for e in found if e.row.seed is None]
        if not seedless and len(found) > 1:
            raise UserError(f"{model} {task} {shots}-shot has {len(found)} random seeds in {found[0].folder} but no mean over them; "
                            "run the seeds in one command (--seeds 0,1,2) or use --layout long")
        table.setdefault(model, {})[(task, shots)] = (seedless or found)[0]
    return table


def _number(value: float | None, decimals: int) -> str:
    return NOT_RUN if value is None or math.isnan(value) else number_text(value, decimals)


def card_records(entries: Sequence[Entry], selection: str = "rices", decimals: int = 1, numbers: bool = False,
                 allow_partial: bool = False) -> list[dict]:
    """The card's rows: {column title: text}; with `numbers`, {NUMERIC_HEADER title: raw number,
    None where not run}. Each row's PARTIAL_COLUMN names its partial cells (None when there are none);
    in text, a partial cell's number carries PARTIAL_MARK."""
    records = []
    for model, cells in reported_entries(entries, selection).items():
        cells = {key: entry for key, entry in cells.items() if key[0] in CARD_BY_TASK}
        check_comparable(model, cells)
        partial_cells = {key: found for key, entry in cells.items() if (found := partial(entry.row))}
        if partial_cells and not allow_partial:
            (task, k), found = next(iter(partial_cells.items()))
            more = f" (and {len(partial_cells) - 1} more cells)" if len(partial_cells) > 1 else ""
            raise UserError(f"{model} {task} {k}-shot is partial ({found}){more}: the card is for full runs; rerun on the "
                            "full data (without --limit, with --data), or pass --allow-partial to export it marked")
        for k in sorted({k for (_, k) in cells}):
            record: dict = {"Model": model, "Shots": k}
            for column in NUMERIC_COLUMNS if numbers else CARD_COLUMNS:
                entry = cells.get((column.task, k))
                metrics = entry.row.metrics if entry else {}
                mark = PARTIAL_MARK if (column.task, k) in partial_cells else ""
                record[column.title] = metrics.get(column.metric) if numbers else _card_text(column, metrics, decimals) + mark
            marked = [f"{task} ({found})" for (task, shots), found in partial_cells.items() if shots == k]
            record[PARTIAL_COLUMN] = "; ".join(marked) or None
            records.append(record)
    if not records:
        raise _nothing_for_the_card(entries, selection)
    return records


def check_comparable(model: str, cells: dict[tuple[str, int], Entry]) -> None:
    """One model's card cells were made alike: every cell of a task with the same settings and n as
    the task's first, and every cell with the run-wide settings of the model's first (dtype, data,
    encoder, ...). Partial cells are not a mix (they are refused or marked instead)."""
    first_of_task: dict[str, Entry] = {}
    for (task, shots), entry in sorted(cells.items(), key=lambda item: item[0][1]):
        for other in (first_of_task.setdefault(task, entry), next(iter(first_of_task.values()))):
            found = differences(other.row, entry.row, ignore=PARTIAL_SETTINGS)
            if found:
                raise UserError(f"{model}: {other.row.task} {other.row.shots}-shot and {task} {shots}-shot differ in "
                                f"{', '.join(found)}, so the card would mix them; rerun them with the same settings, or "
                                "use --layout long (a line per row, with its n and config hash)")


def _nothing_for_the_card(entries: Sequence[Entry], selection: str) -> UserError:
    card_tasks = sorted({e.row.task for e in entries if e.row.task in CARD_BY_TASK})
    if card_tasks and all(is_selection(e.row) for e in entries if e.row.task in CARD_BY_TASK):
        return UserError(f"the card's tasks here ({', '.join(card_tasks)}) have selection-split rows only (--split selection: "
                         "queries held out of train for choosing checkpoints and prompts), which the card never reports; "
                         "run the chosen checkpoint on the reporting split (--split reporting) and export that")
    others = sorted({e.row.selection for e in entries if e.row.task in CARD_BY_TASK} - {selection})
    if card_tasks and others:
        return UserError(f"the card's tasks here ({', '.join(card_tasks)}) have --selection {others[0]} rows only, and the card "
                         f"layout reports --selection {selection} rows; export with --selection {others[0]}")
    tasks = sorted({e.row.task for e in entries})
    return UserError(f"none of the tasks run ({', '.join(tasks)}) is a column of the model card; use --layout long")


def _card_text(column: CardColumn, metrics: dict[str, float], decimals: int) -> str:
    if column.metric not in metrics:
        return NOT_RUN
    if column.task == "winoground":
        group, text, image = (_number(metrics.get(score), decimals) for score in WINOGROUND_SCORES)
        return f"{group} ({text}/{image})"
    return _number(metrics[column.metric], decimals)


def _footnotes(records: Sequence[dict]) -> str:
    """The markdown's explanation of its PARTIAL_MARKs: a line per card row with partial cells."""
    lines = [f"{PARTIAL_MARK} partial, not comparable with full runs: {r['Model']} {r['Shots']}-shot {r[PARTIAL_COLUMN]}"
             for r in records if r[PARTIAL_COLUMN]]
    return "".join(f"\n{line}" for line in lines) + ("\n" if lines else "")


def long_records(entries: Sequence[Entry], intervals: bool = True, resamples: int = 1000, seed: int = 0,
                 tasks_dirs: tuple[Path, ...] = ()) -> list[dict]:
    """One record per model x task x shots x selection x seed x metric, with the bootstrap interval
    (empty for means over seeds, which have their `std` over seeds instead, and with `intervals` off)."""
    from .bootstrap import QueryData

    data = QueryData(tasks_dirs)
    records = []
    for entry in entries:
        row = entry.row
        found = data.intervals(row, entry.folder, resamples, seed) if intervals and row.predictions else {}
        found_partial = partial(row)
        for name, value in row.metrics.items():
            interval = found.get(name)
            records.append({
                "model": entry.model, "task": row.task, "shots": row.shots, "selection": row.selection,
                "seed": row.seed, "split": split_of(row), "metric": name, "value": value,
                "ci_low": interval.low if interval else None, "ci_high": interval.high if interval else None,
                "n": row.num_examples, "std": (row.metrics_std or {}).get(name),
                "config_hash": config_hash(row), "results": str(entry.folder), "partial": str(found_partial) if found_partial else None,
            })
    return records


def to_csv(records: Sequence[dict], header: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _plain(record.get(key)) for key in header})
    return buffer.getvalue()


def _plain(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def to_markdown(records: Sequence[dict], header: Sequence[str], left: Sequence[str] = (), blank_repeats: Sequence[str] = (),
                decimals: int | None = None) -> str:
    """A pipe table: columns in `left` left-aligned, the others right-aligned (as the card's); a value
    of a `blank_repeats` column equal to the one above is left blank (the card names each model once)."""
    def cell(value) -> str:
        if decimals is not None and isinstance(value, float):
            return _number(value, decimals)
        return _plain(value).replace("|", "\\|")

    rows, previous = [], {}
    for record in records:
        cells = []
        for key in header:
            text = cell(record.get(key))
            cells.append("" if key in blank_repeats and previous.get(key) == text else text)
            previous[key] = text
        rows.append(cells)
    widths = [max([len(name), 3, *(len(r[i]) for r in rows)]) for i, name in enumerate(header)]
    rule = [":" + "-" * (w + 1) if name in left else "-" * (w + 1) + ":" for name, w in zip(header, widths)]
    lines = ["| " + " | ".join(name.ljust(w) for name, w in zip(header, widths)) + " |", "|" + "|".join(rule) + "|"]
    for cells in rows:
        lines.append("| " + " | ".join(c.ljust(w) if name in left else c.rjust(w) for c, name, w in zip(cells, header, widths)) + " |")
    return "\n".join(lines) + "\n"


def to_json(records: Sequence[dict]) -> str:
    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return json.dumps([{k: clean(v) for k, v in record.items()} for record in records], indent=2, ensure_ascii=False) + "\n"


def export(folders: Sequence[Path], fmt: str, layout: str = "card", selection: str = "rices", decimals: int = 1,
           intervals: bool = True, resamples: int = 1000, seed: int = 0, tasks_dirs: tuple[Path, ...] = (),
           allow_partial: bool = False) -> str:
    """The text of the exported table."""
    entries = load_entries(folders)
    if layout == "card":
        records = card_records(entries, selection, decimals, numbers=fmt in ("json", "csv"), allow_partial=allow_partial)
        if fmt == "json":
            return to_json(records)
        if fmt == "csv":
            return to_csv(records, NUMERIC_HEADER)
        return to_markdown(records, CARD_HEADER, left=("Model",), blank_repeats=("Model",)) + _footnotes(records)
    records = long_records(entries, intervals, resamples, seed, tasks_dirs)
    if fmt == "json":
        return to_json(records)
    if fmt == "csv":
        return to_csv(records, LONG_HEADER)
    return to_markdown(records, LONG_HEADER, left=("model", "task", "selection", "split", "metric", "config_hash", "results"),
                       decimals=2)
