"""The official VQA v2 JSON layout (also used by OK-VQA, TextVQA and VizWiz).

A split is a questions file, an annotations file and an image folder, all under one data folder:

    questions:   {"questions": [{"image_id", "question", "question_id"}, ...]}
    annotations: {"annotations": [{"question_id", "image_id", "answers": [{"answer", "answer_id", ...}],
                                   "multiple_choice_answer", "answer_type", "question_type"}, ...]}

VizWiz has string image ids and no `answer_id`; both int and str ids are accepted. A test split
(VQAv2 test-dev, VizWiz test) has a questions file only: its examples have no answers. Images are only
referenced (`FileImage`), never decoded here; one cheap pass checks that every referenced file exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from ..tasks import VqaJsonSplit
from ._files import (
    check_files_exist, data_file, data_root, identifier, image_folder, read_object, records, require, typed,
)

FORMAT = "vqa_json"
METADATA_KEYS = ("answer_type", "question_type", "multiple_choice_answer")


def load_vqa_json(root: Path, split: VqaJsonSplit, name: str) -> ExampleSet:
    """Load one split: `root` is the --data folder, `split` the task's file names for this split."""
    root = data_root(root)
    questions_path = data_file(root, split.questions, FORMAT)
    questions = records(read_object(questions_path, "questions"), "questions", questions_path)
    by_question, annotations_path = None, None
    if split.annotations is not None:
        annotations_path = data_file(root, split.annotations, FORMAT)
        annotations = records(read_object(annotations_path, "annotations"), "annotations", annotations_path)
        by_question = _index_annotations(annotations, annotations_path)
    images_dir = image_folder(root, split.images, FORMAT)

    examples: list[Example] = []
    seen: dict[str, int] = {}
    image_refs: dict[str, FileImage] = {}  # one FileImage per image file, shared by its questions
    unannotated: list[str] = []
    for index, record in enumerate(questions):
        where = f"{questions_path}: questions[{index}]"
        require(record, where, ("image_id", "question", "question_id"))
        question_id = identifier(record["question_id"], f"{where}.question_id")
        where = f"{questions_path}: question_id {question_id} (questions[{index}])"
        if question_id in seen:
            raise UserError(
                f"{questions_path}: duplicate question_id {question_id} (questions[{seen[question_id]}] and "
                f"questions[{index}]); question ids must be unique within a split"
            )
        seen[question_id] = index
        image_id = identifier(record["image_id"], f"{where}.image_id")
        question = typed(record["question"], str, where, "question")

        ann_index, ann = -1, {"answers": []}  # a test split: no annotations file
        if by_question is not None:
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
    check_files_exist(
        (images_dir / file_name for file_name in image_refs), "images",
        f"check the data folder (--data) and the task's image_file pattern {split.image_file!r}",
    )
    return ExampleSet(name=name, source=str(root), examples=examples)


def _index_annotations(annotations: list[Any], path: Path) -> dict[str, tuple[int, dict[str, Any]]]:
    by_question: dict[str, tuple[int, dict[str, Any]]] = {}
    for index, ann in enumerate(annotations):
        where = f"{path}: annotations[{index}]"
        require(ann, where, ("question_id", "answers"))
        question_id = identifier(ann["question_id"], f"{where}.question_id")
        if question_id in by_question:
            raise UserError(
                f"{path}: duplicate question_id {question_id} (annotations[{by_question[question_id][0]}] and "
                f"annotations[{index}]); each question must have one annotation"
            )
        by_question[question_id] = (index, ann)
    return by_question


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
