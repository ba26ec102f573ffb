"""Comparison: two runs on the same queries (paired bootstrap), or one run against the model card.

`compare_runs(A, B)` pairs the rows of two results folders by task and shots (same selection and
seed first; else across selections, RICES against each random seed), keeps the queries both answered
(same data: the recorded query fingerprints must agree), and gives B - A per metric with the 95%
paired bootstrap interval (idefics_eval/bootstrap.py): both runs recomputed on the same resampled
queries. An interval that excludes 0 says the difference is larger than the query sampling noise of
this test set; it says nothing about other sources of variation (prompt, shot selection seed). Every
setting in which the paired rows differ is listed with the numbers (idefics_eval/comparability.py).

`compare_reference(RUN, "idefics-9b")` puts a run's reported numbers next to the published ones
(results/published/idefics_model_card.csv) with run - published and the run's own interval, and
warns when the run's rows are partial (`--limit`, the bundled demo data): the card scored full splits.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .bootstrap import DEFAULT_RESAMPLES, QueryData, paired_intervals
from .comparability import differences, partial
from .errors import UserError
from .export import Entry, headline_metric, load_entries, reported_entries

REFERENCES = {"idefics-9b", "idefics-80b"}
PAIRED_HEADER = ("task", "shots", "selection", "seed", "metric", "A", "B", "B - A", "ci_low", "ci_high", "n", "excludes 0")
REFERENCE_HEADER = ("model", "task", "shots", "metric", "run", "ci_low", "ci_high", "published", "run - published")


def published_file() -> Path:
    """results/published/idefics_model_card.csv: inside the installed package, or in a checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "builtin_published" / "idefics_model_card.csv"
    return installed if installed.is_file() else package.parent / "results" / "published" / "idefics_model_card.csv"


def published(reference: str) -> dict[tuple[str, int, str], float]:
    """(task, shots, metric) -> the model card's value for `reference` (idefics-9b or idefics-80b)."""
    if reference not in REFERENCES:
        raise UserError(f"unknown reference {reference!r}; use one of {', '.join(sorted(REFERENCES))}")
    with open(published_file(), encoding="utf-8") as handle:
        return {(line["task"], int(line["shots"]), line["metric"]): float(line["value"])
                for line in csv.DictReader(handle) if line["model"] == reference}


@dataclass
class Comparison:
    """What `compare` prints: its records, and the lines about them."""

    records: list[dict]
    notes: list[str] = field(default_factory=list)  # rows that could not be paired, cells the card lacks
    differences: list[str] = field(default_factory=list)  # settings that differ between the runs ("num_beams 1 vs 3")
    warning: str | None = None  # --reference: the run scored fewer queries than the card's full splits
    names: tuple[str | None, ...] = ()  # the --name of each run compared (None: unnamed)


def _single(entries: list[Entry], folder: Path) -> dict[tuple[str, int], list[Entry]]:
    """(task, shots) -> the rows with predictions (means over seeds have no queries to pair)."""
    rows: dict[tuple[str, int], list[Entry]] = {}
    for entry in entries:
        if entry.row.predictions is not None:
            rows.setdefault((entry.row.task, entry.row.shots), []).append(entry)
    if not rows:
        raise UserError(f"{folder} has no rows with predictions to compare")
    return rows


def _pairs(found_a: list[Entry], found_b: list[Entry]) -> tuple[list[tuple[Entry, Entry]], list[Entry]]:
    """The rows of one task and shot count paired: same selection and seed first; what is left pairs
    across selections or seeds when one side has a single row (RICES against each random seed);
    returns (pairs, unpaired rows)."""
    keys_b = {e.row.key: e for e in found_b}
    pairs = [(a, keys_b[a.row.key]) for a in found_a if a.row.key in keys_b]
    left_a = [a for a in found_a if a.row.key not in keys_b]
    left_b = [b for b in found_b if b.row.key not in {a.row.key for a in found_a}]
    if left_a and left_b and min(len(left_a), len(left_b)) == 1:
        return pairs + [(a, b) for a in left_a for b in left_b], []
    return pairs, left_a + left_b


def _either(a, b):
    """One value where both rows agree, "A vs B" where they differ (the selection or seed of a pair)."""
    return a if a == b else f"{'-' if a is None else a} vs {'-' if b is None else b}"


def _listed(found: dict[str, list[str]], tasks: list[str]) -> list[str]:
    """Each difference once, with the tasks it holds for when it does not hold for all of them."""
    every = set(tasks)
    return [text if set(where) == every else f"{text} ({', '.join(dict.fromkeys(where))})" for text, where in found.items()]


def compare_runs(folder_a: Path, folder_b: Path, all_metrics: bool = False, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, tasks_dirs: tuple[Path, ...] = ()) -> Comparison:
    """B - A per task, shots and metric, the settings in which the paired rows differ, and notes on
    rows that could not be paired."""
    rows_a = _single(load_entries([folder_a]), folder_a)
    rows_b = _single(load_entries([folder_b]), folder_b)
    data = QueryData(tasks_dirs)
    records, notes, found, tasks = [], [], {}, []
    for task, shots in sorted(set(rows_a) | set(rows_b)):
        pairs, unpaired = _pairs(rows_a.get((task, shots), []), rows_b.get((task, shots), []))
        for entry in unpaired:
            notes.append(f"{task} {shots}-shot ({entry.row.selection}{_seed(entry.row.seed)}) is only in {entry.folder}")
        for a, b in pairs:
            fingerprints = [e.row.config.get("data", {}).get("query_fingerprint") for e in (a, b)]
            if fingerprints[0] != fingerprints[1]:
                notes.append(f"{task} {shots}-shot: the runs used different query data ({fingerprints[0]} vs {fingerprints[1]}); not paired")
                continue
            tasks.append(task)
            for text in differences(a.row, b.row):
                found.setdefault(text, []).append(task)
            records += _paired_records(a, b, data, all_metrics, resamples, seed)
    if not records:
        raise UserError(f"{folder_a} and {folder_b} have no task and shot count in common to compare")
    return Comparison(records, notes, _listed(found, tasks), names=(_run_name(rows_a), _run_name(rows_b)))


def _run_name(rows: dict[tuple[str, int], list[Entry]]) -> str | None:
    """The run's --name; the names joined when the folder holds rows of several named runs."""
    names = sorted({entry.row.run_name for found in rows.values() for entry in found if entry.row.run_name})
    return ", ".join(names) or None


def _seed(seed: int | None) -> str:
    return "" if seed is None else f" seed {seed}"


def _paired_records(a: Entry, b: Entry, data: QueryData, all_metrics: bool, resamples: int, seed: int) -> list[dict]:
    """B - A of one pair of rows, on the queries both answered, per metric."""
    scored_a, scored_b = data.scored(a.row, a.folder), data.scored(b.row, b.folder)
    common = min(len(scored_a.examples), len(scored_b.examples))  # both are prefixes of the same split
    examples = scored_a.examples[:common]
    predictions_a, predictions_b = scored_a.predictions[:common], scored_b.predictions[:common]
    values_a = scored_a.metric.aggregate(predictions_a, examples)
    values_b = scored_b.metric.aggregate(predictions_b, examples)
    found = paired_intervals(scored_a.metric, predictions_a, predictions_b, examples, resamples, seed)
    names = list(values_a) if all_metrics else [headline_metric(a.row.task, values_a)]
    records = []
    for name in names:
        interval = found.get(name)
        records.append({
            "task": a.row.task, "shots": a.row.shots, "selection": _either(a.row.selection, b.row.selection),
            "seed": _either(a.row.seed, b.row.seed), "metric": name,
            "A": values_a[name], "B": values_b[name], "B - A": values_b[name] - values_a[name],
            "ci_low": interval.low if interval else None, "ci_high": interval.high if interval else None,
            "n": common, "excludes 0": ("yes" if interval.excludes_zero() else "no") if interval else "",
        })
    return records


def compare_reference(folder: Path, reference: str, intervals: bool = True, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0, tasks_dirs: tuple[Path, ...] = ()) -> Comparison:
    """The run next to the published numbers, notes on what the card does not cover, and a warning
    when rows scored fewer queries than the card's full splits."""
    card = published(reference)
    data = QueryData(tasks_dirs)
    records, notes, partial_rows = [], [], []
    for model, cells in reported_entries(load_entries([folder]), "rices").items():
        for (task, shots), entry in sorted(cells.items()):
            metrics = entry.row.metrics
            names = [name for name in metrics if (task, shots, name) in card]
            if not names:
                notes.append(f"{task} {shots}-shot: the model card has no {reference} number for it")
                continue
            if (found_partial := partial(entry.row)) is not None:
                partial_rows.append(f"{task} {shots}-shot {found_partial}")
            found = data.intervals(entry.row, entry.folder, resamples, seed) if intervals and entry.row.predictions else {}
            for name in names:
                interval = found.get(name)
                records.append({
                    "model": model, "task": task, "shots": shots, "metric": name, "run": metrics[name],
                    "ci_low": interval.low if interval else None, "ci_high": interval.high if interval else None,
                    "published": card[(task, shots, name)], "run - published": metrics[name] - card[(task, shots, name)],
                })
    if not records:
        raise UserError(f"nothing in {folder} (RICES rows) has a {reference} number in the model card")
    return Comparison(records, notes, warning=_below_reference(partial_rows, reference))


def _below_reference(partial_rows: list[str], reference: str) -> str | None:
    if not partial_rows:
        return None
    return (f"n below the model card's (it scored whole splits of the real data): {'; '.join(partial_rows)}; "
            f"these numbers are not comparable with {reference}'s, rerun on the full data before reading the deltas")
