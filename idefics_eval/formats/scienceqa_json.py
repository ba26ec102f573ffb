"""The ScienceQA release layout (lupantech/ScienceQA): problems.json, pid_splits.json and the images.

    problems.json:   {pid: {"question": str, "choices": [str, ...], "answer": index into choices,
                            "hint": str, "image": "image.png" | null, "split": "train" | "val" | "test",
                            "subject", "topic", "category", "skill", "grade", "task", "lecture", "solution"}}
    pid_splits.json: {"train": [pid, ...], "val": [...], "test": [...], "trainval", "minitrain", ...}
    images:          images/{split}/{pid}/image.png (tools/download.sh unzips train/val/test.zip there)

A task gives, per split: `problems`, `pid_splits`, `split` (the pid_splits key, e.g. "test") and
`images` (the folder holding the per-split image folders). Only problems with an image are kept:
the protocol scores the test questions that have one.

Each problem becomes one `Example`: `candidates` are its choices (the protocol ranks the question's
own choices), `label` its answer index, `answers` the correct choice, `metadata` its subject,
topic, category and grade. `fields["context"]` renders the problem in ScienceQA's own "QCM" input
format (the official code's models/base_prompt.py):

    Question: {question}\\nContext: {hint, or N/A}\\nOptions: (A) {choice} (B) {choice}\\n

so that `<image>{context}Answer: The best answer is {class_name}.` reads like the paper's prompts,
and the candidate choice text follows "The best answer is". `fields` also hold `question` and `hint`.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..examples import Example, ExampleSet, FileImage
from . import FileFormat, register
from ._files import check_files_exist, data_file, data_root, image_folder, read_json, require, typed

FORMAT = "scienceqa_json"
METADATA_KEYS = ("subject", "topic", "category", "grade")


def qcm_context(question: str, hint: str, choices: list[str] | tuple[str, ...]) -> str:
    """A problem in ScienceQA's QCM input format, ending with a newline before the answer cue."""
    options = " ".join(f"({letter}) {choice}" for letter, choice in zip(string.ascii_uppercase, choices))
    return f"Question: {question}\nContext: {hint or 'N/A'}\nOptions: {options}\n"


def load_scienceqa_json(root: Path, files: Mapping[str, str], name: str) -> ExampleSet:
    root = data_root(root)
    problems_path = data_file(root, files["problems"], FORMAT)
    splits_path = data_file(root, files["pid_splits"], FORMAT)
    problems = read_json(problems_path)
    if not isinstance(problems, dict):
        raise UserError(f"{problems_path}: expected an object of problems by pid, found {type(problems).__name__}")
    splits = read_json(splits_path)
    split = files["split"]
    if not isinstance(splits, dict) or split not in splits:
        found = ", ".join(map(repr, splits)) if isinstance(splits, dict) else type(splits).__name__
        raise UserError(f"{splits_path}: no split {split!r} (found: {found}); fix the task's split key")
    pids = typed(splits[split], list, str(splits_path), split)
    images_dir = image_folder(
        root, files["images"], FORMAT, fix="unzip the release's train/val/test image archives there"
    )

    examples: list[Example] = []
    seen: set[str] = set()
    for index, pid in enumerate(pids):
        pid = str(pid)
        if pid not in problems:
            raise UserError(f"{splits_path}: {split}[{index}] is pid {pid}, which {problems_path.name} does not have")
        if pid in seen:
            raise UserError(f"{splits_path}: pid {pid} appears twice in {split!r}")
        seen.add(pid)
        where = f"{problems_path}: problem {pid}"
        problem = require(problems[pid], where, ("question", "choices", "answer", "hint", "image"))
        if problem["image"] is None:
            continue  # a text-only problem: not part of the protocol's image questions
        image = typed(problem["image"], str, where, "image")
        question = typed(problem["question"], str, where, "question")
        hint = typed(problem["hint"] or "", str, where, "hint")
        choices = typed(problem["choices"], list, where, "choices")
        if len(choices) < 2 or not all(isinstance(choice, str) for choice in choices):
            raise UserError(f"{where}: 'choices' must be a list of at least two strings, found {choices!r}")
        if len(choices) > len(string.ascii_uppercase):
            raise UserError(f"{where}: {len(choices)} choices; at most {len(string.ascii_uppercase)} can be lettered")
        answer = typed(problem["answer"], int, where, "answer")
        if not 0 <= answer < len(choices):
            raise UserError(f"{where}: 'answer' {answer} is not an index into its {len(choices)} choices")
        folder = typed(problem.get("split", split), str, where, "split")  # images live under the problem's own split
        examples.append(
            Example(
                id=pid,
                image_id=pid,
                image=FileImage(images_dir / folder / pid / image),
                fields={"context": qcm_context(question, hint, choices), "question": question, "hint": hint},
                answers=(choices[answer],),
                metadata=_metadata(problem),
                candidates=tuple(choices),
                label=answer,
            )
        )
    if not examples:
        raise UserError(f"{splits_path}: split {split!r} has no problem with an image ({len(pids)} problems in all)")
    check_files_exist(
        (example.image.path for example in examples), "images",
        f"images are read from {images_dir}/<split>/<pid>/; check the data folder (--data) and the task's `images` key",
    )
    return ExampleSet(name=name, source=str(root), examples=examples)


def _metadata(problem: dict[str, Any]) -> dict[str, Any]:
    return {key: problem[key] for key in METADATA_KEYS if isinstance(problem.get(key), str)}


register(
    FileFormat(
        FORMAT, ("problems", "pid_splits", "split", "images"), ("problems", "pid_splits"), load_scienceqa_json
    )
)
