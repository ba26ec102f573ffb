"""The VisDial v1.0 release layout (visualdialog.org): a dialogs JSON per split, the val dense annotations
JSON, and image files.

    visdial_1.0_train.json, visdial_1.0_val.json:
        {"version": "1.0", "split": "train2018" | "val2018",
         "data": {"questions": [str, ...], "answers": [str, ...],
                  "dialogs": [{"image_id": int, "caption": str,
                               "dialog": [{"question": q, "answer": a, "answer_options": [a, ...], "gt_index": i},
                                          ... 10 rounds]}]}}
    visdial_1.0_val_dense_annotations.json:
        [{"image_id": int, "round_id": r (1-based), "gt_relevance": [one number per answer option]}, ...]

Questions, answers and options are indices into the shared `questions` / `answers` lists.

A task gives, per split: `dialogs` (the JSON file), `image_file` (a pattern over the dialog record,
relative to the data folder; several patterns separated by " | " are tried in order, since VisDial
train images are COCO train2014 and val2014 files) and optionally `dense_annotations`.

One `Example` per dialog, for one round: the densely annotated round where the split has dense
annotations (val), else the last round (train, where shots come from; the IDEFICS authors' support
sets use the last round too, the one with the longest history). `candidates` are the round's
answer options, `label` its `gt_index`, `answers` its answer, `metadata["round_id"]` the round
(1-based) and, with dense annotations, `metadata["relevance"]` the option relevances.

Rendering for `<image>{caption}. {history}{class_name}.`: `fields["caption"]` is the caption as
given; `fields["history"]` is every earlier round as "Question: {q}? Answer: {a}. " followed by
"Question: {q}? Answer: " for the round itself (the IDEFICS authors' rendering), so the candidate
continues right after "Answer:". VisDial questions carry no question mark (the official starter
code appends one); one is added unless the question already ends with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import FileListing, check_files_exist, data_file, data_root, identifier, read_json, require, typed

FORMAT = "visdial_json"


def load_visdial_json(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    path = data_file(root, files["dialogs"], FORMAT)
    dialogs, questions, answers = _read_dialogs(path)
    dense_path = data_file(root, files["dense_annotations"], FORMAT) if "dense_annotations" in files else None
    dense = _read_dense(dense_path) if dense_path else None
    finder = _ImageFinder(root, files["image_file"])

    examples: list[Example] = []
    seen: dict[str, int] = {}
    for index, dialog in enumerate(dialogs):
        where = f"{path}: dialogs[{index}]"
        require(dialog, where, ("image_id", "caption", "dialog"))
        image_id = identifier(dialog["image_id"], where, "image_id")
        where = f"{path}: dialog of image_id {image_id} (dialogs[{index}])"
        if image_id in seen:
            raise UserError(f"{path}: duplicate image_id {image_id} (dialogs[{seen[image_id]}] and dialogs[{index}])")
        seen[image_id] = index
        rounds = typed(dialog["dialog"], list, where, "dialog")
        if not rounds:
            raise UserError(f"{where}: 'dialog' has no rounds")
        metadata: dict[str, Any] = {}
        if dense is not None:
            if image_id not in dense:
                raise UserError(
                    f"{dense_path}: no dense annotation for image_id {image_id} of {path.name}; the dialogs and "
                    "dense annotations files must be of the same split"
                )
            round_id, relevance = dense.pop(image_id)
            if not 1 <= round_id <= len(rounds):
                raise UserError(
                    f"{dense_path}: image_id {image_id}: round_id {round_id} is not a round of its dialog "
                    f"(1..{len(rounds)}); the dialogs and dense annotations files must be of the same split"
                )
        else:
            round_id, relevance = len(rounds), None

        history = _history(rounds[: round_id - 1], questions, answers, where)
        here = f"{where}, round {round_id}"
        turn = require(rounds[round_id - 1], here, ("question", "answer", "answer_options", "gt_index"))
        history += f"Question: {_question(questions, turn['question'], here)} Answer: "  # the candidate follows
        options = typed(turn["answer_options"], list, here, "answer_options")
        if not options:
            raise UserError(f"{here}: 'answer_options' is empty")
        candidates = tuple(_answer(answers, option, here, f"answer_options[{i}]") for i, option in enumerate(options))
        gt_index = typed(turn["gt_index"], int, here, "gt_index")
        if not 0 <= gt_index < len(options):
            raise UserError(f"{here}: gt_index {gt_index} is not an index into its {len(options)} answer_options")
        answer = _answer(answers, turn["answer"], here, "answer")
        if candidates[gt_index] != answer:
            raise UserError(
                f"{here}: gt_index {gt_index} points at option {candidates[gt_index]!r} but the round's answer is "
                f"{answer!r}; the file is inconsistent (re-download it)"
            )
        metadata["round_id"] = round_id
        if relevance is not None:
            if len(relevance) != len(options):
                raise UserError(
                    f"{dense_path}: image_id {image_id}: gt_relevance has {len(relevance)} values for "
                    f"{len(options)} answer options"
                )
            metadata["relevance"] = relevance
        examples.append(
            Example(
                id=f"{image_id}_{round_id}",
                image_id=image_id,
                image=finder.find(dialog, where),
                fields={"caption": typed(dialog["caption"], str, where, "caption"), "history": history},
                answers=(answer,),
                metadata=metadata,
                candidates=candidates,
                label=gt_index,
            )
        )
    if not examples:
        raise UserError(f"{path}: no dialogs in the file; is it the right file?")
    if dense:
        extra = next(iter(dense))
        raise UserError(
            f"{dense_path}: dense annotation for image_id {extra} has no dialog in {path} ({len(dense)} such); "
            "the dialogs and dense annotations files must be of the same split"
        )
    check_files_exist(
        (example.image.path for example in examples), "images",
        f"check the data folder {root} (--data) and the task's image_file {files['image_file']!r}", finder.listing,
    )
    return ExampleSet(name=name, source=str(root), examples=examples)


def _read_dialogs(path: Path) -> tuple[list[Any], list[Any], list[Any]]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        found = f"keys {', '.join(map(repr, list(data)[:5]))}" if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: missing top-level object 'data' (found {found}); is this a VisDial v1.0 dialogs file?")
    if "test" in str(data.get("split", "")):
        raise UserError(f"{path}: is the {data['split']} split, which has no answers to score; use the val split")
    body = data["data"]
    lists = []
    for key in ("dialogs", "questions", "answers"):
        if key not in body:
            raise UserError(f"{path}: 'data' has no key {key!r} (found: {', '.join(body) or 'none'})")
        lists.append(typed(body[key], list, f"{path}: data", key))
    return lists[0], lists[1], lists[2]


def _history(rounds: list[Any], questions: list[Any], answers: list[Any], where: str) -> str:
    """The rounds before the scored one, as "Question: {q}? Answer: {a}. " each."""
    history = ""
    for number, turn in enumerate(rounds, 1):
        here = f"{where}, round {number}"
        require(turn, here, ("question", "answer"))
        question, answer = _question(questions, turn["question"], here), _answer(answers, turn["answer"], here, "answer")
        history += f"Question: {question} Answer: {answer}. "
    return history


def _lookup(table: list[Any], value: Any, here: str, key: str, table_name: str) -> str:
    index = typed(value, int, here, key)
    if not 0 <= index < len(table) or not isinstance(table[index], str):
        raise UserError(f"{here}: {key} {index} is not an index of a text in data.{table_name} ({len(table)} entries)")
    return table[index]


def _question(questions: list[Any], value: Any, here: str) -> str:
    question = _lookup(questions, value, here, "question", "questions")
    return question if question.endswith("?") else question + "?"


def _answer(answers: list[Any], value: Any, here: str, key: str) -> str:
    return _lookup(answers, value, here, key, "answers")


def _read_dense(path: Path) -> dict[str, tuple[int, list[float]]]:
    """image_id -> (round_id, the relevance of each answer option)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of dense annotations, found {type(data).__name__}")
    dense: dict[str, tuple[int, list[float]]] = {}
    for index, entry in enumerate(data):
        where = f"{path}: [{index}]"
        require(entry, where, ("image_id", "round_id", "gt_relevance"))
        image_id = identifier(entry["image_id"], where, "image_id")
        where = f"{path}: image_id {image_id} ([{index}])"
        if image_id in dense:
            raise UserError(f"{path}: duplicate dense annotation for image_id {image_id}")
        relevance = typed(entry["gt_relevance"], list, where, "gt_relevance")
        for value in relevance:
            typed(value, (int, float), where, "gt_relevance")
        dense[image_id] = (typed(entry["round_id"], int, where, "round_id"), [float(v) for v in relevance])
    return dense


class _ImageFinder:
    """Resolves a dialog's image through the task's pattern(s): the first that exists, else the first pattern's
    (which the final `check_files_exist` over the same `listing` reports)."""

    def __init__(self, root: Path, image_file: str):
        self.root = root
        self.patterns = [pattern.strip() for pattern in image_file.split("|") if pattern.strip()]
        self.listing = FileListing()

    def find(self, record: dict[str, Any], where: str) -> FileImage:
        paths = [self.root / _format(pattern, record, where) for pattern in self.patterns]
        return FileImage(next((path for path in paths if self.listing.exists(path)), paths[0]))


def _format(pattern: str, record: dict[str, Any], where: str) -> str:
    try:
        return pattern.format(**record)
    except KeyError as error:
        raise UserError(
            f"{where}: the task's image_file {pattern!r} uses key {error.args[0]!r}, which the dialog record does "
            f"not have (it has: {', '.join(record)}); fix image_file in the task"
        ) from None
    except (IndexError, ValueError) as error:
        raise UserError(
            f"{where}: the task's image_file {pattern!r} cannot format this dialog's image_id "
            f"{record.get('image_id')!r} ({error}); name a record key, e.g. {{image_id:012d}}"
        ) from None


register(
    FileFormat(
        FORMAT, ("dialogs", "image_file"), ("dialogs",), load_visdial_json, optional=("dense_annotations",)
    )
)
