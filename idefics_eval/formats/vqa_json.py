"""The official VQA v2 JSON layout (also used by OK-VQA, TextVQA and VizWiz).

A split is a questions file, an annotations file and an image folder, all under one data folder:

    questions:   {"questions": [{"image_id", "question", "question_id"}, ...]}
    annotations: {"annotations": [{"question_id", "image_id", "answers": [{"answer", "answer_id", ...}],
                                   "multiple_choice_answer", "answer_type", "question_type"}, ...]}

VizWiz has string image ids and no `answer_id`; both int and str ids are accepted. Images are only
referenced (`FileImage`), never decoded here; one cheap pass checks that every referenced file exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from ..tasks import VqaJsonSplit

METADATA_KEYS = ("answer_type", "question_type", "multiple_choice_answer")
_ID_TYPES = (int, str)


def load_vqa_json(root: Path, split: VqaJsonSplit, name: str) -> ExampleSet:
    """Load one split: `root` is the --data folder, `split` the task's file names for this split."""
    root = Path(root).expanduser().resolve()  # image keys (and so fingerprints) must not depend on the cwd
    questions_path = root / split.questions
    annotations_path = root / split.annotations
    questions = _read_records(questions_path, "questions", root)
    annotations = _read_records(annotations_path, "annotations", root)

    by_question = _index_annotations(annotations, annotations_path)
    images_dir = root / split.images
    if not images_dir.is_dir():
        raise UserError(
            f"image folder {split.images!r} not found in the data folder {root} (--data); "
            f"put the split's images there or fix the task's `images` key"
        )

    examples: list[Example] = []
    seen: dict[str, int] = {}
    image_refs: dict[str, FileImage] = {}  # one FileImage per image file, shared by its questions
    unannotated: list[str] = []
    for index, record in enumerate(questions):
        where = f"{questions_path}: questions[{index}]"
        _require(record, where, ("image_id", "question", "question_id"))
        question_id = _id(record["question_id"], f"{where}.question_id")
        where = f"{questions_path}: question_id {question_id} (questions[{index}])"
        if question_id in seen:
            raise UserError(
                f"{questions_path}: duplicate question_id {question_id} (questions[{seen[question_id]}] and "
                f"questions[{index}]); question ids must be unique within a split"
            )
        seen[question_id] = index
        image_id = _id(record["image_id"], f"{where}.image_id")
        question = record["question"]
        if not isinstance(question, str):
            raise UserError(f"{where}: question must be a string, found {type(question).__name__}")

        annotation = by_question.get(question_id)
        if annotation is None:
            unannotated.append(question_id)
            continue
        ann_index, ann = annotation
        ann_image_id = ann.get("image_id")
        if ann_image_id is not None and str(ann_image_id) != image_id:
            raise UserError(
                f"{annotations_path}: question_id {question_id} has image_id {ann_image_id!r} but "
                f"{questions_path} says {record['image_id']!r}; the two files are from different splits or versions"
            )

        file_name = _image_file(split.image_file, record, where)
        image = image_refs.get(file_name)
        if image is None:
            image = image_refs[file_name] = FileImage(images_dir / file_name)

        metadata = {key: ann[key] for key in METADATA_KEYS if key in ann}
        examples.append(
            Example(
                id=question_id,
                image_id=image_id,
                image=image,
                fields={"question": question},
                answers=_answers(ann, f"{annotations_path}: annotations[{ann_index}] (question_id {question_id})"),
                metadata=metadata,
            )
        )

    if unannotated:
        raise UserError(
            f"{annotations_path}: no annotation for question_id {unannotated[0]} "
            f"({len(unannotated)} of {len(questions)} questions in {questions_path.name} have none); "
            "the questions and annotations files must be from the same split"
        )
    _check_images_exist(images_dir, list(image_refs), split.image_file)
    return ExampleSet(name=name, source=str(root), examples=examples)


def _read_records(path: Path, key: str, root: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(
            f"{path.name} not found in the data folder {root} (--data); download it into that folder "
            f"or fix the task's sources.vqa_json file names"
        )
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno} ({error.msg}); re-download the file"
        ) from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason}); re-download the file") from None
    if not isinstance(data, dict) or key not in data:
        found = f"keys {', '.join(map(repr, list(data)[:5]))}" if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: missing top-level key {key!r} (found {found}); is this the right file?")
    records = data[key]
    if not isinstance(records, list):
        raise UserError(f"{path}: {key!r} must be a list, found {type(records).__name__}")
    return records


def _index_annotations(annotations: list[Any], path: Path) -> dict[str, tuple[int, dict[str, Any]]]:
    by_question: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, ann in enumerate(annotations):
        where = f"{path}: annotations[{index}]"
        _require(ann, where, ("question_id", "answers"))
        question_id = _id(ann["question_id"], f"{where}.question_id")
        if question_id in by_question:
            raise UserError(
                f"{path}: duplicate question_id {question_id} (annotations[{by_question[question_id][0]}] and "
                f"annotations[{index}]); each question must have one annotation"
            )
        by_question[question_id] = (index, ann)
    return by_question


def _require(record: Any, where: str, keys: tuple[str, ...]) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected an object, found {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise UserError(f"{where}: missing key {key!r} (found: {', '.join(record) or 'none'})")


def _id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, _ID_TYPES):
        raise UserError(f"{where}: expected an int or string id, found {type(value).__name__} {value!r}")
    return str(value)


def _answers(ann: dict[str, Any], where: str) -> tuple[str, ...]:
    answers = ann["answers"]
    if not isinstance(answers, list):
        raise UserError(f"{where}: 'answers' must be a list, found {type(answers).__name__}")
    for i, answer in enumerate(answers):
        if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
            raise UserError(f"{where}: answers[{i}] must be an object with a string 'answer'")
    if answers and all("answer_id" in answer for answer in answers):
        try:
            answers = sorted(answers, key=lambda answer: answer["answer_id"])
        except TypeError:
            raise UserError(f"{where}: answer_id values are of mixed types; they must all be ints") from None
    return tuple(answer["answer"] for answer in answers)


def _image_file(pattern: str, record: dict[str, Any], where: str) -> str:
    try:
        return pattern.format(**record)
    except KeyError as error:
        raise UserError(
            f"{where}: the task's image_file {pattern!r} uses key {error.args[0]!r}, which the question "
            f"record does not have (it has: {', '.join(record)}); fix image_file in the task"
        ) from None
    except IndexError:
        raise UserError(
            f"{where}: the task's image_file {pattern!r} has a positional field {{}}; name a record key, "
            "e.g. {image_id}"
        ) from None
    except ValueError as error:
        raise UserError(
            f"{where}: the task's image_file {pattern!r} cannot format this record's values "
            f"(image_id {record.get('image_id')!r}): {error}; e.g. use {{image_id}} for string ids"
        ) from None


def _check_images_exist(images_dir: Path, file_names: list[str], pattern: str) -> None:
    """One directory listing per folder instead of a stat per image (COCO val has 40k files)."""
    listings: dict[Path, set[str]] = {}
    missing: list[str] = []
    for file_name in file_names:
        path = images_dir / file_name
        folder = path.parent
        names = listings.get(folder)
        if names is None:
            try:
                names = listings[folder] = set(os.listdir(folder))
            except OSError:
                names = listings[folder] = set()
        if path.name not in names:
            missing.append(file_name)
    if missing:
        raise UserError(
            f"image not found: {images_dir / missing[0]} ({len(missing)} of {len(file_names)} images missing); "
            f"check the data folder (--data) and the task's image_file pattern {pattern!r}"
        )
