"""The ScienceQA release layout, built in tmp_path: problems.json, pid_splits.json, images/<split>/<pid>/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import file_formats
from idefics_eval.formats.scienceqa_json import load_scienceqa_json, qcm_context

FILES = {"problems": "problems.json", "pid_splits": "pid_splits.json", "split": "test", "images": "images"}


def problem(question: str, choices: list[str], answer: int, hint: str, image: str | None, split: str = "test") -> dict:
    return {
        "question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
        "task": "closed choice", "grade": "grade4", "subject": "natural science", "topic": "geography",
        "category": "Geography", "skill": "Read a map: cardinal directions", "lecture": "Maps have four cardinal directions.",
        "solution": "To find the answer, look at the compass rose.", "split": split,
    }


PROBLEMS = {
    "4": problem("Which of these states is farthest north?", ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], 0, "", "image.png"),
    "5": problem("Identify the question that Tom's experiment can best answer.", ["Do ping pong balls stop rolling?", "Do balls roll?"],
                 1, "The passage below describes an experiment.\n\nTom placed a ball on a ramp.", "image.png"),
    "6": problem("Which word would you find on a dictionary page?", ["dog", "cat"], 0, "", None),  # text only
    "11": problem("What is the capital of Utah?", ["Salt Lake City", "Denver", "Provo"], 0, "", "image.png", split="train"),
}
SPLITS = {"train": ["11"], "val": [], "test": ["4", "5", "6"], "minitest": ["5"]}


def write_scienceqa(root: Path, problems: dict = PROBLEMS, splits: dict = SPLITS) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps(splits))
    for pid, record in problems.items():
        if record["image"]:
            folder = root / "images" / record["split"] / pid
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (3, 2), (int(pid), 0, 0)).save(folder / record["image"])


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def load(root: Path, **changes):
    return load_scienceqa_json(root, {**FILES, **changes}, "scienceqa/test")


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_loads_image_problems_with_choices_as_candidates(tmp_path):
    write_scienceqa(tmp_path)
    loaded = load(tmp_path)
    assert [e.id for e in loaded.examples] == ["4", "5"]  # pid_splits order; the text-only problem 6 is left out
    first, second = loaded.examples
    assert first.image_id == "4"
    assert first.image == FileImage(tmp_path.resolve() / "images" / "test" / "4" / "image.png")
    assert first.candidates == ("West Virginia", "Louisiana", "Arizona", "Oklahoma")
    assert (first.label, first.answers) == (0, ("West Virginia",))
    assert first.metadata == {"subject": "natural science", "topic": "geography", "category": "Geography", "grade": "grade4"}
    assert first.fields["context"] == (
        "Question: Which of these states is farthest north?\nContext: N/A\n"
        "Options: (A) West Virginia (B) Louisiana (C) Arizona (D) Oklahoma\n"
    )
    assert second.fields["context"] == (
        "Question: Identify the question that Tom's experiment can best answer.\n"
        "Context: The passage below describes an experiment.\n\nTom placed a ball on a ramp.\n"
        "Options: (A) Do ping pong balls stop rolling? (B) Do balls roll?\n"
    )
    assert second.fields["question"].startswith("Identify") and second.fields["hint"].startswith("The passage")
    assert (second.label, second.answers) == (1, ("Do balls roll?",))
    assert second.image.load().getpixel((0, 0)) == (5, 0, 0)


def test_other_pid_split_keys_find_images_under_each_problems_own_split(tmp_path):
    write_scienceqa(tmp_path, splits=dict(SPLITS, trainval=["11", "4"]))
    loaded = load(tmp_path, split="trainval")
    assert [e.image.path.parent.parent.name for e in loaded.examples] == ["train", "test"]


def test_qcm_context_letters_the_choices():
    assert qcm_context("Q?", "", ("a", "b", "c")) == "Question: Q?\nContext: N/A\nOptions: (A) a (B) b (C) c\n"


def test_registered_with_its_task_file_keys():
    registered = file_formats()["scienceqa_json"]
    assert registered.keys == ("problems", "pid_splits", "split", "images")
    assert registered.markers == ("problems", "pid_splits")


@pytest.mark.parametrize("which", ["problems.json", "pid_splits.json"])
def test_missing_file_names_it_and_the_data_folder(tmp_path, which):
    write_scienceqa(tmp_path)
    (tmp_path / which).unlink()
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert f"{which} not found" in text and str(tmp_path) in text and "--data" in text


def test_invalid_json_names_file_and_line(tmp_path):
    write_scienceqa(tmp_path)
    (tmp_path / "problems.json").write_text('{\n"4": }')
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert "problems.json" in text and "invalid JSON" in text and "line 2" in text


def test_unknown_split_key_lists_the_splits(tmp_path):
    write_scienceqa(tmp_path)
    with pytest.raises(UserError) as excinfo:
        load(tmp_path, split="testing")
    text = message(excinfo)
    assert "pid_splits.json: no split 'testing'" in text and "'test'" in text


def test_problems_must_be_an_object(tmp_path):
    write_scienceqa(tmp_path)
    (tmp_path / "problems.json").write_text("[]")
    with pytest.raises(UserError, match=r"problems\.json: expected an object of problems by pid"):
        load(tmp_path)


def test_pid_missing_from_problems(tmp_path):
    write_scienceqa(tmp_path, splits=dict(SPLITS, test=["4", "99"]))
    with pytest.raises(UserError, match=r"pid_splits\.json: test\[1\] is pid 99, which problems\.json does not have"):
        load(tmp_path)


def test_duplicate_pid_in_a_split(tmp_path):
    write_scienceqa(tmp_path, splits=dict(SPLITS, test=["4", "4"]))
    with pytest.raises(UserError, match=r"pid 4 appears twice in 'test'"):
        load(tmp_path)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda p: p["5"].pop("choices"), r"problem 5: missing key 'choices'"),
        (lambda p: p["5"].pop("image"), r"problem 5: missing key 'image'"),
        (lambda p: p["5"].update(answer=2), r"problem 5: 'answer' 2 is not an index into its 2 choices"),
        (lambda p: p["5"].update(answer="1"), r"problem 5: 'answer' must be int"),
        (lambda p: p["5"].update(choices=["only one"]), r"problem 5: 'choices' must be a list of at least two strings"),
        (lambda p: p["5"].update(choices=["a", 3]), r"problem 5: 'choices' must be a list of at least two strings"),
        (lambda p: p["5"].update(question=None), r"problem 5: 'question' must be str"),
        (lambda p: p.update({"5": "a string"}), r"problem 5: expected an object"),
    ],
)
def test_schema_errors_name_the_file_problem_and_key(tmp_path, change, expected):
    write_scienceqa(tmp_path)
    rewrite(tmp_path / "problems.json", change)
    with pytest.raises(UserError, match=expected) as excinfo:
        load(tmp_path)
    assert "problems.json" in message(excinfo)


def test_missing_image_names_it_and_counts(tmp_path):
    write_scienceqa(tmp_path)
    (tmp_path / "images" / "test" / "5" / "image.png").unlink()
    with pytest.raises(UserError) as excinfo:
        load(tmp_path)
    text = message(excinfo)
    assert str(Path("images") / "test" / "5" / "image.png") in text and "1 of 2 images missing" in text


def test_missing_image_folder(tmp_path):
    write_scienceqa(tmp_path)
    with pytest.raises(UserError, match=r"image folder 'pictures' not found in the data folder"):
        load(tmp_path, images="pictures")


def test_split_without_image_problems(tmp_path):
    write_scienceqa(tmp_path, splits=dict(SPLITS, test=["6"]))
    with pytest.raises(UserError, match=r"split 'test' has no problem with an image \(1 problems in all\)"):
        load(tmp_path)
