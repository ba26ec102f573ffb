"""Predictions: one JSON line per query, appended as answers are made, so a killed run resumes.

While a shot setting runs, its lines go to `<name>.jsonl.partial`, flushed after every batch. A
rerun of the same command reads the partial file back, drops a half-written last line, skips the
queries already answered and appends the rest; when every query is answered the file is renamed
to `<name>.jsonl`. Each line carries the query id, the prediction, the ids of its shots (least
similar first) and its score.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
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
    scores: tuple[float, ...] = ()
    ranking: tuple[int, ...] = ()

    def to_json(self) -> str:
        record = asdict(self)
        for key in ("shots", "scores", "ranking"):
            record[key] = list(record[key])
        if not self.scores and not self.ranking:
            del record["scores"], record["ranking"]
        return json.dumps(record, ensure_ascii=False)


def prediction_file(output_dir: Path, task: str, shots: int, seed: int | None) -> Path:
    suffix = f"_seed{seed}" if seed is not None else ""
    return output_dir / "predictions" / f"{task}_{shots}shot{suffix}.jsonl"


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
        scores=tuple(float(value) for value in record.get("scores", ())),
        ranking=tuple(int(value) for value in record.get("ranking", ())),
    )


def read_predictions(path: Path) -> list[Prediction]:
    """A finished predictions file; every line must parse and every id appear once."""
    if not path.is_file():
        raise UserError(f"predictions file not found: {path}")
    predictions, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                prediction = _parse(line, f"{path}:{number}")
            except (json.JSONDecodeError, ValueError, TypeError):
                raise UserError(f"{path}:{number} is not a JSON prediction line") from None
            if prediction.id in seen:
                raise UserError(f"{path}:{number}: query id {prediction.id} appears twice")
            seen.add(prediction.id)
            predictions.append(prediction)
    return predictions


class PredictionWriter:
    """Appends predictions to the partial file; `done` holds what an earlier, killed run wrote."""

    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.done: dict[str, Prediction] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # finished earlier for fewer queries (a smaller --limit): keep its lines
            self.done = {p.id: p for p in read_predictions(path)}
        if self.partial.exists():
            self._recover()
        self.handle = open(self.partial, "a", encoding="utf-8")

    def _recover(self) -> None:
        """Keep every complete line; cut the file after the last one (a kill can leave half a line)."""
        data = self.partial.read_bytes()
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                prediction = _parse(line.decode("utf-8"), str(self.partial))
            except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError, UserError):
                break
            self.done[prediction.id] = prediction
            good_end += len(line)
        if good_end < len(data):
            with open(self.partial, "r+b") as handle:
                handle.truncate(good_end)

    def write(self, predictions: Iterable[Prediction]) -> None:
        for prediction in predictions:
            self.handle.write(prediction.to_json() + "\n")
            self.done[prediction.id] = prediction
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def finish(self, order: list[str]) -> list[Prediction]:
        """Write the final file (this run's queries in order, then any answered by earlier runs
        with a larger --limit), remove the partial one, and return this run's predictions."""
        self.handle.close()
        ordered = [self.done[query_id] for query_id in order]
        wanted = set(order)
        kept = ordered + [p for query_id, p in self.done.items() if query_id not in wanted]
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(p.to_json() + "\n" for p in kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        self.partial.unlink()
        return ordered

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()
