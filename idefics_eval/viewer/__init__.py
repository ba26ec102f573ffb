"""The run viewer: `idefics-eval view RUN_DIR [RUN_DIR2] -o DIR` writes a static site of a run.

The site opens from the file system (no server, no network): `index.html` (results table,
shot-scaling plot, the run's configuration), one page per sample log (`<task>_<shots>shot.html`:
thumbnails, prompt, prediction, references, score; filtered and paged in the browser), and with a
second run, its pages (`B_<task>_<shots>shot.html`) and one diff page per setting both ran
(`diff_<task>_<shots>shot.html`: the queries whose score changed). Pages are Jinja2 templates;
the browser code is one plain script (static/viewer.js).

A page's rows are not in its HTML: they are JavaScript files under `data/` that set a global
(`fetch()` of local files is blocked under file://), `CHUNK_ROWS` rows each, loaded only for the page
of rows shown; a small index file per page holds what the filters need for every row.
Thumbnails are resized JPEG copies under `thumbs/`, one per image key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..predictions import PredictionWriter, logged_lines
from ..results import Result, read_results

CHUNK_ROWS = 500  # rows per data file: a page of rows loads one or two files
THUMBNAIL_PIXELS = 160  # the longer side of a thumbnail
MAX_FILTER_VALUES = 50  # a metadata key with more distinct values (an id) is not offered as a filter
SITE_MARK = ".idefics-eval-view"  # marks a folder this command wrote, so that a rebuild may clear it


def is_wrong(score) -> bool:
    """A query the "wrong only" filter keeps: scored below full marks (VQA accuracy 0.3 counts)."""
    return score is not None and score < 1


@dataclass
class Run:
    """A run folder as the viewer reads it: its results rows (none yet while the first setting
    runs) and its sample logs by setting name (`vqav2_4shot`), finished or partial."""

    folder: Path
    results: list[Result]
    settings: dict[str, Path]
    config: str | None

    @property
    def label(self) -> str:
        names = {row.run_name for row in self.results if row.run_name}
        return f"{self.folder} ({', '.join(sorted(names))})" if names else str(self.folder)


def read_run(folder: Path) -> Run:
    """The run in `folder`, or one line saying it is not one (no results.json, manifest or sample logs)."""
    folder = Path(folder)
    marks = [folder / "results.json", folder / "manifest.json", folder / "samples", folder / "predictions"]
    if not folder.is_dir() or not any(mark.exists() for mark in marks):
        raise UserError(f"{folder} is not a run folder (no results.json, manifest.json or samples/); "
                        "give the --output-dir of an idefics-eval run")
    results = read_results(folder / "results.json") if (folder / "results.json").exists() else []
    settings: dict[str, Path] = {}
    for file in sorted((folder / "samples").glob("*.jsonl*")):
        name = file.name.split(".jsonl", 1)[0]  # `x.jsonl` and its partial files `x.jsonl.partial.0`
        settings.setdefault(name, file.with_name(f"{name}.jsonl"))
    config = folder / "config.yaml"
    return Run(folder, results, settings, config.read_text(encoding="utf-8", errors="replace") if config.is_file() else None)


def setting_name(row: Result) -> str:
    return Path(row.predictions).stem if row.predictions else f"{row.task}_{row.shots}shot"


class Thumbnails:
    """Small JPEG copies of the images the logs name, made once per image key. A key that is not a
    file (an image inside a Hugging Face dataset row) or that cannot be read gets none."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.made: dict[str, str | None] = {}

    def __call__(self, key: str) -> str | None:
        if key not in self.made:
            self.made[key] = self._make(key)
        return self.made[key]

    def _make(self, key: str) -> str | None:
        from PIL import Image, UnidentifiedImageError

        path = Path(key)
        if not path.is_file():
            return None
        name = f"thumbs/{hashlib.sha1(key.encode()).hexdigest()[:16]}.jpg"
        try:
            with Image.open(path) as image:
                image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
                (self.folder / "thumbs").mkdir(exist_ok=True)
                image.convert("RGB").save(self.folder / name, "JPEG", quality=80)
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        return name


@dataclass
class Page:
    """One paged table of the site: its rows go to data files as they come, its index at the end."""

    site: Path
    name: str
    kind: str  # "samples" or "diff": how viewer.js draws a row
    rows: int = 0
    scored: int = 0  # rows with a score of their own (none for a corpus-level metric: CIDEr)
    filter_values: list[dict] = field(default_factory=list)
    wrong: list[int] = field(default_factory=list)
    chunk: list[dict] = field(default_factory=list)

    def add(self, record: dict, wrong: bool, filters: dict[str, str]) -> None:
        self.scored += record.get("score") is not None or "a" in record  # a diff row has scores
        self.chunk.append(record)
        self.wrong.append(int(wrong))
        self.filter_values.append(filters)
        self.rows += 1
        if len(self.chunk) == CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.chunk:
            number = (self.rows - 1) // CHUNK_ROWS
            _write_script(self.site / "data" / f"{self.name}_{number}.js",
                          f"VIEW_CHUNKS[{number}] = {_json(self.chunk)};")
            self.chunk = []

    def finish(self) -> list[dict]:
        """Write the last data file and the index: per row its "wrong" flag and filter values."""
        self._flush()
        keys = [key for key in dict.fromkeys(k for values in self.filter_values for k in values)
                if len({values.get(key) for values in self.filter_values}) <= MAX_FILTER_VALUES]
        filters = [{"key": key, "values": sorted({str(v.get(key, "")) for v in self.filter_values})} for key in keys]
        lookup = [{value: i for i, value in enumerate(f["values"])} for f in filters]
        index = [[wrong, *(lookup[i][str(values.get(f["key"], ""))] for i, f in enumerate(filters))]
                 for wrong, values in zip(self.wrong, self.filter_values)]
        meta = {"kind": self.kind, "rows": self.rows, "scored": self.scored, "chunk": CHUNK_ROWS, "filters": filters,
                "index": index}
        _write_script(self.site / "data" / f"{self.name}_index.js", f"VIEW_INDEX = {_json(meta)};")
        return filters


def _json(value) -> str:
    # "</" escaped so that a log's text can never end a script element, whatever it holds
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def _write_script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("window.VIEW_CHUNKS = window.VIEW_CHUNKS || {};\n" + text + "\n", encoding="utf-8")


def sample_record(line: dict, thumbnail: Thumbnails) -> dict:
    """What a sample page shows of one sample-log line (docs/outputs.md names the fields)."""
    record = {key: line.get(key) for key in ("id", "score", "prediction", "raw_prediction", "answers", "inputs",
                                             "metadata", "prompt", "prompt_tokens", "dropped_shots", "error", "label")}
    record["images"] = [{"key": key, "thumb": thumbnail(key)} for key in line.get("images", [])]
    record["shots"] = [{"id": shot.get("id"), "similarity": shot.get("similarity"), "answer": shot.get("answer"),
                        "image": {"key": shot.get("image"), "thumb": thumbnail(shot.get("image") or "")}}
                       for shot in line.get("shown_shots", [])]
    candidates, ranking = line.get("candidates"), line.get("ranking") or []
    if not ranking:  # Winoground's 2x2 caption-by-image scores (a ranked task's candidate scores can be 1,000)
        record["scores"] = line.get("scores")
    if candidates:  # the best five, so that a page of ranked rows stays light
        record["top"] = [candidates[i] for i in ranking[:5] if 0 <= i < len(candidates)]
    return {key: value for key, value in record.items() if value not in (None, [], {})}


def filter_values(line: dict) -> dict[str, str]:
    """What a row can be filtered by: its metadata's plain values, and a classification's class."""
    values = {key: str(value) for key, value in (line.get("metadata") or {}).items()
              if isinstance(value, (str, int, bool))}
    if line.get("label") is not None and len(line.get("answers") or []) == 1:
        values["class"] = line["answers"][0]
    return values


def log_lines(path: Path) -> Iterator[dict]:
    """A sample log's complete lines so far (finished or partial files)."""
    try:
        yield from logged_lines(path)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read as a sample log ({error}); move it away and rerun the run") from None


def read_log(path: Path, thumbnail: Thumbnails) -> Iterator[tuple[dict, dict]]:
    """A sample log's lines so far, each with what its page shows of it; a line that is not a sample
    line as idefics-eval writes it (edited by hand, another version's) is named in one line."""
    for line in log_lines(path):
        try:
            record = sample_record(line, thumbnail)
        except (AttributeError, TypeError, KeyError, IndexError):
            raise UserError(f"{path}: the line of query {line['id']} is not a sample line as idefics-eval writes it "
                            "(docs/outputs.md); rerun its setting, or move the file away") from None
        yield line, record


def build_site(runs: list[Path], output: Path | None = None) -> Path:
    """Write the site of one run (two: with diff pages) into `output` (default RUN_DIR/view); return it.
    Built beside it and moved into place at the end, so that a failed build leaves the previous site."""
    if not 1 <= len(runs) <= 2:
        raise UserError(f"view takes one run folder, or two to compare; {len(runs)} given")
    read = [read_run(folder) for folder in runs]
    site = Path(output) if output is not None else read[0].folder / "view"
    _check_target(site)
    building = site.with_name(f".{site.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    try:
        _write_site(building, read)
        shutil.rmtree(site, ignore_errors=True)
        building.rename(site)
    except OSError as error:
        raise UserError(f"cannot write the site to {site}: {error.strerror or error}; choose another -o") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return site


def _write_site(site: Path, read: list[Run]) -> None:
    _prepare(site)
    thumbnail = Thumbnails(site)
    # run B's pages are named B_<task>_<shots>shot.html, beside A's
    pages = [_sample_pages(site, run, prefix, thumbnail) for run, prefix in zip(read, ("", "B_"))]
    diffs = _diff_pages(site, *read, thumbnail) if len(read) == 2 else {}
    overviews = [_overview(run, site, i) | {"pages": run_pages} for i, (run, run_pages) in enumerate(zip(read, pages))]
    _render(site / "index.html", "index.html", runs=overviews, diffs=diffs, title=f"Run {read[0].label}")


def _sample_pages(site: Path, run: Run, prefix: str, thumbnail: Thumbnails) -> dict[str, int]:
    """One page per sample log of `run`: its file name (without .html) -> the queries it shows."""
    pages = {}
    for name, path in run.settings.items():
        page = Page(site, prefix + name, "samples")
        for line, record in read_log(path, thumbnail):
            page.add(record, is_wrong(line.get("score")), filter_values(line))
        page.finish()
        pages[page.name] = page.rows
        unfinished = not path.exists() or bool(PredictionWriter.partials(path))
        _render(site / f"{page.name}.html", "samples.html", title=f"{name}: {run.label}", data=page.name,
                kind="samples", rows=page.rows, partial=unfinished)
    return pages


def _check_target(site: Path) -> None:
    """The site may go to a new or empty folder, or replace a site this command wrote; nothing else is overwritten."""
    if site.exists() and not site.is_dir():
        raise UserError(f"{site} is a file, not a folder for the site; give another -o")
    if site.exists() and any(site.iterdir()) and not (site / SITE_MARK).exists():
        raise UserError(f"{site} exists and is not a site written by `idefics-eval view`; give another -o")


def _prepare(site: Path) -> None:
    """The new site's folder with the page's script and style sheet, marked as written by this command."""
    (site / "static").mkdir(parents=True)
    (site / SITE_MARK).write_text("written by idefics-eval view; rebuilt (cleared) by it\n", encoding="utf-8")
    for name in ("viewer.js", "viewer.css"):
        (site / "static" / name).write_bytes(resources.files(__package__).joinpath("static", name).read_bytes())


def _overview(run: Run, site: Path, number: int) -> dict:
    """What index.html shows of a run: its summary table per task, its plot, its configuration."""
    from ..reports import summary_records

    plot = _plot(run, site / f"shot_scaling_{number}.png")
    tables = {}
    for task, records in summary_records(run.results).items():
        columns = list(dict.fromkeys(key for record in records for key in record))
        tables[task] = {"columns": columns, "rows": [[record.get(c, "-") for c in columns] for record in records]}
    settings = {setting_name(row) for row in run.results}
    running = [name for name in run.settings if name not in settings]
    config = run.config or (json.dumps(run.results[0].config, indent=2) if run.results else None)
    return {"label": run.label, "tables": tables, "plot": plot, "config": config, "running": running}


def _plot(run: Run, path: Path) -> str | None:
    """The shot-scaling PNG of the run's results, or None where there is nothing to draw."""
    from ..plots import results_figure, save

    selections = dict.fromkeys(row.selection for row in sorted(run.results, key=lambda row: row.selection != "rices"))
    for selection in selections:  # RICES' curve where the run has one, else random selection's (the mean over seeds)
        try:
            save(results_figure([run.folder], selection=selection), path)
        except UserError:  # rows the plot cannot draw (no headline metric): no curve
            continue
        return path.name
    return None


def _diff_pages(site: Path, a: Run, b: Run, thumbnail: Thumbnails) -> dict[str, int]:
    """One page per setting both runs logged: the queries whose score differs, both answers side by side."""
    counts = {}
    for name in (name for name in a.settings if name in b.settings):
        page = Page(site, f"diff_{name}", "diff")
        for (first, record), second in changed(read_log(a.settings[name], thumbnail),
                                               log_lines(b.settings[name])):
            record = {key: record[key] for key in ("id", "images", "inputs", "answers", "metadata") if key in record}
            record["a"] = {key: first.get(key) for key in ("prediction", "score", "error")}
            record["b"] = {key: second.get(key) for key in ("prediction", "score", "error")}
            page.add(record, is_wrong(second.get("score")), filter_values(first))
        page.finish()
        counts[name] = page.rows
        _render(site / f"diff_{name}.html", "samples.html", title=f"{name}: A = {a.label}, B = {b.label}",
                data=page.name, kind="diff", rows=page.rows, partial=False)
    return counts


def changed(first: Iterable[tuple[dict, dict]], second: Iterable[dict]) -> Iterator[tuple[tuple[dict, dict], dict]]:
    """The queries of both logs whose score differs, in the first log's order: ((line, record) of the
    first, the second's line). Only what the diff shows of the second log is held, not its prompts."""
    by_id = {line["id"]: {key: line.get(key) for key in ("id", "prediction", "score", "error")} for line in second}
    for line, record in first:
        other = by_id.get(line["id"])
        if other is not None and line.get("score") != other.get("score"):
            yield (line, record), other


def _render(path: Path, template: str, **context) -> None:
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(loader=PackageLoader(__package__, "templates"), autoescape=select_autoescape())
    path.write_text(environment.get_template(template).render(**context), encoding="utf-8")
