"""FairFace's label CSVs and image folders, built in tmp_path; and the tasks' Hugging Face source
(HuggingFaceM4/FairFace columns plus an added id) from a save_to_disk folder."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import FileImage
from idefics_eval.formats import load_split
from idefics_eval.formats.fairface_csv import load_fairface_csv
from idefics_eval.metrics import get_metric
from idefics_eval.predictions import Prediction
from idefics_eval.tasks import load_task

RACES = "East Asian,Indian,Black,White,Middle Eastern,Latino_Hispanic,Southeast Asian"
FILES = {"labels": "fairface_label_val.csv", "attribute": "race", "classes": RACES}
ROWS = [
    "file,age,gender,race,service_test",
    "val/1.jpg,3-9,Male,East Asian,False",
    "val/2.jpg,50-59,Female,Latino_Hispanic,True",
    "val/10.jpg,more than 70,Female,White,False",
]


def write_fairface(root: Path, rows: list[str] = ROWS, images: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / FILES["labels"]).write_text("\n".join(rows) + "\n")
    if images:
        (root / "val").mkdir(exist_ok=True)
        for name in ("1", "2", "10"):
            Image.new("RGB", (4, 4), (9, 9, 9)).save(root / "val" / f"{name}.jpg")


def message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_rows_become_examples_with_the_label_and_all_three_attributes(tmp_path):
    write_fairface(tmp_path)
    loaded = load_fairface_csv(tmp_path, FILES, "fairface_race/validation")
    assert loaded.source == str(tmp_path.resolve())
    assert [e.id for e in loaded.examples] == ["val/1", "val/2", "val/10"]
    first, second, third = loaded.examples
    assert (first.image_id, first.label, first.answers) == ("val/1", 0, ("East Asian",))
    assert (second.label, third.label) == (5, 3)
    assert second.metadata == {"gender": "Female", "race": "Latino_Hispanic", "age": "50-59", "service_test": True}
    assert third.image == FileImage(tmp_path.resolve() / "val" / "10.jpg") and third.fields == {}
    assert third.image.load().size == (4, 4)


def test_the_attribute_picks_the_label_and_images_may_lie_in_a_subfolder(tmp_path):
    write_fairface(tmp_path / "faces")
    (tmp_path / FILES["labels"]).write_text((tmp_path / "faces" / FILES["labels"]).read_text())
    files = {"labels": FILES["labels"], "attribute": "age", "images": "faces",
             "classes": "0-2,3-9,10-19,20-29,30-39,40-49,50-59,60-69,more than 70"}
    loaded = load_fairface_csv(tmp_path, files, "fairface_age/validation")
    assert [e.label for e in loaded.examples] == [1, 6, 8]
    assert loaded.examples[2].answers == ("more than 70",)
    assert loaded.examples[0].image.path == tmp_path.resolve() / "faces" / "val" / "1.jpg"


@pytest.mark.parametrize("task", ["fairface_gender", "fairface_race", "fairface_age"])
def test_the_tasks_read_the_layout_through_load_split(tmp_path, task):
    write_fairface(tmp_path)
    spec = load_task(task)
    loaded = load_split(spec, "validation", str(tmp_path))
    attribute = task.removeprefix("fairface_")
    assert [e.answers[0] for e in loaded.examples] == [row.split(",")[{"age": 1, "gender": 2, "race": 3}[attribute]] for row in ROWS[1:]]
    assert len(spec.candidates.classes) == {"gender": 2, "race": 7, "age": 9}[attribute]
    worded = {"gender": ["male", "female", "female"], "race": ["East Asian", "Latino or Hispanic", "White"],
              "age": ["3 to 9 years old", "50 to 59 years old", "more than 70 years old"]}[attribute]
    assert [spec.candidates.classes[e.label] for e in loaded.examples] == worded  # the label picks the worded class


def test_missing_csv(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_fairface_csv(tmp_path, FILES, "fairface_race/validation")
    assert "fairface_label_val.csv not found" in message(excinfo) and str(tmp_path) in message(excinfo)


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        (["file,age,race", "val/1.jpg,3-9,White"], r"no column 'gender' \(header: file, age, race\)"),
        (ROWS[:2] + ["val/2.jpg,50-59,Female,Latino,True"],
         r"line 3 \(val/2\.jpg\): race 'Latino' is not one of the task's classes"),
        (ROWS[:2] + ["val/2.jpg,50-59,Female"], r"line 3: expected 5 comma-separated values"),
        (ROWS[:2] + ["val/2.jpg,50-59,Female,White,True,extra"], r"line 3: expected 5 comma-separated values"),
        (ROWS + ["val/1.jpg,3-9,Male,White,False"], r"val/1\.jpg is listed twice \(lines 2 and 5\)"),
        (ROWS[:2] + [",50-59,Female,White,True"], r"line 3: empty 'file'"),
        (ROWS[:2] + ["val/2.jpg,,Female,White,True"], r"line 3 \(val/2\.jpg\): empty 'age'"),
        (ROWS[:1], r"no rows under the header"),
    ],
)
def test_wrong_rows_name_file_line_and_column(tmp_path, rows, pattern):
    write_fairface(tmp_path, rows)
    with pytest.raises(UserError) as excinfo:
        load_fairface_csv(tmp_path, FILES, "fairface_race/validation")
    assert FILES["labels"] in message(excinfo)
    with pytest.raises(UserError, match=pattern):
        load_fairface_csv(tmp_path, FILES, "fairface_race/validation")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"attribute": "hair"}, r"attribute 'hair': use one of gender, race, age"),
        ({"classes": "White"}, r"classes 'White': give the race values"),
        ({"classes": "White,White"}, r"a class is named twice"),
    ],
)
def test_wrong_task_keys(tmp_path, change, pattern):
    write_fairface(tmp_path)
    with pytest.raises(UserError, match=pattern):
        load_fairface_csv(tmp_path, FILES | change, "fairface_race/validation")


def test_missing_image_folder_and_missing_image(tmp_path):
    write_fairface(tmp_path, images=False)
    with pytest.raises(UserError, match=r"image folder 'faces' not found.*sources\.fairface_csv"):
        load_fairface_csv(tmp_path, FILES | {"images": "faces"}, "fairface_race/validation")
    (tmp_path / "val").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "val" / "1.jpg")
    with pytest.raises(UserError) as excinfo:
        load_fairface_csv(tmp_path, FILES, "fairface_race/validation")
    text = message(excinfo)
    assert "image not found" in text and "val/2.jpg" in text and "2 of 3" in text


def test_the_huggingface_source_reads_a_saved_copy_with_an_added_id(tmp_path, monkeypatch):
    """HuggingFaceM4/FairFace: ClassLabel integers for age, gender and race, no id column (add one).
    The metric names the groups from those integers."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    names = {"age": ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"],
             "gender": ["Male", "Female"], "race": RACES.split(",")}
    features = datasets.Features({"image": datasets.Image(), "age": datasets.ClassLabel(names=names["age"]),
                                  "gender": datasets.ClassLabel(names=names["gender"]),
                                  "race": datasets.ClassLabel(names=names["race"]), "service_test": datasets.Value("bool")})
    rows = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 4)) for _ in range(3)], "age": [1, 6, 8], "gender": [0, 1, 1],
         "race": [0, 5, 3], "service_test": [False, True, False]}, features=features)
    rows = rows.add_column("id", list(range(len(rows))))
    folder = tmp_path / "fairface-hf"
    datasets.DatasetDict({"train": rows, "validation": rows}).save_to_disk(str(folder))
    spec = load_task("fairface_race")
    loaded = load_split(spec, "validation", str(folder))
    assert [(e.id, e.label) for e in loaded.examples] == [("0", 0), ("1", 5), ("2", 3)]
    predictions = [Prediction(e.id, "", (), None, ranking=(0, 1, 2, 3, 4, 5, 6)) for e in loaded.examples]
    metrics = get_metric("fairface_accuracy").aggregate(predictions, loaded.examples)
    assert metrics["accuracy/race=East Asian"] == 100.0 and metrics["accuracy/race=White"] == 0.0
    assert metrics["accuracy/gender=Male"] == 100.0 and metrics["accuracy/age=more than 70"] == 0.0
