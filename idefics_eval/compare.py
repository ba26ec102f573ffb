"""Comparison: two runs on the same queries (paired bootstrap), or one run against the model card.

`compare_runs(A, B)` pairs the rows of two results folders by task, shots, selection and seed, keeps
the queries both answered (same data: the recorded query fingerprints must agree), and gives B - A
per metric with the 95% paired bootstrap interval (idefics_eval/bootstrap.py): both runs recomputed on
the same resampled queries. An interval that excludes 0 says the difference is larger than the
query sampling noise of this test set; it says nothing about other sources of variation (prompt,
shot selection seed).

`compare_reference(RUN, "idefics-9b")` puts a run's reported numbers next to the published ones
(results/published/idefics_model_card.csv) with run - published and the run's own interval.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .bootstrap import DEFAULT_RESAMPLES, QueryData, paired_intervals
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


def _single(entries: list[Entry], folder: Path) -> dict[tuple, Entry]:
    rows = {}
    for entry in entries:
        if entry.row.predictions is not None:  # means over seeds have no queries to pair
            rows[entry.row.key] = entry
    if not rows:
        raise UserError(f"{folder} has no rows with predictions to compare")
    return rows


def compare_runs(folder_a: Path, folder_b: Path, all_metrics: bool = False, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, tasks_dirs: tuple[Path, ...] = ()) -> tuple[list[dict], list[str]]:
    """(records of B - A per task, shots and metric, notes on rows that could not be paired)."""
    rows_a = _single(load_entries([folder_a]), folder_a)
    rows_b = _single(load_entries([folder_b]), folder_b)
    data = QueryData(tasks_dirs)
    records, notes = [], []
    for key in sorted(set(rows_a) | set(rows_b), key=lambda k: (k[0], k[2], k[1], k[3] or 0)):
        task, shots, selection, seed_ = key
        if key not in rows_a or key not in rows_b:
            notes.append(f"{task} {shots}-shot ({selection}) is only in {folder_a if key in rows_a else folder_b}")
            continue
        a, b = rows_a[key], rows_b[key]
        fingerprints = [e.row.config.get("data", {}).get("query_fingerprint") for e in (a, b)]
        if fingerprints[0] != fingerprints[1]:
            notes.append(f"{task} {shots}-shot: the runs used different query data ({fingerprints[0]} vs {fingerprints[1]}); not paired")
            continue
        scored_a, scored_b = data.scored(a.row, a.folder), data.scored(b.row, b.folder)
        common = min(len(scored_a.examples), len(scored_b.examples))  # both are prefixes of the same split
        examples = scored_a.examples[:common]
        predictions_a, predictions_b = scored_a.predictions[:common], scored_b.predictions[:common]
        values_a = scored_a.metric.aggregate(predictions_a, examples)
        values_b = scored_b.metric.aggregate(predictions_b, examples)
        found = paired_intervals(scored_a.metric, predictions_a, predictions_b, examples, resamples, seed)
        names = list(values_a) if all_metrics else [headline_metric(task, values_a)]
        for name in names:
            interval = found.get(name)
            records.append({
                "task": task, "shots": shots, "selection": selection, "seed": seed_, "metric": name,
                "A": values_a[name], "B": values_b[name], "B - A": values_b[name] - values_a[name],
                "ci_low": interval.low if interval else None, "ci_high": interval.high if interval else None,
                "n": common, "excludes 0": ("yes" if interval.excludes_zero() else "no") if interval else "",
            })
    if not records:
        raise UserError(f"{folder_a} and {folder_b} have no task and shot count in common to compare")
    return records, notes


def compare_reference(folder: Path, reference: str, intervals: bool = True, resamples: int = DEFAULT_RESAMPLES,
                      seed: int = 0, tasks_dirs: tuple[Path, ...] = ()) -> tuple[list[dict], list[str]]:
    """(records of the run next to the published numbers, notes on what the card does not cover)."""
    card = published(reference)
    data = QueryData(tasks_dirs)
    records, notes = [], []
    for model, cells in reported_entries(load_entries([folder]), "rices").items():
        for (task, shots), entry in sorted(cells.items()):
            metrics = entry.row.metrics
            names = [name for name in metrics if (task, shots, name) in card]
            if not names:
                notes.append(f"{task} {shots}-shot: the model card has no {reference} number for it")
                continue
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
    return records, notes
