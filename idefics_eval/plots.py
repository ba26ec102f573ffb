"""Plots: shot-scaling curves of results folders and the metric-against-step plot of a sweep (PNG).

matplotlib's object interface with the Agg canvas (no display, no pyplot state: safe inside a
training process or a notebook). Every figure has one panel per task, titled
with the task (the model card's name for it where the card has one) and its metric on the y axis.
Figures have a size fixed by their content (`figure_size`): `PANEL` inches per panel at `DPI` dots per
inch, plus a band for the shared legend below the panels, one `LEGEND_ROW` per row of entries (as many
entries to a row as the figure's width holds at their length).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .export import CARD_BY_TASK, Entry, headline_metric

PANEL = (4.2, 3.3)  # inches per panel
LEGEND_ROW = 0.3  # inches per row of legend entries
LEGEND_CHARACTER, LEGEND_HANDLE = 0.09, 0.8  # inches per character of an entry (10 pt), and for its line sample
TITLE_POINTS, TITLE_CHARACTER = 13, 0.6  # the figure title's size, and a character's width in ems
DPI = 150
MAX_COLUMNS = 4


@dataclass
class Series:
    """One line of a panel: a metric of one model (or shot count) over x values."""

    label: str
    task: str
    x: list = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)  # interval bounds, NaN where there is none
    high: list[float] = field(default_factory=list)
    reference: bool = False  # published numbers: drawn dashed


def grid(panels: int) -> tuple[int, int]:
    columns = min(MAX_COLUMNS, panels)
    return math.ceil(panels / columns), columns


def legend_columns(panels: int, labels: Sequence[str]) -> int:
    entry = max((len(label) for label in labels), default=0) * LEGEND_CHARACTER + LEGEND_HANDLE
    return max(1, min(len(labels), int(grid(panels)[1] * PANEL[0] // entry)))


def figure_size(panels: int, legend_labels: Sequence[str]) -> tuple[float, float]:
    """The figure's size in inches; the PNG is this times DPI pixels (matplotlib truncates to whole pixels)."""
    rows, columns = grid(panels)
    legend_rows = math.ceil(len(legend_labels) / legend_columns(panels, legend_labels))
    return columns * PANEL[0], rows * PANEL[1] + legend_rows * LEGEND_ROW + 0.25


def panel_title(task: str) -> tuple[str, str]:
    """(title, y label): the card's "VQAv2" and "OE VQA acc" for "VQAv2 (OE VQA acc)"."""
    column = CARD_BY_TASK.get(task)
    if column is None:
        return task, ""
    if task == "winoground":  # the card's "group (text/image)" column; the panel shows the group score
        return "Winoground", "group score"
    name, _, unit = column.title.partition(" (")
    return name, unit[:-1]


def wrap_title(title: str, width: float) -> str:
    """`title` with each line wrapped to `width` inches, so that a long note stays inside the figure."""
    import textwrap

    characters = max(20, int(width * 72 / (TITLE_POINTS * TITLE_CHARACTER)))
    return "\n".join(textwrap.fill(line, characters, break_on_hyphens=False) for line in title.splitlines())


def _axes(panels: int, legend_labels: Sequence[str], title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, columns = grid(panels)
    figure = Figure(figsize=figure_size(panels, legend_labels), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    figure.suptitle(wrap_title(title, columns * PANEL[0]), fontsize=TITLE_POINTS)
    flat = list(axes.flat)
    for unused in flat[panels:]:
        unused.set_visible(False)
    return figure, flat[:panels]


def _style(ax, task: str, metric: str, xlabel: str) -> None:
    title, unit = panel_title(task)
    ax.set_title(title, fontsize=12)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(unit or metric, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=9)


def _legend(figure, axes, panels: int, labels: Sequence[str]) -> None:
    """One legend below the panels with the entries `labels` (which sized the figure), in that order."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend([handles[label] for label in labels], labels, loc="outside lower center",
                  ncols=legend_columns(panels, labels), fontsize=10, frameon=False)


def shot_scaling_figure(series: Sequence[Series], metrics: dict[str, str], title: str = "Shot scaling"):
    """Metric against shot count, one panel per task (in `metrics`' order: task -> metric key), one
    line per model. Shot counts are evenly spaced (0, 4, 8, 16, 32 as on a log scale after 0)."""
    labels = list(dict.fromkeys(s.label for s in series if not s.reference))
    references = list(dict.fromkeys(s.label for s in series if s.reference))
    if any(not math.isnan(v) for s in series for v in s.low + s.high):
        title += "\nbars: 95% bootstrap intervals over queries"
    figure, axes = _axes(len(metrics), labels + references, title)
    from matplotlib import colormaps

    colours = {label: colormaps["tab10"](i % 10) for i, label in enumerate(labels)}
    greys = {label: ("0.15", "0.5", "0.35")[i % 3] for i, label in enumerate(references)}
    for ax, (task, metric) in zip(axes, metrics.items()):
        shown = sorted((s for s in series if s.task == task), key=lambda s: s.reference)  # runs first in the legend
        counts = sorted({x for s in shown for x in s.x})
        position = {count: i for i, count in enumerate(counts)}
        for s in shown:
            xs = [position[x] for x in s.x]
            if s.reference:
                ax.plot(xs, s.y, linestyle="--", marker="s", markerfacecolor="white", color=greys[s.label],
                        linewidth=1.5, markersize=6, label=s.label)
                continue
            errors = [[y - lo for y, lo in zip(s.y, s.low)], [hi - y for y, hi in zip(s.y, s.high)]]
            has_errors = any(not math.isnan(v) for v in errors[0] + errors[1])
            if has_errors:  # side by side, so that the bars of several models at one shot count stay apart
                xs = [x + 0.08 * (labels.index(s.label) - (len(labels) - 1) / 2) for x in xs]
            ax.errorbar(xs, s.y, yerr=errors if has_errors else None, marker="o", linewidth=2, markersize=6,
                        capsize=3, color=colours[s.label], label=s.label)
        ax.set_xticks(range(len(counts)), [str(c) for c in counts])
        ax.set_xlim(-0.4, max(len(counts) - 0.6, 0.4))
        _style(ax, task, metric, "shots")
    _legend(figure, axes, len(metrics), labels + references)
    return figure


def sweep_figure(series: Sequence[Series], metrics: dict[str, str], best_x, best_label: str, steps: bool,
                 selection: Series | None = None, title: str = "Checkpoint sweep"):
    """Metric against training step (or checkpoint, when names carry no step), one panel per task,
    one line per shot count; the best checkpoint marked. `selection`, when given, adds a panel with
    the selection score."""
    panels = len(metrics) + (selection is not None)
    shot_labels = list(dict.fromkeys(s.label for s in series))
    legend = [*shot_labels, f"best: {best_label}", *([selection.label] if selection else [])]
    figure, axes = _axes(panels, legend, title)
    from matplotlib import colormaps
    from matplotlib.ticker import FuncFormatter

    colours = {label: colormaps["viridis"](i / max(1, len(shot_labels) - 1) * 0.85) for i, label in enumerate(shot_labels)}
    order = list(dict.fromkeys(x for s in [*series, *([selection] if selection else [])] for x in s.x))

    def place(x):
        return x if steps else order.index(x)

    for ax, (task, metric) in zip(axes, metrics.items()):
        for s in (s for s in series if s.task == task):
            ax.plot([place(x) for x in s.x], s.y, marker="o", linewidth=2, color=colours[s.label], label=s.label)
        _style(ax, task, metric, "training step" if steps else "checkpoint")
    if selection is not None:
        ax = axes[-1]
        ax.plot([place(x) for x in selection.x], selection.y, marker="D", linewidth=2, color="black", label=selection.label)
        ax.set_title("Selection score", fontsize=12)
        ax.set_ylabel(selection.label, fontsize=10)
        ax.set_xlabel("training step" if steps else "checkpoint", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=9)
    positions = [place(x) for x in order]
    pad = 0.06 * (max(positions) - min(positions)) or 0.5
    for ax in axes:
        ax.axvline(place(best_x), color="crimson", linestyle=":", linewidth=2, label=f"best: {best_label}")
        ax.set_xlim(min(positions) - pad, max(positions) + pad)
        if not steps:
            ax.set_xticks(range(len(order)), [str(x) for x in order], rotation=30, ha="right")
            continue
        if len(order) <= 8:
            ax.set_xticks(order)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    _legend(figure, axes, panels, legend)
    return figure


def save(figure, path: Path) -> Path:
    """Write `figure` as PNG at its own size (no tight cropping, so the size is `figure_size`'s).

    Characters the font lacks (a run named in CJK) are said once, in one line: matplotlib's own
    warning takes two lines per character, one of them our source line."""
    import re
    import sys
    import warnings

    from .results import atomic_file

    with warnings.catch_warnings(record=True) as caught, atomic_file(path, "wb") as handle:
        warnings.simplefilter("always")
        figure.savefig(handle, format="png", dpi=DPI)
    missing = {}
    for warning in caught:
        if found := re.match(r"Glyph (\d+) .* missing from font", str(warning.message)):  # the number is the code point
            missing[chr(int(found.group(1)))] = None
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if missing:  # no path: a site's plot is still in its build folder here
        print(f"warning: the plot's font has no glyph for {', '.join(missing)}; they show as boxes in the plot", file=sys.stderr)
    return path


def shot_scaling_series(entries: Sequence[Entry], selection: str = "rices", intervals: bool = False, resamples: int = 1000,
                        seed: int = 0, tasks_dirs: tuple[Path, ...] = ()) -> tuple[list[Series], dict[str, str]]:
    """The curves of results entries: one Series per model and task, on the task's headline metric."""
    from .bootstrap import QueryData
    from .export import reported_entries

    data = QueryData(tasks_dirs)
    series: list[Series] = []
    metrics: dict[str, str] = {}
    for model, cells in reported_entries(entries, selection).items():
        by_task: dict[str, Series] = {}
        for (task, shots), entry in sorted(cells.items(), key=lambda item: (item[0][0], item[0][1])):
            metric = metrics.setdefault(task, headline_metric(task, entry.row.metrics))
            if metric not in entry.row.metrics:
                continue
            found = data.intervals(entry.row, entry.folder, resamples, seed) if intervals and entry.row.predictions else {}
            interval = found.get(metric)
            s = by_task.setdefault(task, Series(model, task))
            s.x.append(shots)
            s.y.append(entry.row.metrics[metric])
            s.low.append(interval.low if interval else math.nan)
            s.high.append(interval.high if interval else math.nan)
        series += by_task.values()
    order = [column.task for column in CARD_BY_TASK.values()]
    metrics = dict(sorted(metrics.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0])))
    return series, metrics


def reference_series(reference: str, metrics: dict[str, str]) -> list[Series]:
    """The model card's curve of `reference` (idefics-9b, idefics-80b) for the tasks plotted."""
    from .compare import published

    values = published(reference)
    series = []
    for task, metric in metrics.items():
        points = sorted((shots, value) for (t, shots, m), value in values.items() if t == task and m == metric)
        if points:
            series.append(Series(f"{reference} (model card)", task, [p[0] for p in points], [p[1] for p in points],
                                 [math.nan] * len(points), [math.nan] * len(points), reference=True))
    return series


def plot_results(folders: Sequence[Path], output_dir: Path, references: Sequence[str] = (), selection: str = "rices",
                 intervals: bool = False, resamples: int = 1000, seed: int = 0, tasks_dirs: tuple[Path, ...] = ()) -> list[Path]:
    """Write `shot_scaling.png` for the results folders into `output_dir`; return the files written."""
    figure = results_figure(folders, references, selection, intervals, resamples, seed, tasks_dirs)
    path = Path(output_dir) / "shot_scaling.png"
    try:
        return [save(figure, path)]
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}; choose another -o") from None


def results_figure(folders: Sequence[Path], references: Sequence[str] = (), selection: str = "rices", intervals: bool = False,
                   resamples: int = 1000, seed: int = 0, tasks_dirs: tuple[Path, ...] = ()):
    """The shot-scaling figure of results folders, with the model card's curves of `references`; its
    title says when the runs' rows are partial, so not comparable with the card's."""
    from .export import load_entries

    entries = load_entries(folders)
    series, metrics = shot_scaling_series(entries, selection, intervals, resamples, seed, tasks_dirs)
    if not metrics:
        raise UserError(f"no {selection} results to plot in {', '.join(map(str, folders))}")
    title = "Shot scaling"
    for reference in references:
        series += reference_series(reference, metrics)
    if references and (below := below_reference(entries, selection)):
        title += f"\npartial, n below the model card's full splits: {below}"
    return shot_scaling_figure(series, metrics, title)


def below_reference(entries: Sequence[Entry], selection: str) -> str:
    """Why the plotted rows are partial, per model ("m (--limit 8, bundled demo data)"), or ""."""
    from .comparability import partial
    from .export import reported_entries

    found: dict[str, dict[str, None]] = {}
    for model, cells in reported_entries(entries, selection).items():
        for entry in cells.values():
            if (reason := partial(entry.row)) is not None:
                found.setdefault(model, {}).update(dict.fromkeys(reason.reasons))
    return "; ".join(f"{model} ({', '.join(reasons)})" for model, reasons in found.items())
