"""Predictions: one JSON line per query, appended as answers are made, so a killed run resumes.

While a shot setting runs, its lines go to `<name>.jsonl.partial`, flushed after every batch. A
rerun of the same command reads the partial file back, drops a half-written last line, skips the
queries already answered and appends the rest; when every query is answered the file is renamed
to `<name>.jsonl`. Each line carries the query id, the prediction, the ids of its shots (least
similar first) and its score.

The sample log (`samples/<name>.jsonl`, docs/outputs.md) is a superset of the predictions file: a
prediction line plus what the model saw (its `sample` fields). The same writer appends both, with
the same recovery: a query counts as done only when both files hold its complete line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import UserError

FULL_SCORES = 100  # ranked tasks with more candidates (ImageNet: 1,000) keep the top `FULL_SCORES` only


@dataclass(frozen=True)
class Prediction:
    """One query's answer. Ranked tasks also keep `ranking`, the candidate indices best first (the
    top `FULL_SCORES`), and `scores`, every candidate's log-likelihood in candidate order (only when
    there are at most `FULL_SCORES` candidates; for Winoground the 2x2 caption-by-image scores, row
    by row)."""

    id: str
    prediction: str
    shots: tuple[str, ...]
    score: float | None  # the query's own metric value (None for corpus-level metrics such as CIDEr)
    dropped_shots: int = 0  # shots removed to fit the model's context (0: not truncated)
    cut_tokens: int = 0  # tokens cut from the prompt's left to fit the context (truncation "left"; 0: not cut)
    scores: tuple[float, ...] = ()
    ranking: tuple[int, ...] = ()
    error: str | None = None  # why the query was skipped (--on-bad-example skip: bad image, prompt too long); not scored
    # The sample log's further fields (docs/outputs.md); its `scores` replace the ones above (all candidates)
    sample: Mapping | None = field(default=None, compare=False)

    def to_json(self, with_sample: bool = False) -> str:
        """The predictions file's line, or with `with_sample` the sample log's."""
        record = asdict(replace(self, sample=None))
        del record["sample"]
        for key in ("shots", "scores", "ranking"):
            record[key] = list(record[key])
        if not self.scores and not self.ranking:
            del record["scores"], record["ranking"]
        if self.error is None:
            del record["error"]
        if not self.cut_tokens:  # written only where a prompt was cut: other runs' lines stay as they were
            del record["cut_tokens"]
        if with_sample and self.sample:
            record.update(self.sample)
        return json.dumps(record, ensure_ascii=False, default=str)  # default: metadata values JSON has no type for


def prediction_file(output_dir: Path, task: str, shots: int, seed: int | None) -> Path:
    suffix = f"_seed{seed}" if seed is not None else ""
    return output_dir / "predictions" / f"{task}_{shots}shot{suffix}.jsonl"


def sample_file(predictions: Path) -> Path:
    """The sample log beside a run's predictions file: `samples/` instead of `predictions/`, same name."""
    return predictions.parent.parent / "samples" / predictions.name


def written_for(predictions: Path) -> list[Path]:
    """Every file a shot setting writes: its predictions, its sample log, and their partial files."""
    files = [predictions, sample_file(predictions)]
    return files + [partial for file in files for partial in PredictionWriter.partials(file)]


def prediction_file_of(path: Path) -> Path:
    """The predictions file a sample log extends (a predictions file: itself)."""
    return path.parent.parent / "predictions" / path.name if path.parent.name == "samples" else path


PREDICTION_KEYS = ("id", "prediction", "shots", "score", "dropped_shots", "cut_tokens", "scores", "ranking", "error")


def _parse(line: str, where: str) -> Prediction:
    record = json.loads(line)
    if not isinstance(record, dict) or "id" not in record or "prediction" not in record:
        raise UserError(f"{where}: each line needs at least an id and a prediction")
    score = record.get("score")
    return Prediction(
        id=str(record["id"]),
        prediction=str(record["prediction"]),
        shots=tuple(record.get("shots", ())),
        score=None if score is None else float(score),
        dropped_shots=int(record.get("dropped_shots", 0)),
        cut_tokens=int(record.get("cut_tokens", 0)),
        scores=tuple(float(value) for value in record.get("scores", ())),
        ranking=tuple(int(value) for value in record.get("ranking", ())),
        error=record.get("error"),
        sample={key: value for key, value in record.items() if key not in PREDICTION_KEYS} or None,
    )


DAMAGED_FIX = "restore the file, or delete it and rerun the evaluation, which redoes its queries"


def read_predictions(path: Path) -> list[Prediction]:
    """A finished predictions file; every line must parse and every id appear once."""
    if not path.is_file():
        raise UserError(f"predictions file not found: {path}")
    predictions, seen = [], set()
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:  # decoded line by line, so that bytes that are not UTF-8 are reported with their line
            prediction = _parse(raw.decode("utf-8"), f"{path}:{number}")
        except UnicodeDecodeError:
            raise UserError(f"{path}:{number} is not UTF-8 text; predictions files are UTF-8 JSON lines; {DAMAGED_FIX}") from None
        except (json.JSONDecodeError, ValueError, TypeError, RecursionError):
            raise UserError(f"{path}:{number} is not a JSON prediction line; {DAMAGED_FIX}") from None
        if prediction.id in seen:
            raise UserError(f"{path}:{number}: query id {prediction.id} appears twice")
        seen.add(prediction.id)
        predictions.append(prediction)
    return predictions


def _complete_lines(path: Path) -> tuple[list[Prediction], int]:
    """The predictions of every complete line, and the byte length they span (a kill can leave half a line)."""
    data = path.read_bytes()
    found, good_end = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            found.append(_parse(line.decode("utf-8"), str(path)))
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError, RecursionError, UserError):
            break
        good_end += len(line)
    return found, good_end


def _line_index(path: Path) -> dict[str, tuple[Path, int, int]]:
    """Where each query's latest complete line lies (file, offset, length): the final file, then every
    partial file. Read line by line and kept as positions, so that a large sample log (whole prompts)
    is never held in memory; a file's lines are read up to its first incomplete or unreadable one."""
    index: dict[str, tuple[Path, int, int]] = {}
    for file in ([path] if path.exists() else []) + PredictionWriter.partials(path):
        offset = 0
        with open(file, "rb") as handle:
            for line in handle:
                try:
                    query_id = _parse(line.decode("utf-8"), str(file)).id if line.endswith(b"\n") else None
                except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError, RecursionError, UserError):
                    query_id = None
                if query_id is None:
                    break
                index[query_id] = (file, offset, len(line))
                offset += len(line)
    return index


def logged_lines(path: Path) -> Iterator[dict]:
    """Each query's latest complete line of a sample log (final and partial files, so a run in
    progress or killed shows what it wrote so far), parsed one at a time, in the order first written."""
    handles: dict[Path, object] = {}
    try:
        for file, offset, length in _line_index(path).values():
            handle = handles.get(file) or handles.setdefault(file, open(file, "rb"))  # noqa: SIM115  (closed below)
            handle.seek(offset)
            yield json.loads(handle.read(length).decode("utf-8"))
    finally:
        for handle in handles.values():
            handle.close()


def logged_ids(path: Path) -> set[str]:
    """The queries a sample log (final and partial files) holds a complete line of."""
    return set(_line_index(path))


class _PartialFile:
    """One process's partial file of one output (predictions or sample log): cut back to its
    complete lines when opened, then appended to and flushed to disk batch by batch."""

    def __init__(self, path: Path, rank: int, with_sample: bool):
        self.path, self.with_sample = path, with_sample
        self.partial = path.with_name(f"{path.name}.partial.{rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # What is done: a sample log's line positions (its lines are large), predictions themselves.
        self.done = _line_index(path) if with_sample else PredictionWriter.read_done(path)
        if self.partial.exists():  # only a rank's own file is cut: another rank may be appending to its own
            _, good_end = _complete_lines(self.partial)
            with open(self.partial, "r+b") as handle:
                handle.truncate(good_end)
        self.handle = open(self.partial, "a", encoding="utf-8")

    def write(self, predictions: list[Prediction]) -> None:
        self.handle.writelines(p.to_json(self.with_sample) + "\n" for p in predictions)
        self.handle.flush()
        os.fsync(self.handle.fileno())


class PredictionWriter:
    """Appends one process's predictions to its partial file (and, given `samples`, the sample log
    to its own); `done` holds what earlier runs wrote to both.

    Each rank writes `<name>.jsonl.partial.<rank>`. Reading back takes every partial file there,
    whatever the number of ranks that wrote them, so a run killed on 2 processes resumes on 1.
    `after_write` runs once each batch is on disk (the runner checks there that its folder still is).
    A query answered but missing from the sample log (killed between the two, or answered by a run
    with --no-log-samples) is not done: it runs again, and the later line replaces the earlier one.
    """

    def __init__(self, path: Path, rank: int = 0, after_write: Callable[[], None] | None = None,
                 samples: Path | None = None):
        self.path = path
        self.after_write = after_write
        # The sample log is written first: a prediction on disk then has its sample line too.
        self.files = ([_PartialFile(samples, rank, True)] if samples is not None else []) + [_PartialFile(path, rank, False)]
        self.done = {query_id: p for query_id, p in self.files[-1].done.items()
                     if all(query_id in f.done for f in self.files)}

    @staticmethod
    def partials(path: Path) -> list[Path]:
        return sorted(path.parent.glob(f"{path.name}.partial*"))

    @classmethod
    def read_done(cls, path: Path) -> dict[str, Prediction]:
        """What the final file (a smaller --limit's) and every partial file hold, complete lines only."""
        done = {p.id: p for p in read_predictions(path)} if path.exists() else {}
        for partial in cls.partials(path):
            done.update((p.id, p) for p in _complete_lines(partial)[0])
        return done

    def write(self, predictions: Iterable[Prediction]) -> None:
        predictions = list(predictions)
        for file in self.files:
            file.write(predictions)
        self.done.update((p.id, p) for p in predictions)
        if self.after_write is not None:
            self.after_write()

    def close(self) -> None:
        for file in self.files:
            if not file.handle.closed:
                file.handle.close()


def finish_predictions(path: Path, order: list[str], samples: Path | None = None) -> list[Prediction]:
    """Merge every partial file into the final one (this run's queries in order, then any answered
    by earlier runs with a larger --limit), remove the partial files, return this run's predictions.
    Called by one process after all have closed their writers; the sample log, given, is finished first."""
    if samples is not None:
        _finish_sample_log(samples, order)
    done = PredictionWriter.read_done(path)
    _check_complete(done, order)
    ordered = [done[query_id] for query_id in order]
    wanted = set(order)
    kept = ordered + [p for query_id, p in done.items() if query_id not in wanted]
    _replace(path, lambda handle: handle.writelines(p.to_json().encode("utf-8") + b"\n" for p in kept))
    return ordered


def _finish_sample_log(path: Path, order: list[str]) -> None:
    """As for predictions, copying each query's latest complete line as it is, one at a time."""
    index = _line_index(path)
    _check_complete(index, order)
    wanted = set(order)
    kept = order + [query_id for query_id in index if query_id not in wanted]

    def copy(out) -> None:
        sources: dict[Path, object] = {}
        try:
            for query_id in kept:
                file, offset, length = index[query_id]
                source = sources.get(file) or sources.setdefault(file, open(file, "rb"))  # noqa: SIM115  (closed below)
                source.seek(offset)
                out.write(source.read(length))
        finally:
            for source in sources.values():
                source.close()

    _replace(path, copy)


def _check_complete(done: Mapping, order: list[str]) -> None:
    missing = [query_id for query_id in order if query_id not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} queries have no prediction after every process finished (first: {missing[0]})")


def _replace(path: Path, write: Callable) -> None:
    """`path` written by `write(handle)` to a temporary file, synced, then put in place; its partial files removed."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    for partial in PredictionWriter.partials(path):
        partial.unlink()
